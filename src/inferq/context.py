"""Fit a prompt into a model's context: head/tail compaction, counted with its tokenizer.

A chat keeps its system prompt and first turn (the head) and its most recent turns (the
tail); turns are dropped from the middle, whole user/assistant pairs at a time so roles still
alternate, and the cut is marked in the text the model sees. A plain prompt keeps its first
and last parts with a marker between them. Every count is of the final rendered prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inferq.errors import ContextLengthExceeded
from inferq.tokenizers import Tokenizer

TEXT_CUT_MARK = "\n[…]\n"
_HEAD_SHARE = 0.4  # of a plain prompt's budget; the tail (usually the question) gets the rest
_FIT_ATTEMPTS = 8

Message = dict[str, Any]


@dataclass(frozen=True)
class Fitted:
    """A prompt that fits, and what it cost to make it fit."""

    prompt: str
    messages: list[Message] | None
    original_tokens: int
    effective_tokens: int
    truncated: bool
    dropped_messages: int = 0


def cut_mark(dropped: int) -> str:
    return f"[… {dropped} earlier messages omitted …]\n\n"


def fit_text(tokenizer: Tokenizer, text: str, budget: int) -> Fitted:
    """`text` itself if it fits in `budget` tokens, else its head and tail around a marker."""
    original = len(tokenizer.encode(text))
    if original <= budget:
        return Fitted(text, None, original, original, truncated=False)
    compacted = _compact_text(tokenizer, text, budget, original)
    return Fitted(compacted, None, original, len(tokenizer.encode(compacted)), truncated=True)


def _compact_text(tokenizer: Tokenizer, text: str, budget: int, tokens: int) -> str:
    mark_tokens = len(tokenizer.encode(TEXT_CUT_MARK))
    if budget <= mark_tokens + 2:
        raise _too_long(budget, tokens)
    chars_per_token = len(text) / max(tokens, 1)
    for _ in range(_FIT_ATTEMPTS):
        keep = (budget - mark_tokens) * chars_per_token
        head, tail = int(keep * _HEAD_SHARE), int(keep * (1 - _HEAD_SHARE))
        candidate = text[:head] + TEXT_CUT_MARK + (text[-tail:] if tail else "")
        count = len(tokenizer.encode(candidate))
        if count <= budget:
            return candidate
        chars_per_token *= budget / count * 0.97
    raise _too_long(budget, tokens)


def fit_messages(tokenizer: Tokenizer, messages: Sequence[Message], budget: int) -> Fitted:
    """The chat rendered whole if it fits, else compacted by head and tail.

    In order, until it fits: drop middle turns (oldest first), drop the first turn too,
    compact the last message's text. The system prompt is never dropped.
    """
    messages = [dict(m) for m in messages]
    prompt = tokenizer.render_chat(messages)
    original = len(tokenizer.encode(prompt))
    if original <= budget:
        return Fitted(prompt, messages, original, original, truncated=False)
    for attempt in (_drop_middle, _drop_first_turn_too, _compact_last):
        fitted = attempt(tokenizer, messages, budget)
        if fitted is not None:
            return _with_original(fitted, original)
    raise _too_long(budget, original)


def _with_original(fitted: Fitted, original: int) -> Fitted:
    return Fitted(
        fitted.prompt,
        fitted.messages,
        original,
        fitted.effective_tokens,
        truncated=True,
        dropped_messages=fitted.dropped_messages,
    )


def head_length(messages: Sequence[Message]) -> int:
    """How many leading messages form the head: the system prompt and the first turn."""
    index = 1 if messages and messages[0]["role"] == "system" else 0
    if index < len(messages) - 1 and messages[index]["role"] == "user":
        index += 1
        if index < len(messages) - 1 and messages[index]["role"] == "assistant":
            index += 1
    return index


def _drop(messages: list[Message], start: int, count: int) -> list[Message]:
    """Remove `count` messages from `start` and mark the cut on the message after it."""
    kept = messages[:start] + [dict(m) for m in messages[start + count :]]
    if count:
        kept[start]["content"] = cut_mark(count) + str(kept[start]["content"])
    return kept


def _render(tokenizer: Tokenizer, messages: list[Message], dropped: int) -> Fitted:
    prompt = tokenizer.render_chat(messages)
    count = len(tokenizer.encode(prompt))
    return Fitted(prompt, messages, count, count, truncated=True, dropped_messages=dropped)


def _drop_middle(tokenizer: Tokenizer, messages: list[Message], budget: int) -> Fitted | None:
    head = head_length(messages)
    pairs = (len(messages) - 1 - head) // 2
    # The fewest pairs whose removal fits: token counts fall as pairs go, so bisect.
    low, high, best = 1, pairs, None
    while low <= high:
        middle = (low + high) // 2
        fitted = _render(tokenizer, _drop(messages, head, 2 * middle), 2 * middle)
        if fitted.effective_tokens <= budget:
            best, high = fitted, middle - 1
        else:
            low = middle + 1
    return best


def _drop_first_turn_too(
    tokenizer: Tokenizer, messages: list[Message], budget: int
) -> Fitted | None:
    start = 1 if messages[0]["role"] == "system" else 0
    dropped = len(messages) - 1 - start
    if dropped <= 0 or dropped % 2:
        return None  # roles would no longer alternate
    fitted = _render(tokenizer, _drop(messages, start, dropped), dropped)
    return fitted if fitted.effective_tokens <= budget else None


def _compact_last(tokenizer: Tokenizer, messages: list[Message], budget: int) -> Fitted | None:
    start = 1 if messages[0]["role"] == "system" else 0
    dropped = len(messages) - 1 - start if (len(messages) - 1 - start) % 2 == 0 else 0
    kept = _drop(messages, start, dropped)
    last = kept[-1]
    overhead = _render(tokenizer, [*kept[:-1], {**last, "content": ""}], dropped)
    room = budget - overhead.effective_tokens - 2
    if room <= 0:
        return None
    try:
        content = fit_text(tokenizer, str(last["content"]), room).prompt
    except ContextLengthExceeded:
        return None
    fitted = _render(tokenizer, [*kept[:-1], {**last, "content": content}], dropped)
    return fitted if fitted.effective_tokens <= budget else None


def _too_long(budget: int, tokens: int) -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"The prompt has {tokens} tokens and cannot be compacted to the {budget} tokens left "
        "after reserving max_tokens.",
        param="prompt",
    )
