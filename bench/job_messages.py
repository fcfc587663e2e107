"""Which Discord messages show a job's result, seen as the Discord double reports them.

Shared by the benches that drive the real bot, so they measure a job the same way whether the
bot shows it in one message (the interaction's response, edited to the result) or in several
(a status message, then a result message)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import defaultdict
from dataclasses import dataclass, field

from tests.doubles.discord_double import DiscordDouble, Event, InteractionRecord, MessageRecord

# The result view's buttons (cogs/results.py): every one names the job it belongs to.
RESULT_BUTTON = re.compile(r"pdj:(?:reroll|vary|info|delete):([0-9]+)")


def result_job_ids(message: MessageRecord) -> set[int]:
    """Jobs whose result `message` shows: result buttons naming them, and images attached.
    Private (ephemeral) messages are nobody else's result."""
    if message.ephemeral or message.deleted or not message.attachments:
        return set()
    found = set()
    for component in message.iter_components():
        match = RESULT_BUTTON.fullmatch(str(component.get("custom_id", "")))
        if match:
            found.add(int(match.group(1)))
    return found


@dataclass
class ResultWatch:
    """Every message that carried each job's result, seen at the moment it was created or
    edited (a message's record is mutated later, so it is read in the event, not after).

    `start` it before the load starts and `stop` it at the end; `complete` is set once
    `expected` jobs have shown a result."""

    expected: int
    first_seen: dict[int, float] = field(default_factory=dict)
    messages: defaultdict[int, set[int]] = field(default_factory=lambda: defaultdict(set))
    images: dict[int, int] = field(default_factory=dict)
    public_created: set[int] = field(default_factory=set)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    _watching: asyncio.Future[Event] | None = field(default=None, init=False, repr=False)

    def start(self, double: DiscordDouble, *, timeout: float) -> None:
        """Observe `double`'s events from now on, for `timeout` seconds at most."""
        self._watching = asyncio.ensure_future(double.wait_for(self.observe, timeout=timeout))

    async def stop(self) -> None:
        """Stop observing."""
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await self._watching
            self._watching = None

    def observe(self, event: Event) -> bool:
        """A `DiscordDouble.wait_for` predicate that records and never matches."""
        message = event.message
        if event.kind not in ("message_create", "message_update") or message is None:
            return False
        if event.kind == "message_create" and not message.ephemeral:
            self.public_created.add(message.id)
        for job_id in result_job_ids(message):
            self.first_seen.setdefault(job_id, event.at)
            self.messages[job_id].add(message.id)
            self.images[job_id] = len(message.attachments)
        if len(self.first_seen) >= self.expected:
            self.complete.set()
        return False


def private_text(record: InteractionRecord) -> str:
    """What the member was last told in reply (for a refusal's reason; never used to tell
    a refusal from a job)."""
    texts = [m.content for m in [record.original, *record.followups] if m and m.content]
    return (texts[-1] if texts else "<nothing>")[:80]
