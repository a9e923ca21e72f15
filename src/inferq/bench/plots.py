"""PNG plots of a run: aggregate throughput against concurrency, and the TTFT distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """Draw what the run has data for; returns the files written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    sweep = [r for r in result["runs"] if r["scenario"] == "sweep"]
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for target in sorted({r["target"] for r in sweep}):
            points = sorted(
                (r["concurrency"], r["throughput_tok_s"] or 0)
                for r in sweep
                if r["target"] == target
            )
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=target)
        ax.set(
            xscale="log",
            xlabel="concurrent streams",
            ylabel="aggregate output tokens/s",
            title="Throughput against concurrency",
        )
        ax.set_xticks(
            sorted({r["concurrency"] for r in sweep}),
            labels=[str(c) for c in sorted({r["concurrency"] for r in sweep})],
        )
        ax.grid(True, alpha=0.3)
        ax.legend()
        written.append(_save(fig, out_dir / f"{stem}-throughput.png"))
    latency = [r for r in result["runs"] if r["scenario"] == "latency" and r.get("samples")]
    if latency:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for run in latency:
            values = sorted(s["ttft_ms"] for s in run["samples"] if s["ttft_ms"] is not None)
            if values:
                ys = [(i + 1) / len(values) for i in range(len(values))]
                ax.step(values, ys, where="post", label=run["target"])
        ax.set(
            xlabel="time to first token, ms",
            ylabel="fraction of requests",
            title="TTFT distribution, one stream at a time",
        )
        ax.grid(True, alpha=0.3)
        ax.legend()
        written.append(_save(fig, out_dir / f"{stem}-ttft.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
