"""Sandbox mode and the command-line generator: same client and runner, no Discord needed."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from PIL import Image

from bot.config import Settings
from bot.pixeldojo.models import MODEL_ID
from bot.pixeldojo.sandbox import SandboxPixelDojo
from tests.doubles.discord_double import DiscordDouble
from tests.doubles.pixeldojo import FakePixelDojo
from tests.doubles.pixeldojo_rate_limit import RateLimiter
from tests.helpers import ALICE_ID, CHANNEL_ID, GUILD_ID, run_cli, settings_env


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


async def test_cli_generates_into_a_folder(
    api: FakePixelDojo, settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    del env["DISCORD_TOKEN"]
    code, out, err = await run_cli(
        env,
        "a lighthouse",
        "--aspect-ratio",
        "16:9",
        "--num-outputs",
        "2",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert code == 0, err
    paths = [Path(tmp_path, line) for line in out.split()]
    assert len(paths) == 2
    with Image.open(paths[0]) as image:
        assert image.size[0] * 9 == image.size[1] * 16


async def test_cli_reports_an_api_refusal(
    api: FakePixelDojo, settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    env["PIXELDOJO_API_KEY"] = "wrong-key"
    code, _out, err = await run_cli(env, "a lighthouse", cwd=tmp_path)
    assert code == 1
    assert "API key" in err.splitlines()[-1] and "wrong-key" not in err


async def test_cli_checks_the_out_folder_before_anything_is_charged(
    api: FakePixelDojo, settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    (tmp_path / "taken").write_text("a file where the folder should be")
    code, _out, err = await run_cli(env, "a lighthouse", "--out", "taken", cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines()[-1] == (
        "pixeldojo-bot: cannot save images in taken: it exists and is not a folder"
    )
    code, _out, err = await run_cli(env, "a lighthouse", "--out", "taken/sub", cwd=tmp_path)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("pixeldojo-bot: cannot save images in taken/")
    assert api.submissions == [] and api.credits == 10_000


async def test_cli_keeps_hostile_job_ids_in_the_folder_and_never_overwrites(
    api: FakePixelDojo, settings: Settings, tmp_path: Path
) -> None:
    env = settings_env(settings)
    out = tmp_path / "work" / "out"
    out.mkdir(parents=True)
    (out / "pixeldojo-escape-1.png").write_bytes(b"an earlier image")
    api.job_ids.extend(["../../escape", "a/b"])
    code, first, err = await run_cli(
        env, "a lighthouse", "--num-outputs", "2", "--out", "work/out", cwd=tmp_path
    )
    assert code == 0, err
    code, second, err = await run_cli(env, "a lighthouse", "--out", "work/out", cwd=tmp_path)
    assert code == 0, err
    assert (first + second).split() == [
        "work/out/pixeldojo-escape-1-1.png",
        "work/out/pixeldojo-escape-2.png",
        "work/out/pixeldojo-a_b-1.png",
    ]
    assert (out / "pixeldojo-escape-1.png").read_bytes() == b"an earlier image"
    assert files_under(tmp_path) == [
        "work/out/pixeldojo-a_b-1.png",
        "work/out/pixeldojo-escape-1-1.png",
        "work/out/pixeldojo-escape-1.png",
        "work/out/pixeldojo-escape-2.png",
    ]
    assert not (tmp_path.parent / "escape-1.png").exists()


async def test_cli_sandbox_renders_the_prompt(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PIXELDOJO_SANDBOX": "1", "POLL_INITIAL_INTERVAL": "0.2"}
    code, out, err = await run_cli(env, "hello sandbox", "--out", "o", cwd=tmp_path)
    assert code == 0, err
    with Image.open(Path(tmp_path, out.split()[0])) as image:
        assert image.size == (768, 768)


async def test_sandbox_bot_posts_placeholders_at_zero_credits(
    double: DiscordDouble, settings: Settings, bot_factory
) -> None:
    async with bot_factory(sandbox=True, pixeldojo_api_base="https://unreachable.invalid/api/v1"):
        record = await double.slash(
            "imagine",
            {"prompt": "rehearsal"},
            user_id=ALICE_ID,
            guild_id=GUILD_ID,
            channel_id=CHANNEL_ID,
        )
        await record.wait_for_response()
        result = await double.wait_for_message(lambda m: bool(m.attachments), timeout=15)
    fields = {f["name"]: f["value"] for f in result.embeds[0]["fields"]}
    assert fields["Credits"] == "0"
    with Image.open(io.BytesIO(result.attachments[0].data)) as image:
        assert image.size == (768, 768)


async def test_sandbox_forgets_jobs_images_and_renders_after_expiry() -> None:
    now = datetime(2030, 1, 1, 12, tzinfo=UTC)

    def clock() -> datetime:
        return now

    sandbox = SandboxPixelDojo(api_key=None, clock=clock, max_cached_renders=3)
    async with sandbox, httpx.AsyncClient(headers={"Authorization": "Bearer x"}) as http:

        async def generate(prompt: str) -> tuple[str, list[str]]:
            submitted = await http.post(
                f"{sandbox.base_url}/models/{MODEL_ID}/run",
                json={"prompt": prompt, "num_outputs": 2},
            )
            assert submitted.json()["expiresAt"] == (now + timedelta(hours=1)).isoformat(
                timespec="seconds"
            ).replace("+00:00", "Z")
            status = (await http.get(submitted.json()["statusUrl"])).json()
            assert status["status"] == "completed"
            urls = status["output"]["images"]
            for url in urls:
                assert (await http.get(url)).status_code == 200
            return submitted.json()["statusUrl"], urls

        first_status, first_urls = await generate("first")
        now += timedelta(minutes=30)
        _second_status, second_urls = await generate("second")
        assert len(sandbox.jobs) == 2
        assert len(sandbox._renders) == 3, "the render cache is bounded"

        now += timedelta(minutes=31)  # the first job has expired, the second has not
        assert (await http.get(first_status)).status_code == 404
        assert [(await http.get(url)).status_code for url in first_urls] == [404, 404]
        assert [j.prompt for j in sandbox.jobs.values()] == ["second"]
        assert all(sandbox._images[name][0] in sandbox.jobs for name in sandbox._images)
        assert set(sandbox._renders) <= {url.rsplit("/", 1)[1] for url in second_urls}
        assert [(await http.get(url)).status_code for url in second_urls] == [200, 200]

        now += timedelta(hours=1)
        await http.get(f"{sandbox.base_url}/models")
        assert (sandbox.jobs, sandbox._images, sandbox._renders) == ({}, {}, {})
        # The product's sandbox has no recorders that would grow instead.
        assert not hasattr(sandbox, "submissions") and not hasattr(sandbox, "request_log")


async def test_the_sandbox_runs_only_eviction_authentication_and_what_it_is_given() -> None:
    limiter = RateLimiter(limit=1, clock=lambda: 1_800_000_000.0)
    sandbox = SandboxPixelDojo(middlewares=[limiter.middleware])
    assert sandbox._middlewares() == [sandbox._forget, limiter.middleware, sandbox._authenticate]
    async with sandbox, httpx.AsyncClient(headers={"Authorization": "Bearer x"}) as http:
        assert (await http.get(f"{sandbox.base_url}/models")).status_code == 200
        assert (await http.get(f"{sandbox.base_url}/models")).status_code == 429
