"""Builds the ``data`` of simulated interactions from what the bot registered or sent.

Slash command options are typed from the registered command schema; component interactions
from the message's components; modal submits mirror the modal the bot showed. Inputs a real
Discord client would refuse (missing required options, values outside choices or ranges,
disabled buttons, unknown select options, missing required text inputs) raise ``ValueError``
so tests cannot accidentally exercise impossible paths.
"""

from __future__ import annotations

from typing import Any

from .discord_models import GuildSpec, OptionType, Perm
from .discord_world import World

SELECT_TYPES = (3, 5, 6, 7, 8)  # string, user, role, mentionable, channel selects
NESTING_TYPES = (OptionType.SUB_COMMAND, OptionType.SUB_COMMAND_GROUP)


def check_can_use(
    world: World, guild: GuildSpec, channel_id: int, user_id: int, command: dict[str, Any]
) -> None:
    """Raise PermissionError where Discord would not even show ``command`` to the user."""
    channel = world.guild_channel(guild, channel_id)
    needed = Perm.VIEW_CHANNEL | Perm.USE_APPLICATION_COMMANDS
    if world.channel_permissions(guild, channel, user_id) & needed != needed:
        raise PermissionError(f"user {user_id} cannot use commands in channel {channel_id}")
    required = command.get("default_member_permissions")
    if required is not None and world.base_permissions(guild, user_id) & int(required) != int(
        required
    ):
        raise PermissionError(
            f"Discord hides /{command['name']} from user {user_id} "
            f"(default_member_permissions={required}); pass enforce_permissions=False "
            "to simulate an admin override"
        )


def command_leaf(
    command: dict[str, Any], group: str | None, subcommand: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The option schema of the invoked (sub)command and the wrapper options leading to it."""
    options = command.get("options") or []
    path: list[dict[str, Any]] = []
    for wanted, kind in (
        (group, OptionType.SUB_COMMAND_GROUP),
        (subcommand, OptionType.SUB_COMMAND),
    ):
        if wanted is None:
            continue
        node = next((o for o in options if o["name"] == wanted and o["type"] == kind), None)
        if node is None:
            raise LookupError(f"/{command['name']} has no subcommand or group {wanted!r}")
        path.append({"type": kind, "name": wanted})
        options = node.get("options") or []
    if any(o["type"] in NESTING_TYPES for o in options):
        raise ValueError(f"/{command['name']} needs a subcommand (and group) to be invoked")
    return options, path


def nest_options(
    path: list[dict[str, Any]], leaf_options: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Wrap the leaf options in their subcommand group/subcommand options."""
    options = leaf_options
    for wrapper in reversed(path):
        options = [{**wrapper, "options": options}]
    return options


def build_options(
    world: World,
    schema: list[dict[str, Any]],
    given: dict[str, Any],
    *,
    guild: GuildSpec,
    channel_id: int,
    resolved: dict[str, Any],
    focused: str | None = None,
) -> list[dict[str, Any]]:
    """Typed interaction options for ``given`` values; ``resolved`` collects referenced objects.

    With ``focused`` (autocomplete) that option's value is passed through unchecked and
    required options may be missing, as in Discord's autocomplete interactions."""
    by_name = {o["name"]: o for o in schema}
    unknown_names = set(given) - set(by_name)
    if unknown_names:
        raise ValueError(f"unknown options {sorted(unknown_names)}; schema has {list(by_name)}")
    built = []
    for option in schema:
        name = option["name"]
        if name not in given:
            if option.get("required") and focused is None:
                raise ValueError(f"required option {name!r} missing")
            continue
        entry: dict[str, Any] = {"name": name, "type": option["type"]}
        if name == focused:
            entry.update(value=str(given[name]), focused=True)
        else:
            entry["value"] = option_value(
                world, option, given[name], guild=guild, channel_id=channel_id, resolved=resolved
            )
        built.append(entry)
    return built


def option_value(
    world: World,
    option: dict[str, Any],
    value: Any,
    *,
    guild: GuildSpec,
    channel_id: int,
    resolved: dict[str, Any],
) -> Any:
    """The wire value of one option, checked against the schema like Discord's client does."""
    kind, name = option["type"], option["name"]
    if kind == OptionType.BOOLEAN:
        return bool(value)
    if kind in (OptionType.STRING, OptionType.INTEGER, OptionType.NUMBER):
        return _scalar_value(option, value)
    if kind == OptionType.ATTACHMENT:
        return str(world.resolve_attachment(channel_id, value, resolved).id)
    snowflake = int(value)
    if kind == OptionType.USER:
        world.resolve_user(guild, channel_id, snowflake, resolved)
    elif kind == OptionType.ROLE:
        world.resolve_role(guild, snowflake, resolved)
    elif kind == OptionType.MENTIONABLE:
        if guild.role(snowflake) is not None:
            world.resolve_role(guild, snowflake, resolved)
        else:
            world.resolve_user(guild, channel_id, snowflake, resolved)
    elif kind == OptionType.CHANNEL:
        channel = world.resolve_channel(guild, snowflake, resolved)
        allowed_types = option.get("channel_types")
        if allowed_types and channel.type not in allowed_types:
            raise ValueError(f"option {name!r}: channel type {channel.type} is not allowed")
    else:
        raise ValueError(f"option {name!r}: unsupported option type {kind}")
    return str(snowflake)


def _scalar_value(option: dict[str, Any], value: Any) -> Any:
    kind, name = option["type"], option["name"]
    if kind == OptionType.STRING:
        value = str(value)
        if not option.get("min_length", 0) <= len(value) <= option.get("max_length", 6000):
            raise ValueError(f"option {name!r}: length {len(value)} outside min/max_length")
    elif kind == OptionType.INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"option {name!r} expects an int, got {value!r}")
    else:
        value = float(value)
    choices = option.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise ValueError(f"option {name!r}: {value!r} is not one of the choices")
    low, high = option.get("min_value"), option.get("max_value")
    if kind != OptionType.STRING and (
        (low is not None and value < low) or (high is not None and value > high)
    ):
        raise ValueError(f"option {name!r}: {value!r} outside [{low}, {high}]")
    return value


def select_data(
    world: World,
    component: dict[str, Any],
    values: list[str],
    *,
    guild: GuildSpec,
    channel_id: int,
) -> dict[str, Any]:
    """``values`` (and ``resolved``) for choosing ``values`` in a select menu component."""
    custom_id = component.get("custom_id")
    low, high = component.get("min_values", 1), component.get("max_values", 1)
    if not low <= len(values) <= high:
        raise ValueError(f"select {custom_id!r} takes {low}..{high} values, got {len(values)}")
    kind = component["type"]
    data: dict[str, Any] = {"values": [str(v) for v in values]}
    if kind == 3:
        offered = {o["value"] for o in component.get("options", [])}
        missing = [v for v in data["values"] if v not in offered]
        if missing:
            raise ValueError(f"select {custom_id!r} offers no {missing}")
        return data
    resolved: dict[str, Any] = {}
    for value in data["values"]:
        snowflake = int(value)
        if kind == 6 or (kind == 7 and guild.role(snowflake) is not None):
            world.resolve_role(guild, snowflake, resolved)
        elif kind in (5, 7):
            world.resolve_user(guild, channel_id, snowflake, resolved)
        else:
            world.resolve_channel(guild, snowflake, resolved)
    data["resolved"] = resolved
    return data


def mirror_modal(components: list[dict[str, Any]], values: dict[str, Any]) -> list[dict[str, Any]]:
    """The MODAL_SUBMIT component tree for a modal's layout (action rows or labels).

    Consumes the entries of ``values`` it uses, so leftovers are unknown inputs."""
    mirrored: list[dict[str, Any]] = []
    for component in components:
        kind = component.get("type")
        if kind == 1:
            children = mirror_modal(component.get("components", []), values)
            mirrored.append({"type": 1, "id": component.get("id"), "components": children})
        elif kind == 18:
            inner = mirror_modal([component["component"]], values)
            if inner:
                mirrored.append({"type": 18, "id": component.get("id"), "component": inner[0]})
        elif "custom_id" in component:
            mirrored.append(_submitted_value(component, values))
    return mirrored


def _submitted_value(component: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    custom_id = component["custom_id"]
    entry: dict[str, Any] = {
        "type": component["type"],
        "id": component.get("id"),
        "custom_id": custom_id,
    }
    provided = custom_id in values
    value = values.pop(custom_id, None)
    if component["type"] == 4:  # text input
        text = "" if value is None else str(value)
        if component.get("required", True) and not text:
            raise ValueError(f"text input {custom_id!r} is required")
        low, high = component.get("min_length", 0), component.get("max_length", 4000)
        if text and not low <= len(text) <= high:
            raise ValueError(f"text input {custom_id!r}: length {len(text)} outside {low}..{high}")
        entry["value"] = text
    elif isinstance(value, list) or (not provided and component["type"] in SELECT_TYPES):
        entry["values"] = [str(v) for v in value or []]
    else:
        entry["value"] = value
    return entry
