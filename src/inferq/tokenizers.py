"""Tokenizers and chat templates, so the API counts tokens exactly as the worker will."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from inferq.catalog import ModelSpec
from inferq.chat_templates import template_for
from inferq.errors import InvalidRequest


class Tokenizer(Hashable, Protocol):
    """Hashable by identity: token counts are memoized per tokenizer (job_service)."""

    def encode(self, text: str) -> list[int]: ...

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str: ...

    def grammar_parses(self, grammar: str) -> bool: ...


def llama_encode(llm: Any, text: str) -> list[int]:
    """Tokenize as llama.cpp's server does: special tokens parsed, one BOS at the start.

    A prompt rendered from the chat template already begins with the BOS text; adding
    another would change the model's output.
    """
    bos = llm.token_bos()
    tokens: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if bos >= 0 and (not tokens or tokens[0] != bos):
        tokens.insert(0, bos)
    return tokens


class LlamaTokenizer:
    """The vocabulary of a GGUF model (no weights), and its embedded chat template."""

    def __init__(self, path: Path):
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self._llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        template = template_for(self._llm.metadata)
        if not template:
            raise ValueError(f"{path} has no chat template")
        self._formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self._token_text(self._llm.token_eos()),
            bos_token=self._token_text(self._llm.token_bos()),
            add_generation_prompt=True,
        )
        self._lock = threading.Lock()

    def _token_text(self, token: int) -> str:
        text: str = self._llm.detokenize([token], special=True).decode("utf-8", errors="replace")
        return text

    def encode(self, text: str) -> list[int]:
        with self._lock:
            return llama_encode(self._llm, text)

    def grammar_parses(self, grammar: str) -> bool:
        """Whether llama.cpp would compile this GBNF against this vocabulary, as a worker will."""
        import llama_cpp

        with self._lock:
            vocab = self._llm._model.vocab
            sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
            if not sampler:  # a NULL pointer: the GBNF did not parse
                return False
            llama_cpp.llama_sampler_free(sampler)
            return True

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str:
        from jinja2 import TemplateError

        try:
            merged = cast(Any, same_roles_merged(messages))
            prompt: str = self._formatter(messages=merged).prompt
        except (TemplateError, ValueError) as exc:  # the template raises ValueError itself
            raise InvalidRequest(f"messages: {exc}", param="messages") from exc
        return prompt


def same_roles_merged(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive messages of one role as one, their contents a blank line apart.

    OpenAI and Ollama take two system messages, or two user messages, in a row (context,
    then the question); templates such as Gemma's raise unless the roles alternate.
    """
    merged: list[dict[str, Any]] = []
    for message in messages:
        if merged and merged[-1]["role"] == message["role"]:
            merged[-1] = {
                **merged[-1],
                "content": f"{merged[-1]['content']}\n\n{message['content']}",
            }
        else:
            merged.append(dict(message))
    return merged


class WordTokenizer:
    """The echo model's tokenizer: one token per whitespace-separated word."""

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def render_chat(self, messages: Sequence[dict[str, Any]]) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in messages)

    def grammar_parses(self, grammar: str) -> bool:
        return True  # the echo engine constrains nothing


class Tokenizers:
    """One tokenizer per model, loaded on first use and kept."""

    def __init__(self) -> None:
        self._loaded: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()

    def loaded(self, spec: ModelSpec) -> Tokenizer | None:
        """The tokenizer if it is loaded already: a dict read, safe without the lock."""
        return self._loaded.get(spec.name)

    def get(self, spec: ModelSpec) -> Tokenizer:
        """The tokenizer, loading it first (seconds for a large vocabulary: call off the loop)."""
        with self._lock:
            if spec.name not in self._loaded:
                self._loaded[spec.name] = _load(spec)
            return self._loaded[spec.name]


def _load(spec: ModelSpec) -> Tokenizer:
    if spec.vocab is not None:
        return LlamaTokenizer(spec.vocab)
    return WordTokenizer()
