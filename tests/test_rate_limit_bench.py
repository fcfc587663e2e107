"""bench/rate_limit_bench.py: it tells a job from a refusal and finds each job's result as the
bot shows it (one public message per job), so its figures and checks mean something."""

from __future__ import annotations

import pytest

from bench import rate_limit_bench


async def test_rate_limit_bench_counts_every_job_and_its_result(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await rate_limit_bench.run(rate_limit_bench.parse(["--scenario", "a", "--time-scale", "0.1"]))
    out = capsys.readouterr().out
    printed = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    # Not the exit status: scenario (a)'s latency goals depend on how busy the machine is.
    assert printed["commands refused"] == "0"
    assert printed["jobs accepted"] == "20"
    assert printed["results posted"] == "20/20"
    assert printed["jobs lost"] == "0"
    assert printed["credits used in ledger"] == printed["credits charged by PixelDojo"] == "20"
    # A result is timed when it is shown, which is after PixelDojo finished the job.
    assert float(printed["completion to result posted p50"].split()[0]) >= 0
    failures = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line for line in failures if "goal" not in line] == []
