"""The llama.cpp engine (llama-cpp-python): one loaded GGUF model, one sequence at a time."""

from __future__ import annotations

import codecs
import random
from collections.abc import Generator
from pathlib import Path
from typing import Any

from inferq.errors import EngineError
from inferq.tokenizers import llama_encode
from inferq.workers.engine import GeneratedToken, GenerationRequest


class LlamaCppEngine:
    name = "llamacpp"

    def __init__(self, model: str, path: Path, n_ctx: int, n_threads: int | None):
        self.model = model
        self._path = path
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._llm: Any = None

    def load(self) -> None:
        from llama_cpp import Llama

        self._llm = Llama(
            model_path=str(self._path),
            n_ctx=self._n_ctx,
            n_batch=512,
            n_threads=self._n_threads,
            verbose=False,
        )

    @property
    def llm(self) -> Any:
        if self._llm is None:
            raise EngineError("the llama.cpp engine is not loaded")
        return self._llm

    def count_tokens(self, text: str) -> int:
        return len(llama_encode(self.llm, text))

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]:
        import llama_cpp

        llm, params = self.llm, request.params
        prompt = llama_encode(llm, request.prompt)
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise EngineError(
                f"prompt ({len(prompt)} tokens) + max_tokens exceeds n_ctx {self._n_ctx}",
                code="context_length_exceeded",
            )
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        llm.set_seed(seed)
        # A fresh evaluation of the whole prompt, not llama-cpp-python's prefix reuse: the
        # reused path evaluates in other batch shapes, and greedy output must not depend on
        # what ran before.
        llm.reset()
        vocab = llm._model.vocab
        # Byte-fallback tokens can split a UTF-8 character; hold the bytes until it completes.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        tokens = llm.generate(
            prompt,
            top_k=40,
            top_p=params.top_p,
            min_p=0.05,
            temp=params.temperature,
            repeat_penalty=1.0,
        )
        for produced, token in enumerate(tokens, start=1):
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                return
            yield GeneratedToken(id=token, text=decoder.decode(llm.detokenize([token])))
            if produced >= params.max_tokens:
                return

    def capacity(self) -> dict[str, Any]:
        return {"slots": 1, "n_ctx": self._n_ctx}

    def unload(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
