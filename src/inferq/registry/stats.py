"""Per-arm figures of a traffic policy, from the jobs table, and their comparison.

Error rates get a Wilson score interval (95 %), sound for small counts and rates near 0;
latency means (TTFT, TPOT) get a normal-approximation interval (mean ± 1.96 · sd / √n), and
the difference of two arms' means a Welch-style normal interval. Percentiles are nearest-rank
over the arm's finished jobs.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inferq.db.models import Job, JobStatus
from inferq.registry.models import TrafficPolicy

Z95 = 1.959964
_LIMIT = 200_000


def wilson(errors: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion errors/n; None without data."""
    if n == 0:
        return None
    p = errors / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_ci(values: list[float], z: float = Z95) -> dict[str, float] | None:
    if not values:
        return None
    mean = statistics.fmean(values)
    half = z * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.inf
    return {"mean": round(mean, 3), "low": round(mean - half, 3), "high": round(mean + half, 3)}


def percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 3)

    return {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99)}


async def arm_rows(session: AsyncSession, policy_id: str) -> dict[str, list[Job]]:
    query = (
        select(Job)
        .where(Job.route["policy"].astext == policy_id)
        .order_by(Job.created_at)
        .limit(_LIMIT)
    )
    arms: dict[str, list[Job]] = defaultdict(list)
    for job in (await session.scalars(query)).all():
        arms[str((job.route or {}).get("arm"))].append(job)
    return arms


def arm_figures(jobs: list[Job]) -> dict[str, Any]:
    ended = [j for j in jobs if j.status in (JobStatus.COMPLETED, JobStatus.FAILED)]
    errors = sum(1 for j in ended if j.status == JobStatus.FAILED)
    ttft = _timing(ended, "ttft_ms")
    tpot = _timing(ended, "tpot_ms")
    interval = wilson(errors, len(ended))
    return {
        "requests": len(jobs),
        "finished": len(ended),
        "errors": errors,
        "error_rate": round(errors / len(ended), 6) if ended else None,
        "error_rate_ci95": [round(x, 6) for x in interval] if interval else None,
        "versions": sorted({j.model_version or "" for j in jobs}),
        "workers": len({(j.worker or {}).get("id") for j in ended if j.worker}),
        "ttft_ms": percentiles(ttft),
        "ttft_ms_mean": mean_ci(ttft),
        "tpot_ms": percentiles(tpot),
        "tpot_ms_mean": mean_ci(tpot),
        "prompt_tokens": sum(j.prompt_tokens for j in jobs),
        "completion_tokens": sum((j.usage or {}).get("completion_tokens", 0) for j in ended),
    }


def compare(control: list[Job], candidate: list[Job]) -> dict[str, Any]:
    """Candidate minus control: error rate and mean latencies, with 95 % normal intervals."""
    a, b = arm_figures(control), arm_figures(candidate)
    out: dict[str, Any] = {}
    if a["finished"] and b["finished"]:
        pa, pb = a["errors"] / a["finished"], b["errors"] / b["finished"]
        se = math.sqrt(pa * (1 - pa) / a["finished"] + pb * (1 - pb) / b["finished"])
        out["error_rate_diff"] = _diff(pb - pa, se)
    for key in ("ttft_ms", "tpot_ms"):
        xa = _timing(control, key)
        xb = _timing(candidate, key)
        if len(xa) > 1 and len(xb) > 1:
            se = math.sqrt(statistics.variance(xa) / len(xa) + statistics.variance(xb) / len(xb))
            out[f"{key}_mean_diff"] = _diff(statistics.fmean(xb) - statistics.fmean(xa), se)
    return out


async def summary(session: AsyncSession, policy: TrafficPolicy) -> dict[str, Any]:
    arms = await arm_rows(session, str(policy.id))
    control, candidate = arms.get("control", []), arms.get("candidate", [])
    return {
        "policy": str(policy.id),
        "model": policy.model,
        "kind": policy.kind,
        "share": policy.share,
        "method": {
            "error_rate": "Wilson score interval, 95 %",
            "latency_mean": "normal approximation, 95 % (mean ± 1.96·sd/√n)",
            "difference": "candidate - control, normal approximation, 95 %",
        },
        "arms": {
            "control": {"version": policy.control, **arm_figures(control)},
            "candidate": {"version": policy.candidate, **arm_figures(candidate)},
        },
        "comparison": compare(control, candidate),
    }


def _timing(jobs: list[Job], key: str) -> list[float]:
    values = []
    for job in jobs:
        value = (job.timings or {}).get(key)
        if job.status == JobStatus.COMPLETED and value is not None:
            values.append(float(value))
    return values


def _diff(value: float, se: float) -> dict[str, float]:
    return {
        "estimate": round(value, 6),
        "low": round(value - Z95 * se, 6),
        "high": round(value + Z95 * se, 6),
    }
