"""The composition root the bot and the command line share: what it wires, how it stops."""

from __future__ import annotations

import asyncio
from dataclasses import fields, replace
from pathlib import Path

import pytest

from bot.config import Settings
from bot.generation.runner import JobRunner, RunnerSettings
from bot.services import build_services
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.presenter import RecordingPresenter


@pytest.fixture
def settings(api: FakePixelDojo, tmp_path: Path) -> Settings:
    return Settings(
        discord_token="",
        pixeldojo_api_key="test-key",
        pixeldojo_api_base=api.base_url,
        database_path=tmp_path / "bot.sqlite3",
    )


async def test_the_runner_gets_every_runner_setting(settings: Settings) -> None:
    # Whatever `Settings` and `RunnerSettings` share reaches the runner, for the bot and the
    # command line alike: there is no second wiring to forget one in.
    shared = {f.name for f in fields(RunnerSettings)} & {f.name for f in fields(Settings)}
    assert {"max_concurrent_submits", "max_concurrent_polls", "job_timeout"} <= shared
    defaults = RunnerSettings()
    changed = replace(settings, **{name: getattr(defaults, name) * 2 + 1 for name in shared})
    services = await build_services(changed, RecordingPresenter())
    try:
        for name in shared:
            assert getattr(services.runner.settings, name) == getattr(changed, name), name
    finally:
        await services.close()


class ClosingPresenter(RecordingPresenter):
    """A presenter with pending work of its own to stop, like the Discord one's edit queue."""

    def __init__(self) -> None:
        super().__init__()
        self.runner: JobRunner | None = None
        self.closed_while_accepting: list[bool] = []

    async def aclose(self) -> None:
        assert self.runner is not None
        self.closed_while_accepting.append(self.runner.accepting)


async def test_close_stops_the_work_before_storage_and_runs_once(settings: Settings) -> None:
    presenter = ClosingPresenter()
    services = await build_services(settings, presenter)
    presenter.runner = services.runner
    await services.start()
    seen: list[tuple[bool, bool, int]] = []

    async def before_storage() -> None:  # where the bot leaves Discord
        row = await services.db.fetchone("SELECT 1")
        seen.append((services.runner.accepting, services.pixeldojo.closed, row[0] if row else 0))

    # SIGTERM's close and `async with bot`'s close can overlap: the steps still run once.
    await asyncio.gather(services.close(before_storage=before_storage), services.close())
    assert presenter.closed_while_accepting == [False]  # after the runner stopped
    assert seen == [(False, True, 1)]  # runner stopped, client closed, database still open
    with pytest.raises(RuntimeError):
        services.db.conn  # noqa: B018  (closed last)
