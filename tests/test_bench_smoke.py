"""`inferq bench` end to end on the echo model: a few requests per scenario, and a JSON report
with every field filled with sane values. Figures are not judged here (no timing thresholds):
this proves the harness measures what it says, not how fast the machine is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from inferq.bench.cli import run_bench
from inferq.bench.report import find
from tests.conftest import API_KEY  # the key every client of the test API sends

ARGS = [
    "--model", "echo", "--targets", "inferq-jobs,inferq-openai",
    "--llama-server", "", "--litellm", "",
    "--scenarios", "latency,sweep,cache,capacity,mixed,streams",
    "--requests", "3", "--warmup", "1", "--max-tokens", "4",
    "--levels", "1,2", "--min-requests", "1",
    "--cache-requests", "3", "--capacity-seconds", "0.5", "--capacity-rounds", "1",
    "--capacity-concurrency", "4", "--mixed-seconds", "1", "--streams", "8",
    "--stream-hold", "0.2", "--quiet",
]  # fmt: skip


def _sane(dist: dict[str, float] | None) -> bool:
    return dist is not None and 0 < dist["p50"] <= dist["p95"] <= dist["p99"] <= dist["max"]


@pytest.fixture(scope="module")
def result(stack: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One short run of every scenario, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench")
    assert run_bench(["--api", stack, "--api-key", API_KEY, "--out", str(out), *ARGS]) == 0
    [json_file] = out.glob("bench-*.json")
    assert json_file.with_suffix(".md").read_text().count("| latency |") == 2
    report: dict[str, Any] = json.loads(json_file.read_text())
    return report


def test_bench_reports_generation(result: dict[str, Any]) -> None:
    runs = result["runs"]
    assert result["targets"] == ["inferq-jobs", "inferq-openai"]
    assert "floor" not in result["targets"]  # echo is not a GGUF: no in-process floor
    for name in ("inferq-jobs", "inferq-openai"):
        run = find(runs, "latency", name)
        assert run is not None and run["ok"] == run["requests"] == 3, run
        assert run["errors"] == {} and run["tokens"] > 0
        assert _sane(run["ttft_ms"]) and _sane(run["e2e_ms"])
        assert run["ttft_ms"]["p50"] <= run["e2e_ms"]["p50"]
        assert len(run["samples"]) == 3
        for level in (1, 2):
            sweep = find(runs, "sweep", name, concurrency=level)
            assert sweep is not None and sweep["ok"] == level and sweep["throughput_tok_s"] > 0


def test_bench_reports_cache_capacity_and_streams(result: dict[str, Any]) -> None:
    runs = result["runs"]
    l1 = find(runs, "cache", "inferq-jobs", "l1")
    assert l1 is not None and l1["ok"] == 3 and l1["cache"] == {"hit-exact": 3}
    waited = find(runs, "cache", "inferq-jobs", "l1-wait")  # one POST with Prefer: wait
    assert waited is not None and waited["ok"] == 3 and waited["cache"] == {"hit-exact": 3}
    assert _sane(l1["e2e_ms"])
    ways = [("inferq-jobs", "l1"), ("inferq-jobs", "l1-wait"), ("inferq-openai", "l1")]
    for name, label in ways:  # on the lean client: JSON, and SSE for jobs' l1
        capacity = find(runs, "capacity", name, label)
        assert capacity is not None and capacity["ok"] > 0 and capacity["requests_per_s"] > 0
        assert capacity["errors"] == {}, capacity["errors"]
    mixed = [r for r in runs if r["scenario"] == "mixed"]
    assert {r["label"] for r in mixed} >= {"inferq:generate", "inferq:l1-hit"}
    assert set(result["skipped"]) <= {"cache:l2"}, result["skipped"]  # echo answers skip L2
    streams = find(runs, "streams", "inferq-jobs", "idle-sse")
    assert streams is not None and streams["requests"] == 8
    # The test stack's echo worker is fast, so these streams end early instead of idling.
    assert streams["errors"] == {} and 0 <= streams["streams_open_at_hold_end"] <= 8
    assert streams["api_rss_kb_before"] > 0 and streams["api_rss_kb_after"] > 0
    verdicts = {v["target"]: v for v in result["verdicts"]}
    assert len(verdicts) == 7
    assert all(v["met"] in (True, False, None) for v in verdicts.values())
    (l1_verdict,) = [v for name, v in verdicts.items() if name.startswith("L1 hit")]
    one_request = [find(runs, "cache", *tl) for tl in (("inferq-jobs", "l1-wait"),
                                                      ("inferq-openai", "l1"))]  # fmt: skip
    assert l1_verdict["measured"] == max(r["e2e_ms"]["p99"] for r in one_request if r)
    assert result["machine"]["cores"] >= 1 and result["config"]["api_pid"] is not None
