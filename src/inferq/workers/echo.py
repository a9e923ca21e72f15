"""A model-free engine with deterministic output, for fast tests of everything around it."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Generator
from typing import Any

from inferq.workers.engine import GeneratedToken, GenerationRequest

# Tests slow the echo down to have time to cancel or reconnect mid-stream.
_DELAY_ENV = "INFERQ_ECHO_TOKEN_DELAY_S"
_END_MARK = "<end>"
# A prompt word that makes the engine fail on purpose (circuit breaker tests).
_FAIL_MARK = "<fail>"
# A prompt word answered with a NUL character, which PostgreSQL text cannot hold.
_NUL_MARK = "<nul>"


class EchoEngine:
    """Echoes the prompt's words back, one word per token, in order, then repeats them.

    A prompt word `<end>` acts as the end of turn; a word `<fail>` makes it raise; `<nul>` comes
    back as a NUL character. With
    temperature > 0 and a seed, words are shuffled by that seed, so seeded sampling is
    observable without a model.
    """

    name = "echo"

    def __init__(self, model: str):
        self.model = model
        self._delay_s = float(os.environ.get(_DELAY_ENV, "0"))

    def load(self) -> None:
        return None

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]:
        words = request.prompt.split() or ["echo"]
        if _FAIL_MARK in words:
            raise RuntimeError("echo engine asked to fail (<fail> in the prompt)")
        params = request.params
        if params.temperature > 0 and params.seed is not None:
            random.Random(params.seed).shuffle(words)
        for index in range(params.max_tokens):
            word = words[index % len(words)]
            if word == _END_MARK:
                return
            if self._delay_s:
                time.sleep(self._delay_s)
            word = "\x00" if word == _NUL_MARK else word
            yield GeneratedToken(id=index, text=word if index == 0 else " " + word)

    def capacity(self) -> dict[str, Any]:
        return {"slots": 1}

    def unload(self) -> None:
        return None
