"""The Ollama engine: generation on an Ollama server, through the official `ollama` client.

The prompt inferq hands an engine is final (rendered with the model's chat template and
token-counted by the API), so this engine calls `/api/generate` with `raw: true`: Ollama
applies no template of its own, and the model sees exactly what llama.cpp would.

The synchronous streaming client is used, not the async one: the runner consumes `generate`
from a synchronous Celery thread, and the sync client speaks the same wire protocol through
the same code (httpx stream, NDJSON lines, `{"error": ...}` lines raised as `ResponseError`).
Its stream lives in a `with` block inside the client's generator, so closing our generator
closes the HTTP response: Ollama sees the disconnect and stops decoding. Running the async
client on a private loop would add a thread hop per token and buy nothing here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar, cast

import httpx
import ollama

from inferq.catalog import OLLAMA_PREFIX
from inferq.errors import EngineError
from inferq.workers.engine import GeneratedToken, GenerationRequest

T = TypeVar("T")

# A 503 means Ollama's queue is full; wait briefly for it to drain before failing the job.
_BUSY_RETRY_DELAYS_S = (0.25, 0.5, 1.0, 2.0)
_CONNECT_TIMEOUT_S = 5.0
# No read timeout: a long prompt evaluation is silent for as long as it takes.
_TIMEOUT = httpx.Timeout(None, connect=_CONNECT_TIMEOUT_S)


def ollama_name(model: str) -> str:
    """Ollama's own name of an inferq model name `ollama/<name>`."""
    return model.removeprefix(OLLAMA_PREFIX)


class OllamaEngine:
    """A model on an Ollama host. `model` is inferq's name; `ollama_model` is Ollama's."""

    name = "ollama"

    def __init__(self, model: str, ollama_model: str, host: str | None, slots: int = 1):
        self.model = model
        self.ollama_model = ollama_model
        self._host = host  # None: the client reads OLLAMA_HOST, else localhost:11434
        self._slots = slots
        self._client: ollama.Client | None = None

    @property
    def client(self) -> ollama.Client:
        if self._client is None:
            raise EngineError("the Ollama engine is not loaded")
        return self._client

    def load(self) -> None:
        """Check the server answers and has the model; never pull it behind the user's back."""
        self._client = ollama.Client(host=self._host, timeout=_TIMEOUT)
        try:
            self._check_model()
        except EngineError:
            self.unload()
            raise

    def _check_model(self) -> None:
        try:
            self.client.show(self.ollama_model)
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise EngineError(
                    f"the Ollama server at {self.host} has no model '{self.ollama_model}'; "
                    f"pull it there first (`ollama pull {self.ollama_model}`)",
                    code="model_not_found",
                ) from None
            raise _engine_error(exc) from None
        except (ConnectionError, httpx.HTTPError) as exc:
            raise EngineError(f"cannot reach Ollama at {self.host}: {exc}") from None

    @property
    def host(self) -> str:
        """Where this engine talks to, for messages and the worker registry."""
        return self._host or os.environ.get("OLLAMA_HOST") or "127.0.0.1:11434"

    def count_tokens(self, text: str) -> int:
        """Ollama has no tokenize endpoint: evaluate the prompt with one token to predict.

        Costs a prompt evaluation on the server; the runner does not call it per job.
        """
        reply = self._call(
            lambda: self.client.generate(
                model=self.ollama_model,
                prompt=text,
                raw=True,
                stream=False,
                options={"num_predict": 1, "temperature": 0},
            )
        )
        return int(reply.prompt_eval_count or 0)

    def generate(self, request: GenerationRequest) -> Generator[GeneratedToken, None, None]:
        params = request.params
        if params.grammar is not None:
            # Ollama constrains with `format` (JSON or a JSON schema), not a GBNF grammar.
            raise EngineError(
                "the ollama engine takes no GBNF grammar (JSON mode, JSON schema)",
                code="unsupported",
            )
        options: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "num_predict": params.max_tokens,
        }
        if params.seed is not None:
            options["seed"] = params.seed
        if params.presence_penalty:
            options["presence_penalty"] = params.presence_penalty
        if params.frequency_penalty:
            options["frequency_penalty"] = params.frequency_penalty
        # Stop strings stay with the runner, which applies them the same way for every engine.
        parts = self._open_stream(request.prompt, options)
        try:
            yield from _tokens(parts)
        finally:
            # Closing the client's generator exits its `with` block: the response is closed.
            parts.close()

    def _open_stream(
        self, prompt: str, options: dict[str, Any]
    ) -> Generator[ollama.GenerateResponse, None, None]:
        """The response stream, started: HTTP errors (404, 503, ...) surface here, not mid-job."""

        def start() -> Generator[ollama.GenerateResponse, None, None]:
            parts = self.client.generate(
                model=self.ollama_model, prompt=prompt, raw=True, stream=True, options=options
            )
            first = next(parts, None)
            return _prepend(first, parts)

        return self._call(start)

    def _call(self, request: Callable[[], T]) -> T:
        """Run one request, retrying while the server answers 503 (busy), then translate."""
        for delay in (*_BUSY_RETRY_DELAYS_S, None):
            try:
                return request()
            except ollama.ResponseError as exc:
                if exc.status_code != 503 or delay is None:
                    raise _engine_error(exc) from None
                time.sleep(delay)
            except (ConnectionError, httpx.HTTPError) as exc:
                raise EngineError(f"Ollama at {self.host}: {exc}") from None
        raise AssertionError("unreachable")

    def capacity(self) -> dict[str, Any]:
        return {
            "slots": self._slots,
            "device": self.host,
            "ollama_model": self.ollama_model,
        }

    def unload(self) -> None:
        if self._client is not None:
            cast(Any, self._client).close()  # untyped in the client
            self._client = None


def _prepend(
    first: ollama.GenerateResponse | None, rest: Iterator[ollama.GenerateResponse]
) -> Generator[ollama.GenerateResponse, None, None]:
    try:
        if first is not None:
            yield first
            yield from rest
    finally:
        # The client's stream is a generator holding the open response in a `with` block.
        close: Callable[[], None] | None = getattr(rest, "close", None)
        if close is not None:
            close()


def _tokens(parts: Iterator[ollama.GenerateResponse]) -> Iterator[GeneratedToken]:
    """Ollama's chunks as tokens; an `{"error": ...}` line mid-stream fails the job.

    Ollama sends one chunk per token but may merge a few (held back for a stop sequence or a
    split UTF-8 character). Its final `eval_count` is the true number of tokens, so the missing
    ones are yielded as empty tokens: usage then matches Ollama's count, and a generation cut
    by `num_predict` (`done_reason: "length"`) reaches max_tokens, which the runner reports
    as finish_reason "length".
    """
    produced = 0
    try:
        for part in parts:
            if part.response:
                produced += 1
                yield GeneratedToken(id=produced - 1, text=part.response)
            if part.done:
                for index in range(produced, part.eval_count or produced):
                    yield GeneratedToken(id=index, text="")
                return
    except ollama.ResponseError as exc:
        raise _engine_error(exc) from None
    except httpx.HTTPError as exc:
        raise EngineError(f"the Ollama stream broke: {exc}") from None
    raise EngineError("the Ollama stream ended without its final `done` object")


def _engine_error(exc: ollama.ResponseError) -> EngineError:
    status = f"HTTP {exc.status_code}" if exc.status_code > 0 else "in the stream"
    code = {404: "model_not_found", 503: "engine_busy"}.get(exc.status_code, "engine_error")
    return EngineError(f"Ollama error ({status}): {exc.error}", code=code)
