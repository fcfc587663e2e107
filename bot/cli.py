"""One generation from the command line, through the bot's own services (`bot.services`)."""

from __future__ import annotations

import itertools
import re
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from bot.config import Settings
from bot.errors import RequestRefused
from bot.generation.models import GenerationRequest, Job
from bot.generation.runner import Phase, QueuePosition, ResultImage
from bot.generation.service import validate
from bot.generation.uploads import image_extension
from bot.services import build_services

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_name(raw: str, fallback: str) -> str:
    """`raw` (a server-chosen id) reduced to a file-name part that cannot leave its folder."""
    return _UNSAFE.sub("_", raw).strip("_-")[:64] or fallback


def unwritable_reason(folder: Path) -> str | None:
    """Why images cannot be saved in `folder` (created if missing), or None if they can."""
    if folder.exists() and not folder.is_dir():
        return "it exists and is not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def write_new_file(folder: Path, stem: str, extension: str, data: bytes) -> Path:
    """Write `data` to `stem.extension` in `folder`, or `stem-1.extension`, … if taken."""
    for n in itertools.count():
        path = folder / (f"{stem}.{extension}" if n == 0 else f"{stem}-{n}.{extension}")
        try:
            with path.open("xb") as file:  # exclusive: never replaces an existing file
                file.write(data)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


class FilePresenter:
    """A `JobPresenter` that prints progress and writes results to a folder."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.saved: list[Path] = []
        self.failure: str | None = None

    async def show_status(
        self, job: Job, phase: Phase, elapsed: float, queue: QueuePosition | None = None
    ) -> None:
        where = f", number {queue.position} in line" if queue else ""
        print(f"job {job.id}: {phase.value} ({elapsed:.0f} s{where})", file=sys.stderr)

    async def show_failure(self, job: Job, reason: str) -> None:
        self.failure = reason

    async def post_result(self, job: Job, images: list[ResultImage], elapsed: float) -> int:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        job_name = safe_name(job.api_job_id or "", str(job.id))
        for image in images:
            stem = f"pixeldojo-{job_name}-{image.index + 1}"
            path = write_new_file(self.out_dir, stem, image_extension(image.data), image.data)
            self.saved.append(path)
        return 0

    async def find_posted_result(self, job: Job) -> int | None:
        return None

    def forget(self, job_id: int) -> None:
        """Nothing is kept per job."""


async def generate_once(
    settings: Settings,
    *,
    prompt: str,
    aspect_ratio: str,
    num_outputs: int,
    seed: int | None,
    out_dir: Path,
) -> int:
    """Generate, save the images under `out_dir`, print their paths. Returns an exit code."""
    try:
        prompt, aspect_ratio, num_outputs, seed = validate(
            prompt=prompt, aspect_ratio=aspect_ratio, num_outputs=num_outputs, seed=seed
        )
    except RequestRefused as refusal:
        print(f"pixeldojo-bot: {refusal}", file=sys.stderr)
        return 2
    # Before anything is submitted: PixelDojo charges for a job whose images we cannot save.
    reason = unwritable_reason(out_dir)
    if reason is not None:
        print(f"pixeldojo-bot: cannot save images in {out_dir}: {reason}", file=sys.stderr)
        return 2
    presenter = FilePresenter(out_dir)
    services = await build_services(
        # A throwaway database: the bot's jobs and credit ledger are not the command line's.
        # No webhooks either: the bot may be running and listening on WEBHOOK_PORT.
        replace(settings, database_path=Path(":memory:"), pixeldojo_webhook_url=None),
        presenter,
        member_limits=False,
        sandbox_job_duration=0.0,
    )
    try:
        await services.start()
        service = services.generation
        job = await service.reserve(
            GenerationRequest(
                guild_id=0,
                channel_id=0,
                user_id=0,
                prompt=prompt,
                aspect_ratio=aspect_ratio,
                num_outputs=num_outputs,
                seed=seed,
            )
        )
        await service.launch(job, None)
        await services.runner.wait_finished(job.id)
    finally:
        await services.close()
    if presenter.failure is not None:
        print(f"pixeldojo-bot: {presenter.failure}", file=sys.stderr)
        return 1
    for path in presenter.saved:
        print(path)
    return 0
