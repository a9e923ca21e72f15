"""Continuous batching over one llama.cpp context: many sequences, one `llama_decode` per step.

A scheduler thread owns the context. Callers hand it a `Sequence` and read sampled tokens from
the sequence's queue. Each step the scheduler admits waiting sequences into free slots (one
slot = one llama.cpp seq_id), drops cancelled ones, evaluates one prompt chunk if a sequence is
still reading its prompt, then decodes one token for every generating sequence in a single
multi-sequence batch. Joining and leaving happen between steps (iteration-level scheduling).

Numerics: a sequence's tokens are the same whether it runs alone or beside others, because
every number it depends on is computed by the same kernel in the same order either way
(the engine's `exact` mode, the default; docs/benchmarks.md, "Continuous batching"):

- prompts are evaluated alone, in chunks of a fixed size, never mixed with other sequences;
- the context keeps one KV stream per slot (`kv_unified=False`), so a sequence's cells are laid
  out as when it runs alone;
- weight repacking is off (`use_extra_bufts=False`): repacked Q4_K switches from gemv to gemm
  kernels at 4 tokens per batch, and their sums differ in the last bits;
- ggml's tiled K-quant matmul is off (`GGML_CPU_TILED_MM=0`): it takes over from 8 tokens
  per batch; llamafile's tinyBLAS, which also changes kernels with the batch, is left out of
  inferq's build (scripts/bootstrap.sh);
- the KV cache is bf16: with an f16 cache, flash attention splits the cells of one sequence
  with 512 or more across threads and merges partial sums, which it never does for a batch.

An ulp of difference is enough to flip a greedy choice a few tokens later. Outside exact mode
the same scheduler runs with those kernels on: faster prompts, batches not bit-exact.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from inferq.errors import EngineError

log = logging.getLogger(__name__)

# What a consumer reads from its queue: a token id, an error, or None at the end.
Item = int | BaseException | None
_RATE_WINDOW_S = 10.0


@dataclass(eq=False)
class Sequence:
    """One generation as the scheduler sees it. Only the scheduler thread mutates it."""

    prompt: list[int]
    max_tokens: int
    sampler: Any  # llama_sampler_p, owned (and freed) by the scheduler once submitted
    out: queue.SimpleQueue[Item] = field(default_factory=queue.SimpleQueue)
    slot: int = -1
    n_past: int = 0  # tokens of this sequence in the KV cache
    pending: int = -1  # the last sampled token, not yet in the KV cache
    produced: int = 0
    cancelled: bool = False
    # A chain of only the greedy sampler: the scheduler takes the argmax of the logits itself,
    # as that sampler does (the first of equal maxima), without copying 262k candidates.
    greedy: bool = False

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)


class BatchScheduler:
    """Runs up to `slots` sequences together on one llama.cpp context."""

    def __init__(
        self,
        ctx: Any,
        vocab: Any,
        slots: int,
        n_batch: int,
        prompt_chunk: int,
    ):
        self._ctx = ctx
        self._vocab = vocab
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self._slots = slots
        self._chunk = prompt_chunk
        self._batch = llama_cpp.llama_batch_init(max(n_batch, slots), 0, 1)
        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._calls: list[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] = []
        self._active: dict[int, Sequence] = {}  # slot -> sequence, in admission order
        self._stopping = False
        self._kv_used = 0
        self._rate: collections.deque[tuple[float, int]] = collections.deque()
        self._thread = threading.Thread(target=self._run, name="inferq-batching", daemon=True)

    # -- called from any thread ------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        with self._cond:
            if self._stopping:
                llama_cpp.llama_sampler_free(seq.sampler)
                raise EngineError("the llama.cpp engine is shutting down")
            self._waiting.append(seq)
            self._cond.notify()

    def cancel(self, seq: Sequence) -> None:
        """Ask the scheduler to drop a sequence at the next step; does not wait."""
        with self._cond:
            seq.cancelled = True
            self._cond.notify()

    def call(self, fn: Callable[[], Any], timeout: float = 30) -> Any:
        """Run `fn` on the scheduler thread, between steps (the context is not thread-safe)."""
        reply: queue.SimpleQueue[Any] = queue.SimpleQueue()
        with self._cond:
            self._calls.append((fn, reply))
            self._cond.notify()
        return reply.get(timeout=timeout)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)

    @property
    def busy(self) -> int:
        return len(self._active) + len(self._waiting)

    @property
    def kv_used(self) -> int:
        """KV cells held by live sequences, as tracked by the scheduler."""
        return self._kv_used

    def tokens_per_s(self) -> float:
        """Tokens sampled per second over the last few seconds, all sequences together."""
        now = time.monotonic()
        recent = [(t, n) for t, n in list(self._rate) if now - t <= _RATE_WINDOW_S]
        if not recent:
            return 0.0
        span = max(now - recent[0][0], 1.0)
        return round(sum(n for _, n in recent) / span, 1)

    # -- the scheduler thread -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while (calls := self._next_step()) is not None:
                self._drop_cancelled()
                self._run_calls(calls)  # after the drop: a caller sees the cache settled
                self._prefill_one_chunk()
                self._decode_step()
        except BaseException as exc:  # never leave a consumer waiting forever
            log.exception("batching scheduler crashed")
            self._fail_all(EngineError(f"batching scheduler crashed: {exc}"))
            raise
        self._fail_all(EngineError("the llama.cpp engine was unloaded"))

    def _next_step(self) -> list[tuple[Callable[[], Any], queue.SimpleQueue[Any]]] | None:
        """Wait for work and admit waiting sequences; the queued calls, or None to stop."""
        with self._cond:
            while not (self._stopping or self._waiting or self._active or self._calls):
                self._cond.wait()
            if self._stopping:
                return None
            calls, self._calls = self._calls, []
            free = [s for s in range(self._slots) if s not in self._active]
            while free and self._waiting:
                seq = self._waiting.popleft()
                seq.slot = free.pop(0)
                self._active[seq.slot] = seq
        return calls

    @staticmethod
    def _run_calls(calls: list[tuple[Callable[[], Any], queue.SimpleQueue[Any]]]) -> None:
        for fn, reply in calls:
            try:
                reply.put(fn())
            except Exception as exc:
                reply.put(exc)

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._active.values() if s.cancelled]:
            self._finish(seq, None)

    def _finish(self, seq: Sequence, item: Item) -> None:
        """Take a sequence out: its KV cells and sampler are freed, its reader is told."""
        del self._active[seq.slot]
        llama_cpp.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
        self._kv_used -= seq.n_past
        llama_cpp.llama_sampler_free(seq.sampler)
        seq.out.put(item)

    def _fail_all(self, error: BaseException) -> None:
        with self._cond:
            waiting, self._waiting = list(self._waiting), collections.deque()
        for seq in list(self._active.values()):
            self._finish(seq, error)
        for seq in waiting:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.out.put(error)

    def _prefill_one_chunk(self) -> None:
        """Evaluate the next prompt chunk of the oldest sequence still reading its prompt.

        Alone in its own `llama_decode`, so its KV entries do not depend on the others.
        """
        seq = next((s for s in self._active.values() if s.prefilling), None)
        if seq is None:
            return
        chunk = seq.prompt[seq.n_past : seq.n_past + self._chunk]
        last = seq.n_past + len(chunk) == len(seq.prompt)
        batch = self._batch
        for i, token in enumerate(chunk):
            self._put(i, token, seq.n_past + i, seq.slot, last and i == len(chunk) - 1)
        batch.n_tokens = len(chunk)
        if not self._decode([seq]):
            return
        seq.n_past += len(chunk)
        self._kv_used += len(chunk)
        if last:
            self._sample(seq, len(chunk) - 1)

    def _decode_step(self) -> None:
        """One token for every generating sequence, in one multi-sequence batch."""
        # In slot order: with one KV stream per slot llama.cpp splits a batch into ubatches of
        # consecutive, increasing seq ids, and every ubatch is another pass over the weights.
        running = sorted(
            (s for s in self._active.values() if not s.prefilling and s.pending >= 0),
            key=lambda s: s.slot,
        )
        if not running:
            return
        for i, seq in enumerate(running):
            self._put(i, seq.pending, seq.n_past, seq.slot, True)
        self._batch.n_tokens = len(running)
        if not self._decode(running):
            return
        self._kv_used += len(running)
        for i, seq in enumerate(running):
            seq.n_past += 1
            self._sample(seq, i)
        now = time.monotonic()
        self._rate.append((now, len(running)))
        while self._rate and now - self._rate[0][0] > _RATE_WINDOW_S:
            self._rate.popleft()

    def _put(self, i: int, token: int, pos: int, slot: int, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = slot
        batch.logits[i] = logits

    def _decode(self, seqs: list[Sequence]) -> bool:
        rc = llama_cpp.llama_decode(self._ctx, self._batch)
        if rc == 0:
            return True
        # 1: no room in the KV cache; <0: a hard error. Either way these sequences cannot go on.
        error = EngineError(f"llama_decode failed with status {rc}")
        for seq in seqs:
            self._finish(seq, error)
        return False

    def _sample(self, seq: Sequence, index: int) -> None:
        if seq.greedy:
            logits = llama_cpp.llama_get_logits_ith(self._ctx, index)
            token = int(np.argmax(np.ctypeslib.as_array(logits, shape=(self._n_vocab,))))
        else:
            # It also accepts the token into the chain (penalties, grammar).
            token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, index)
        seq.produced += 1
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, None)
            return
        seq.out.put(token)
        if seq.produced >= seq.max_tokens:
            self._finish(seq, None)
        else:
            seq.pending = token


def seq_cells(ctx: Any, slots: int) -> int:
    """KV cells llama.cpp itself holds across slots; call on the scheduler thread."""
    mem = llama_cpp.llama_get_memory(ctx)
    total = 0
    for slot in range(slots):
        high = llama_cpp.llama_memory_seq_pos_max(mem, slot)
        if high >= 0:
            total += high - llama_cpp.llama_memory_seq_pos_min(mem, slot) + 1
    return total
