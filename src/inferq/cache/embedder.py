"""The L2 view of the process's embedder (`inferq.embeddings`, all-MiniLM-L6-v2).

The /v1/embeddings embedder already loads the model offline, batches concurrent callers and
encodes off the event loop; L2 shares that one model and adds the window rule: a text longer
than the model's 256 word pieces would be silently truncated, so it is not eligible.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt

from inferq.embeddings import DIMENSIONS, MAX_TOKENS

__all__ = ["DIMENSIONS", "MAX_TOKENS", "SemanticEmbedder", "TextEmbedder", "Vector"]

Vector = npt.NDArray[np.float32]
# Below this many characters a text cannot exceed the window (a word piece is at least one
# character, and [CLS]/[SEP] are two), so counting its tokens is skipped.
_SURELY_FITS_CHARS = MAX_TOKENS - 2


class TextEmbedder(Protocol):
    @property
    def ready(self) -> bool: ...

    async def count_tokens(self, texts: list[str]) -> list[int]: ...

    async def embed(self, texts: list[str]) -> npt.NDArray[np.float32]: ...


class SemanticEmbedder:
    def __init__(self, embedder: TextEmbedder):
        self._embedder = embedder

    @property
    def ready(self) -> bool:
        return self._embedder.ready

    def surely_fits(self, text: str) -> bool:
        """True when `text` cannot exceed the window, without counting its word pieces."""
        return len(text) <= _SURELY_FITS_CHARS

    async def embed(self, text: str) -> Vector | None:
        """The unit vector of `text`, or None when it does not fit the embedder's window."""
        if not self.surely_fits(text):
            (count,) = await self._embedder.count_tokens([text])
            if count > MAX_TOKENS:
                return None
        vectors = await self._embedder.embed([text])
        return np.asarray(vectors[0], dtype=np.float32)
