"""Turn the bundled Gemma 3 GGUF into a folder mlx-lm can load: safetensors, config, tokenizer.

MLX cannot read Q4_K GGUF blocks. The tensors are dequantized once with the `gguf` package
(the exact values llama.cpp computes with), renamed from llama.cpp's names to Hugging Face's,
and written as float32 safetensors beside a Gemma 3 text config built from the GGUF metadata.
The tokenizer is rebuilt from the vocabulary inside the GGUF by transformers (no hub download).

llama.cpp's converter stores Gemma's RMSNorm weights as `1 + w` (Gemma scales by `1 + w`);
Hugging Face and mlx-lm store `w`, so every norm weight gets 1 subtracted back.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

CONVERTED_MARK = "inferq-converted.json"
# Bump when the output layout changes, so an old folder is rebuilt rather than trusted.
FORMAT_VERSION = 1

_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "attn_norm": "input_layernorm",
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm"}

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def hf_name(gguf_name: str) -> str:
    """The Hugging Face Gemma 3 name of a llama.cpp tensor name."""
    stem, _, suffix = gguf_name.rpartition(".")
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    parts = stem.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_NAMES:
        return f"model.layers.{parts[1]}.{_LAYER_NAMES[parts[2]]}.{suffix}"
    raise ValueError(f"no Hugging Face name for GGUF tensor {gguf_name!r}")


def is_converted(folder: Path, source: Path) -> bool:
    """True when `folder` holds a complete conversion of this very source file."""
    mark = folder / CONVERTED_MARK
    if not mark.exists():
        return False
    info = json.loads(mark.read_text())
    stat = source.stat()
    return bool(
        info.get("format") == FORMAT_VERSION
        and info.get("source_size") == stat.st_size
        and info.get("source_name") == source.name
    )


def convert_gguf(source: Path, target: Path, progress: Progress = _stderr) -> Path:
    """Convert once; a complete earlier conversion of the same file is reused as is."""
    if is_converted(target, source):
        progress(f"{target} is already converted")
        return target
    started = time.monotonic()
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    progress(f"reading {source.name} (its 262k-entry vocabulary takes a while to parse)...")
    reader = _reader(source)
    metadata = _metadata(reader)
    if metadata.get("general.architecture") != "gemma3":
        raise ValueError(f"{source.name}: only Gemma 3 GGUF files convert for MLX")
    _write_weights(reader, partial, progress)
    vocab_size = _vocab_size(reader)
    (partial / "config.json").write_text(json.dumps(hf_config(metadata, vocab_size), indent=2))
    progress("rebuilding the tokenizer from the GGUF vocabulary...")
    _write_tokenizer(source, partial)
    mark = {"format": FORMAT_VERSION, "source_name": source.name}
    mark["source_size"] = source.stat().st_size
    (partial / CONVERTED_MARK).write_text(json.dumps(mark))
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    progress(f"converted {source.name} -> {target} in {time.monotonic() - started:.1f} s")
    return target


def _reader(source: Path) -> Any:
    from gguf import GGUFReader

    return GGUFReader(str(source))


def _metadata(reader: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and not key.endswith("_id"):
            continue  # the vocabulary arrays are read by the tokenizer step, not needed here
        try:
            values[key] = field.contents()
        except (ValueError, IndexError):
            continue
    return values


def dequantized(reader: Any) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
    """Every tensor as float32 under its Hugging Face name, norms shifted back by -1."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    for tensor in reader.tensors:
        name = hf_name(tensor.name)
        if tensor.tensor_type == GGMLQuantizationType.F32:
            array = np.asarray(tensor.data, dtype=np.float32)
        else:
            array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        # GGUF lists dimensions innermost first; numpy wants them outermost first.
        array = array.reshape(tuple(reversed([int(d) for d in tensor.shape])))
        if name.endswith("norm.weight"):
            array = array - np.float32(1.0)
        yield name, np.ascontiguousarray(array)


def _write_weights(reader: Any, folder: Path, progress: Progress) -> None:
    from safetensors.numpy import save_file

    total = len(reader.tensors)
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    started = time.monotonic()
    for done, (name, array) in enumerate(dequantized(reader), start=1):
        tensors[name] = array
        if done % 24 == 0 or done == total:
            progress(
                f"dequantizing: {done}/{total} tensors ({100 * done / total:5.1f} %, "
                f"{time.monotonic() - started:4.1f} s)"
            )
    progress("writing model.safetensors...")
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "mlx"})


def _vocab_size(reader: Any) -> int:
    embedding = next(t for t in reader.tensors if t.name == "token_embd.weight")
    return int(embedding.shape[-1])


def hf_config(meta: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """A Hugging Face `gemma3_text` config from GGUF metadata.

    The local-attention rope base (10 000) and the every-6th-layer global attention are not in
    the GGUF; llama.cpp hard-codes them for Gemma 3, and so do we.
    """
    prefix = "gemma3."
    head_dim = int(meta[prefix + "attention.key_length"])
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        "hidden_size": int(meta[prefix + "embedding_length"]),
        "intermediate_size": int(meta[prefix + "feed_forward_length"]),
        "num_hidden_layers": int(meta[prefix + "block_count"]),
        "num_attention_heads": int(meta[prefix + "attention.head_count"]),
        "num_key_value_heads": int(meta[prefix + "attention.head_count_kv"]),
        "head_dim": head_dim,
        "rms_norm_eps": float(meta[prefix + "attention.layer_norm_rms_epsilon"]),
        "rope_theta": float(meta[prefix + "rope.freq_base"]),
        "rope_local_base_freq": 10000.0,
        "sliding_window": int(meta[prefix + "attention.sliding_window"]),
        "sliding_window_pattern": 6,
        "max_position_embeddings": int(meta[prefix + "context_length"]),
        "query_pre_attn_scalar": head_dim,
        "vocab_size": vocab_size,
        "hidden_activation": "gelu_pytorch_tanh",
        "tie_word_embeddings": True,
        "bos_token_id": int(meta.get("tokenizer.ggml.bos_token_id", 2)),
        "eos_token_id": int(meta.get("tokenizer.ggml.eos_token_id", 1)),
        "pad_token_id": int(meta.get("tokenizer.ggml.padding_token_id", 0)),
        "torch_dtype": "float32",
    }


def _write_tokenizer(source: Path, folder: Path) -> None:
    # transformers' GGUF reader is offline by construction: it reads the vocabulary, scores
    # and special ids from the file. (It imports torch to read the file.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer.save_pretrained(str(folder))
