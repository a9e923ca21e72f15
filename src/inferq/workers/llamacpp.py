"""The llama.cpp engine: one GGUF model, up to `slots` sequences decoded together.

Generation goes through a `BatchScheduler` (continuous batching, see `batching.py`); each
caller's generator reads its own sequence's tokens and may run in any thread.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import random
from collections.abc import Generator
from pathlib import Path
from typing import Any

import llama_cpp

from inferq.errors import EngineError, InvalidRequest
from inferq.tokenizers import llama_encode
from inferq.workers.batching import BatchScheduler, Sequence, seq_cells
from inferq.workers.engine import GeneratedToken, GenerationRequest, SamplingParams

# Fixed prompt chunk: a prompt is always evaluated in the same pieces, whoever else is running.
PROMPT_CHUNK = 256
N_BATCH = 512
GGML_TYPE_BF16 = 30  # ggml.h's enum ggml_type; llama_cpp does not export it
_TOP_K = 40
_MIN_P = 0.05
_PENALTY_LAST_N = 64
_GPU_DEVICES = {"cuda", "metal"}


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(
        self,
        model: str,
        path: Path,
        n_ctx: int,
        n_threads: int | None,
        slots: int = 8,
        device: str = "cpu",
        exact: bool = True,
    ):
        if slots < 1:
            raise ValueError("slots must be at least 1")
        if device not in _GPU_DEVICES | {"cpu"}:
            raise ValueError(f"llama.cpp runs in-process on cpu, cuda or metal, not {device!r}")
        self.model = model
        self.slots = slots
        self.device = device
        self._path = path
        self._exact = exact
        self._n_ctx_seq = n_ctx  # each sequence gets the model's full context
        self._n_threads = n_threads or os.cpu_count() or 1
        self._model: Any = None
        self._context: Any = None
        self._ctx: Any = None
        self._scheduler: BatchScheduler | None = None

    def load(self) -> None:
        from llama_cpp._internals import LlamaContext, LlamaModel
        from llama_cpp._logger import set_verbose

        set_verbose(False)  # llama.cpp logs every context and graph detail to stderr
        if self._exact:
            # The tiled K-quant matmul takes over from 8 rows and sums differently from the
            # one-row kernel (batching.py). ggml reads this once, at the process's first matmul,
            # so in a worker, where this engine is the first to run llama.cpp.
            os.environ["GGML_CPU_TILED_MM"] = "0"
        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = -1 if self.device in _GPU_DEVICES else 0
        # Repacked weights switch kernels with the batch size; see batching.py.
        mparams.use_extra_bufts = False
        self._model = LlamaModel(path_model=str(self._path), params=mparams, verbose=False)
        try:
            self._context = LlamaContext(
                model=self._model, params=self._context_params(), verbose=False
            )
        except ValueError as exc:
            self._model.close()
            raise EngineError(f"llama.cpp could not create a context: {exc}") from exc
        self._ctx = self._context.ctx
        self._scheduler = BatchScheduler(
            self._ctx, self._model.vocab, self.slots, N_BATCH, PROMPT_CHUNK
        )
        self._scheduler.start()

    def _context_params(self) -> Any:
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self._n_ctx_seq * self.slots
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = self.slots
        # One KV stream per slot: a sequence's cells sit where they would if it ran alone.
        cparams.kv_unified = False
        cparams.swa_full = False
        if self._exact:
            # With an f16 cache, flash attention splits one sequence's KV across threads once
            # it holds 512 cells, but never a batch's: a long sequence alone would sum in
            # another order. With bf16 (the model's own dtype, as vLLM keeps it) it takes one
            # path for both; that was also faster through the stack than attention without
            # flash (docs/benchmarks.md, "Continuous batching").
            cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
            cparams.type_k = cparams.type_v = GGML_TYPE_BF16
        cparams.n_threads = self._n_threads
        cparams.n_threads_batch = self._n_threads
        cparams.no_perf = True
        return cparams

    @property
    def scheduler(self) -> BatchScheduler:
        if self._scheduler is None:
            raise EngineError("the llama.cpp engine is not loaded")
        return self._scheduler

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def encode(self, text: str) -> list[int]:
        if self._model is None:
            raise EngineError("the llama.cpp engine is not loaded")
        return llama_encode(self._model, text)

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]:
        """Tokens of one sequence; closing the generator drops it from the batch."""
        scheduler, params = self.scheduler, request.params
        prompt = self.encode(request.prompt)
        if len(prompt) + params.max_tokens > self._n_ctx_seq:
            raise EngineError(
                f"prompt ({len(prompt)} tokens) + max_tokens exceeds n_ctx {self._n_ctx_seq}",
                code="context_length_exceeded",
            )
        seq = Sequence(prompt, params.max_tokens, self._sampler(params), greedy=_greedy(params))
        scheduler.submit(seq)
        return self._stream(scheduler, seq)

    def _stream(
        self, scheduler: BatchScheduler, seq: Sequence
    ) -> Generator[GeneratedToken, None, None]:
        # Byte-fallback tokens can split a UTF-8 character; hold the bytes until it completes.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finished = False
        try:
            while True:
                item = seq.out.get()
                if item is None:
                    finished = True
                    return
                if isinstance(item, BaseException):
                    finished = True
                    raise item
                piece = self._piece(item)
                yield GeneratedToken(id=item, text=decoder.decode(piece))
        finally:
            if not finished:
                scheduler.cancel(seq)

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
        if n < 0:  # a longer piece: -n is the size it needs
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._model.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def _sampler(self, params: SamplingParams) -> Any:
        """A sampler chain of this request's own; the scheduler frees it when the job leaves."""
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(
                self._model.vocab, params.grammar.encode("utf-8"), b"root"
            )
            if not grammar:  # a NULL pointer: the GBNF did not parse
                llama_cpp.llama_sampler_free(chain)
                raise InvalidRequest(
                    "the grammar could not be parsed", param="grammar", code="invalid_grammar"
                )
            add(chain, grammar)
        if params.presence_penalty or params.frequency_penalty:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    llama_cpp.llama_vocab_n_tokens(self._model.vocab),
                    _PENALTY_LAST_N,
                    1.0,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if params.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(chain, llama_cpp.llama_sampler_init_top_k(_TOP_K))
        add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_min_p(_MIN_P, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def kv_usage(self) -> dict[str, int]:
        """KV cells held by live sequences and the context's total."""
        return {"kv_used": self.scheduler.kv_used, "kv_total": self._n_ctx_seq * self.slots}

    def kv_cells_in_llama(self) -> int:
        """KV cells llama.cpp itself reports; cross-checks the scheduler's count."""
        ctx, slots = self._ctx, self.slots
        cells: Any = self.scheduler.call(lambda: seq_cells(ctx, slots))
        return int(cells)

    def capacity(self) -> dict[str, Any]:
        scheduler = self._scheduler
        return {
            "slots": self.slots,
            "slots_busy": scheduler.busy if scheduler else 0,
            "n_ctx": self._n_ctx_seq,
            "device": self.device,
            "tokens_per_s": scheduler.tokens_per_s() if scheduler else 0.0,
            **(self.kv_usage() if scheduler else {"kv_used": 0, "kv_total": 0}),
        }

    def unload(self) -> None:

        if self._scheduler is not None:
            self._scheduler.stop()
            self._scheduler = None
        if self._context is not None:
            self._context.close()
            self._context = self._ctx = None
        if self._model is not None:
            self._model.close()
            self._model = None


def _greedy(params: SamplingParams) -> bool:
    """True when `_sampler` builds a chain of the greedy sampler alone."""
    return (
        params.temperature <= 0
        and params.grammar is None
        and not params.presence_penalty
        and not params.frequency_penalty
    )
