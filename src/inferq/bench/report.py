"""The run as JSON and as markdown: every run's figures, the ratios between targets measured
in the same run, and each target of issue 11 with its verdict."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

Summary = dict[str, Any]


def find(
    runs: list[Summary], scenario: str, target: str, label: str = "", concurrency: int | None = None
) -> Summary | None:
    for run in runs:
        if (run["scenario"], run["target"], run["label"]) == (scenario, target, label) and (
            concurrency is None or run["concurrency"] == concurrency
        ):
            return run
    return None


def _get(run: Summary | None, *path: str) -> Any:
    value: Any = run
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _ratio(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 4)
    return None


def ratios(runs: list[Summary]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    floor = find(runs, "latency", "floor")
    for name in ("inferq-jobs", "inferq-openai", "llama-server", "litellm"):
        run = find(runs, "latency", name)
        if run is None:
            continue
        out[f"latency.{name}.ttft_p50_over_floor"] = _ratio(
            _get(run, "ttft_ms", "p50"), _get(floor, "ttft_ms", "p50")
        )
        out[f"latency.{name}.tpot_p50_over_floor"] = _get(run, "tpot_ratio_to_floor_p50")
    levels = sorted({r["concurrency"] for r in runs if r["scenario"] == "sweep"})
    for level in levels:
        mine = {
            n: _get(find(runs, "sweep", n, concurrency=level), "throughput_tok_s")
            for n in ("inferq-jobs", "inferq-openai", "llama-server", "litellm")
        }
        for peer in ("llama-server", "litellm"):
            out[f"sweep.c{level}.inferq-jobs_over_{peer}.tok_s"] = _ratio(
                mine["inferq-jobs"], mine[peer]
            )
        one = _get(find(runs, "sweep", "inferq-jobs", concurrency=1), "throughput_tok_s")
        out[f"sweep.c{level}.inferq-jobs_over_itself_c1.tok_s"] = _ratio(mine["inferq-jobs"], one)
    litellm_cap = find(runs, "capacity", "litellm", "l1")
    for name in ("inferq-jobs", "inferq-openai"):
        run = find(runs, "capacity", name, "l1")
        out[f"capacity.{name}_over_litellm.rps"] = _ratio(
            _get(run, "requests_per_s"), _get(litellm_cap, "requests_per_s")
        )
        out[f"capacity.litellm_over_{name}.e2e_p99"] = _ratio(
            _get(litellm_cap, "e2e_ms", "p99"), _get(run, "e2e_ms", "p99")
        )
        out[f"cache.l1.litellm_over_{name}.e2e_p50"] = _ratio(
            _get(find(runs, "cache", "litellm", "l1"), "e2e_ms", "p50"),
            _get(find(runs, "cache", name, "l1"), "e2e_ms", "p50"),
        )
    return {k: v for k, v in out.items() if v is not None}


def _verdict(name: str, limit: str, value: Any, met: bool | None, note: str = "") -> Summary:
    return {"target": name, "limit": limit, "measured": value, "met": met, "note": note}


def _le(value: Any, bound: float) -> bool | None:
    return value <= bound if isinstance(value, int | float) else None


def verdicts(runs: list[Summary], l2_wanted: int, streams_wanted: int) -> list[Summary]:
    out = []
    lat = find(runs, "latency", "inferq-jobs")
    p50, p99 = _get(lat, "ttft_added_ms", "p50"), _get(lat, "ttft_added_ms", "p99")
    met = None if p50 is None else bool(_le(p50, 3) and _le(p99, 10))
    out.append(
        _verdict(
            "TTFT added over in-process (REST job, first SSE token)",
            "<= 3 ms p50, <= 10 ms p99",
            {"p50": p50, "p99": p99},
            met,
        )
    )
    tpot = _get(lat, "tpot_ratio_to_floor_p50")
    out.append(_verdict("TPOT through inferq / in-process (p50)", "<= 1.05", tpot, _le(tpot, 1.05)))
    one = _get(find(runs, "sweep", "inferq-jobs", concurrency=1), "throughput_tok_s")
    eight = _get(find(runs, "sweep", "inferq-jobs", concurrency=8), "throughput_tok_s")
    r = _ratio(eight, one)
    out.append(
        _verdict(
            "aggregate tok/s at 8 streams / 1 stream (inferq-jobs)",
            ">= 1.8",
            r,
            None if r is None else r >= 1.8,
        )
    )
    l1 = _get(find(runs, "cache", "inferq-jobs", "l1"), "e2e_ms", "p99")
    l1w = _get(find(runs, "cache", "inferq-jobs", "l1-wait"), "e2e_ms", "p99")
    l1o = _get(find(runs, "cache", "inferq-openai", "l1"), "e2e_ms", "p99")
    # One request in, the whole answer out: REST with Prefer: wait, and OpenAI. The worse
    # of the two is the figure; POST + SSE is two requests, shown beside it.
    one = [v for v in (l1w, l1o) if isinstance(v, int | float)]
    worst = max(one) if one else None
    out.append(
        _verdict(
            "L1 hit end to end, p99 (one request: REST with Prefer: wait, OpenAI)",
            "<= 5 ms",
            worst,
            _le(worst, 5),
            f"REST waited {l1w} ms, OpenAI /v1/completions {l1o} ms; POST + SSE {l1} ms",
        )
    )
    l2run = find(runs, "cache", "inferq-jobs", "l2")
    l2, indexed = _get(l2run, "e2e_ms", "p99"), _get(l2run, "l2_indexed")
    enough = isinstance(indexed, int) and indexed >= l2_wanted
    out.append(
        _verdict(
            f"L2 hit, p99, with {l2_wanted:,} entries",
            "<= 30 ms",
            l2,
            _le(l2, 30) if enough else None,
            f"entries indexed: {indexed}",
        )
    )
    out.append(_capacity_verdict(runs))
    st = find(runs, "streams", "inferq-jobs", "idle-sse")
    errors = None if st is None else st["requests"] - st["ok"]
    per = _get(st, "api_rss_kb_per_stream")
    n = _get(st, "requests")
    met = (
        None
        if st is None or per is None
        else bool(n >= streams_wanted and errors == 0 and per * 1.024 <= 100)
    )  # KiB to kB
    out.append(
        _verdict(
            "idle SSE streams, one API process",
            "1,000 with 0 errors, <= 100 KB each",
            {"streams": n, "errors": errors, "kib_per_stream": per},
            met,
        )
    )
    return out


def _capacity_verdict(runs: list[Summary]) -> Summary:
    lite = find(runs, "capacity", "litellm", "l1")
    ways = [("inferq-openai", "l1"), ("inferq-jobs", "l1"), ("inferq-jobs", "l1-wait")]
    best = max(
        (r for r in (find(runs, "capacity", n, label) for n, label in ways) if r is not None),
        key=lambda r: r["requests_per_s"] or 0,
        default=None,
    )
    rps = _get(best, "requests_per_s")
    value = {
        "target": _get(best, "target"),
        "label": _get(best, "label"),
        "rps": rps,
        "p99_ms": _get(best, "e2e_ms", "p99"),
        "litellm_rps": _get(lite, "requests_per_s"),
        "litellm_p99_ms": _get(lite, "e2e_ms", "p99"),
    }
    met = None
    if rps is not None:
        met = rps >= 1000
        if lite is not None:
            ratio = _ratio(rps, lite["requests_per_s"]) or 0
            met = met and ratio >= 2 and value["p99_ms"] < value["litellm_p99_ms"]
    return _verdict(
        "L1-hit requests/s, one API process", ">= 1,000 and >= 2x LiteLLM, lower p99", value, met
    )


def write(result: Summary, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown(result))
    return json_path, md_path


def _d(run: Summary, key: str) -> str:
    d = run.get(key)
    return "-" if not d else f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"


def markdown(result: Summary) -> str:
    lines = [
        f"# inferq bench {result['started_at']}",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['summary']}",
        "",
    ]
    if result["skipped"]:
        lines += ["Skipped:", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()] + [""]
    lines += [
        "| scenario | target | conc | req | errors | TTFT ms p50/p95/p99 | "
        "TPOT ms p50/p95/p99 | E2E ms p50/p95/p99 | tok/s | req/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        name = run["scenario"] + (f" {run['label']}" if run["label"] else "")
        errors = ", ".join(f"{k}: {v}" for k, v in run["errors"].items()) or "0"
        lines.append(
            f"| {name} | {run['target']} | {run['concurrency']} | {run['requests']} | {errors} | "
            f"{_d(run, 'ttft_ms')} | {_d(run, 'tpot_ms')} | {_d(run, 'e2e_ms')} | "
            f"{run['throughput_tok_s'] or 0:.1f} | {run['requests_per_s'] or 0:.1f} |"
        )
    lines += ["", "| ratio (same run) | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in result["ratios"].items()]
    lines += ["", "| target (issue 11) | limit | measured | met |", "| --- | --- | --- | --- |"]
    for v in result["verdicts"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[v["met"]]
        note = f" ({v['note']})" if v["note"] else ""
        lines.append(
            f"| {v['target']} | {v['limit']} | {json.dumps(v['measured'])}{note} | {met} |"
        )
    return "\n".join(lines) + "\n"
