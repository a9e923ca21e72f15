"""One status line on stderr: what runs, how far it is, how many failed."""

from __future__ import annotations

import sys
import time

from inferq.bench.stats import Sample


class Progress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.label = ""
        self.total = 0
        self.done = 0
        self.errors = 0
        self._shown = 0.0

    def start(self, label: str, total: int | None) -> None:
        self.label, self.total, self.done, self.errors = label, total or 0, 0, 0
        self.note(f"{label} ...")

    def tick(self, sample: Sample) -> None:
        self.done += 1
        self.errors += not sample.ok
        now = time.monotonic()
        if now - self._shown >= 0.2 or self.done == self.total:
            self._shown = now
            of = f"/{self.total}" if self.total else ""
            self._write(f"\r{self.label}: {self.done}{of} done, {self.errors} errors\x1b[K")

    def note(self, text: str) -> None:
        self._write(f"\r{text}\x1b[K\n")

    def _write(self, text: str) -> None:
        if self.enabled:
            print(text, end="", file=sys.stderr, flush=True)
