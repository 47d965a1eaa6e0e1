"""``make bench`` in its smoke mode: every contender and phase measured for a few seconds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.bench.lineup import ALL_NAMES, RAW_PRODUCER
from tests.harness.kafka_broker import KafkaBroker
from tests.harness.paths import REPO


@pytest.mark.kafka
@pytest.mark.timeout(300)
def test_smoke_bench_gives_every_contender_and_phase_positive_figures(
    kafka_broker: KafkaBroker, tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench.harness", "--smoke",
         "--bootstrap", kafka_broker.bootstrap_servers, "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=280, check=False,
    )
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = orjson.loads((tmp_path / "results.json").read_bytes())

    rows = {row["name"]: row for row in report["contenders"]}
    assert set(rows) == set(ALL_NAMES)
    for name, row in rows.items():
        closed = row["closed"]
        assert closed["ok_rate"] > 0, name
        assert 0 < closed["latency_ms"]["p50"] <= closed["latency_ms"]["p99"], name
        assert closed["latency_ms"]["p99"] <= closed["latency_ms"]["p99.9"], name
        assert row["peak_rss_mib"] > 0, name
        if name != RAW_PRODUCER:  # an HTTP contender: its CPU per answer is measured
            assert closed["cpu_us_per_2xx"] > 0, name
        (half,) = row["open"]  # smoke: one open-loop step, at half the maximum
        assert half["fraction"] == 0.5
        assert half["offered_rate"] > 0
        assert half["completed"] > 0, name
        assert half["latency_ms"]["p99.9"] > 0, name
        assert row["label"] in done.stdout  # the table has a row for it

    memory = report["memory"]
    assert memory["early_rss_mib"] > 0
    assert memory["end_rss_mib"] > 0
    assert memory["load"]["completed"] > 0
    profile = report["profile"]
    assert profile["samples"] > 0
    assert Path(profile["file"]).stat().st_size > 0
    in_turns = report["in_turns"]  # the gateway, FastAPI and the ceiling, in turns
    assert set(in_turns["contenders"]) == {"ceiling", "gateway", "fastapi"}
    assert (in_turns["rounds"], in_turns["turn_s"]) == (2, 1)  # not the phase's duration
    for name, figures in in_turns["contenders"].items():
        assert len(figures["rates"]) == 2, name  # smoke: two rounds
        assert figures["ok_rate"] > 0, name
        assert figures["cpu_us_per_2xx"] > 0, name
    assert in_turns["gateway_over_fastapi"]["rate"] > 0
    assert "in turns (each started once" in done.stdout
    consumers = report["consumers"]
    assert consumers["events"] > 0
    for name in ("raw", "metrics", "archiver", "plain_archiver", "archiver_reread"):
        assert consumers[name]["rate"] > 0, name
        # CPU per record: the raw and plain baselines time themselves (process_time);
        # the service's consumers are read from /proc in clock ticks, which a smoke run's
        # few hundred records may not reach, so only its presence is asserted for them.
        assert "cpu_us_per_record" in consumers[name], name
    assert len(consumers["raw"]["run_rates"]) == 3
    assert consumers["raw"]["cpu_us_per_record"] > 0
    assert consumers["plain_archiver"]["cpu_us_per_record"] > 0
    assert (tmp_path / "latency.png").stat().st_size > 10_000
