"""The MLX engine (mlx-lm): Metal on Apple silicon, `mlx[cpu]` elsewhere.

Every job of the process goes through one mlx-lm `BatchGenerator`, owned by one decode thread:
a new request joins the running batch at the next step, a finished or cancelled one leaves it,
and each keeps its own sampler (temperature, top_p, seed). Callers of `generate` (runner
threads) talk to that thread through queues, so MLX state never crosses threads.

The model folder is the output of `inferq models convert` (float32 safetensors from the
bundled GGUF, and the GGUF's own tokenizer).
"""

from __future__ import annotations

import codecs
import importlib
import os
import queue
import re
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferq.errors import EngineError
from inferq.workers.engine import GeneratedToken, GenerationRequest

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_END = object()
_LOAD_TIMEOUT_S = 600.0
_PENALTY_LAST_N = 64  # the window llama.cpp's engine uses for its penalties
_DEVICES = {None, "cpu", "metal"}  # None: MLX's default (Metal when present, else cpu)

Sampler = Callable[[Any], Any]


@dataclass
class _Sequence:
    """One request inside the batch: its tokens come back through `out`."""

    prompt: list[int]
    max_tokens: int
    sampler: Sampler | None
    processors: list[Any]
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    uid: int | None = None


class _DecodeLoop:
    """The thread that owns the model and the `BatchGenerator`; all MLX work happens here."""

    def __init__(self, path: Path, slots: int, device: str | None):
        self._path = path
        self._slots = slots
        self._device = device
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._active: dict[int, _Sequence] = {}
        self._loaded = threading.Event()
        self._load_error: BaseException | None = None
        self.tokenizer: Any = None
        self.device = "unknown"
        self.kv_bytes = 0
        self._thread = threading.Thread(target=self._run, name="inferq-mlx", daemon=True)

    @property
    def busy(self) -> int:
        return len(self._active)

    def start(self) -> None:
        self._thread.start()
        if not self._loaded.wait(_LOAD_TIMEOUT_S):
            raise EngineError(f"loading {self._path} took more than {_LOAD_TIMEOUT_S:.0f} s")
        if self._load_error is not None:
            raise EngineError(f"cannot load the MLX model at {self._path}: {self._load_error}")

    def submit(self, sequence: _Sequence) -> None:
        self._commands.put(("insert", sequence))

    def cancel(self, sequence: _Sequence) -> None:
        self._commands.put(("remove", sequence))

    def stop(self) -> None:
        self._commands.put(("stop", None))
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            generator = self._load()
        except Exception as exc:  # reported to the caller of start()
            self._load_error = exc
            self._loaded.set()
            return
        self._loaded.set()
        try:
            while self._handle_commands(generator):
                if self._active:
                    self._step(generator)
        finally:
            generator.close()
            self._fail_all(EngineError("the MLX engine stopped"))

    def _load(self) -> Any:
        import mlx.core as mx
        from mlx_lm import load

        # `mlx_lm.generate` as an attribute is the function; the module holds BatchGenerator.
        generate_module = importlib.import_module("mlx_lm.generate")
        if self._device is not None:
            mx.set_default_device(mx.cpu if self._device == "cpu" else mx.gpu)
        loaded = load(str(self._path))
        model, tokenizer = loaded[0], loaded[1]
        self.tokenizer = tokenizer
        self.device = "metal" if mx.default_device() == mx.gpu else "cpu"
        return generate_module.BatchGenerator(
            model,
            stop_tokens=[[token] for token in stop_token_ids(tokenizer)],
            completion_batch_size=self._slots,
            prefill_batch_size=self._slots,
        )

    def _handle_commands(self, generator: Any) -> bool:
        """Apply pending commands; wait for one when idle. False means stop."""
        while True:
            try:
                block = not self._active
                command, sequence = self._commands.get(block=block)
            except queue.Empty:
                return True
            if command == "stop":
                return False
            if command == "insert":
                (sequence.uid,) = generator.insert(
                    [sequence.prompt],
                    [sequence.max_tokens],
                    samplers=[sequence.sampler],
                    logits_processors=[sequence.processors],
                )
                self._active[sequence.uid] = sequence
            elif command == "remove" and self._active.pop(sequence.uid, None) is not None:
                generator.remove([sequence.uid])
                self.kv_bytes = int(generator.prompt_cache_nbytes)

    def _step(self, generator: Any) -> None:
        try:
            _, responses = generator.next()
        except Exception as exc:  # a failed step fails every sequence in it
            self._fail_all(EngineError(f"MLX decode step failed: {exc}"))
            return
        for response in responses:
            sequence = self._active.get(response.uid)
            if sequence is None:
                continue
            if response.finish_reason != "stop":  # "stop" is the end-of-turn token itself
                sequence.out.put(int(response.token))
            if response.finish_reason is not None:
                del self._active[response.uid]
                sequence.out.put(_END)
        self.kv_bytes = int(generator.prompt_cache_nbytes)

    def _fail_all(self, error: EngineError) -> None:
        for sequence in self._active.values():
            sequence.out.put(error)
        self._active.clear()


def stop_token_ids(tokenizer: Any) -> set[int]:
    """End of generation: the EOS ids, and Gemma's `<end_of_turn>` as llama.cpp treats it."""
    stops = set(tokenizer.eos_token_ids)
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        stops.add(end_of_turn)
    return stops


class MlxEngine:
    name = "mlx"

    def __init__(
        self, model: str, path: Path, n_ctx: int, slots: int = 4, device: str | None = None
    ):
        if device not in _DEVICES:
            raise ValueError(f"MLX runs on cpu or metal (the GPU of Apple silicon), not {device!r}")
        self.model = model
        self._device = device
        self._path = path
        self._n_ctx = n_ctx
        self._slots = slots
        self._loop: _DecodeLoop | None = None
        self._special: set[int] = set()

    def load(self) -> None:
        if not (self._path / "config.json").exists():
            raise EngineError(
                f"no MLX model at {self._path}; run `inferq models convert` first",
                code="model_not_found",
            )
        loop = _DecodeLoop(self._path, self._slots, self._device)
        loop.start()
        self._loop = loop
        self._special = set(loop.tokenizer.all_special_ids)

    @property
    def loop(self) -> _DecodeLoop:
        if self._loop is None:
            raise EngineError("the MLX engine is not loaded")
        return self._loop

    def encode(self, text: str) -> list[int]:
        """As llama.cpp's server tokenizes: special tokens parsed, exactly one BOS first."""
        tokenizer = self.loop.tokenizer
        tokens: list[int] = tokenizer.encode(text, add_special_tokens=False)
        bos = tokenizer.bos_token_id
        if bos is not None and (not tokens or tokens[0] != bos):
            tokens.insert(0, bos)
        return tokens

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]:
        params = request.params
        prompt = self.encode(request.prompt)
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise EngineError(
                f"prompt ({len(prompt)} tokens) + max_tokens exceeds n_ctx {self._n_ctx}",
                code="context_length_exceeded",
            )
        if params.grammar is not None:
            raise EngineError(
                "the mlx engine has no grammar-constrained decoding (JSON mode, JSON schema)",
                code="unsupported",
            )
        sequence = _Sequence(
            prompt, params.max_tokens, make_sampler(params), make_processors(params)
        )
        loop = self.loop
        loop.submit(sequence)
        # Byte-fallback tokens can split a UTF-8 character; hold the bytes until it completes.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finished = False
        try:
            while (item := sequence.out.get()) is not _END:
                if isinstance(item, EngineError):
                    raise item
                yield GeneratedToken(id=item, text=decoder.decode(self._piece(item)))
            finished = True
        finally:
            if not finished:  # closed early (cancel, stop string): leave the batch now
                loop.cancel(sequence)

    def _piece(self, token: int) -> bytes:
        """The bytes of one token, as llama.cpp renders it (control tokens are empty)."""
        if token in self._special:
            return b""
        piece: str = self.loop.tokenizer.convert_ids_to_tokens(token)
        if match := _BYTE_PIECE.match(piece):
            return bytes([int(match.group(1), 16)])
        return piece.replace("\u2581", " ").encode("utf-8")

    def capacity(self) -> dict[str, Any]:
        loop = self._loop
        return {
            "slots": self._slots,
            "busy": loop.busy if loop else 0,
            "device": loop.device if loop else "unknown",
            "n_ctx": self._n_ctx,
            "kv_bytes": loop.kv_bytes if loop else 0,
        }

    def unload(self) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop = None


def make_sampler(params: Any) -> Sampler:
    """A sampler for one sequence: greedy at temperature 0, else seeded top-p sampling.

    Greedy sequences share one sampler object, so mlx-lm samples them in one batched call.
    A seeded sampler owns its PRNG key and splits it each step: the same seed gives the same
    tokens whatever else is in the batch.
    """
    import mlx.core as mx

    if params.temperature <= 0:
        return _greedy
    from mlx_lm.sample_utils import apply_top_p

    seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(4), "big")
    state = {"key": mx.random.key(seed)}
    temperature, top_p = params.temperature, params.top_p

    def sample(logprobs: Any) -> Any:
        state["key"], step_key = mx.random.split(state["key"])
        if top_p < 1.0:
            logprobs = apply_top_p(logprobs, top_p)
        return mx.random.categorical(logprobs * (1.0 / temperature), key=step_key)

    return sample


def make_processors(params: Any) -> list[Any]:
    """Presence and frequency penalties over the last tokens, as llama.cpp applies them."""
    if not (params.presence_penalty or params.frequency_penalty):
        return []
    from mlx_lm.sample_utils import make_logits_processors

    processors: list[Any] = make_logits_processors(
        presence_penalty=params.presence_penalty or None,
        presence_context_size=_PENALTY_LAST_N,
        frequency_penalty=params.frequency_penalty or None,
        frequency_context_size=_PENALTY_LAST_N,
    )
    return processors


def _greedy(logprobs: Any) -> Any:
    import mlx.core as mx

    return mx.argmax(logprobs, axis=-1)
