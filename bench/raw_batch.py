"""Raw multi-sequence decoding in llama.cpp, no inferq: what batching can give on this machine.

    python bench/raw_batch.py           # llama.cpp's defaults: repacked weights, tiled matmul
    python bench/raw_batch.py --exact   # the kernels of inferq's exact mode
    python bench/raw_batch.py --exact --repack   # exact mode but for one setting

`--repack` / `--no-repack` (repacked weights) and `--unified` / `--no-unified` (one KV stream
for all sequences) override what the mode would choose, to tell which setting costs what.

Each of 1, 2, 4, 8 sequences reads a one-token prompt, then every step decodes one token for
each of them in a single `llama_decode` (greedy, the argmax of the logits), `--steps` steps.
Prints tokens/s per level and the 8 / 1 ratio. Each level runs in a fresh process, as ggml
reads `GGML_CPU_TILED_MM` once per process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from inferq.catalog import BUNDLED_MODEL, resolve_model
from inferq.settings import get_settings

# The bundled model where `inferq models assemble` put it (INFERQ_MODEL_DIR).
MODEL = Path(str(resolve_model(get_settings(), BUNDLED_MODEL).path))


def _level(n: int, steps: int, exact: bool, repack: bool, unified: bool) -> float:
    if exact:
        os.environ["GGML_CPU_TILED_MM"] = "0"
    import llama_cpp
    import numpy as np

    from inferq.workers.llamacpp import GGML_TYPE_BF16

    llama_cpp.llama_backend_init()
    mparams = llama_cpp.llama_model_default_params()
    mparams.use_extra_bufts = repack
    model = llama_cpp.llama_model_load_from_file(str(MODEL).encode(), mparams)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = 1024 * n
    cparams.n_batch = cparams.n_ubatch = 512
    cparams.n_seq_max = n
    cparams.kv_unified = unified
    cparams.n_threads = cparams.n_threads_batch = os.cpu_count() or 1
    if exact:
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        cparams.type_k = cparams.type_v = GGML_TYPE_BF16
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    batch = llama_cpp.llama_batch_init(max(n, 8), 0, 1)
    tokens = [llama_cpp.llama_vocab_bos(vocab)] * n
    start = 0.0
    for step in range(steps + 1):
        if step == 1:
            start = time.perf_counter()  # the first step reads the prompts
        for i in range(n):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = tokens[i], step, 1
            batch.seq_id[i][0], batch.logits[i] = i, True
        batch.n_tokens = n
        if llama_cpp.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        for i in range(n):
            logits = llama_cpp.llama_get_logits_ith(ctx, i)
            tokens[i] = int(np.argmax(np.ctypeslib.as_array(logits, shape=(n_vocab,))))
    rate = n * steps / (time.perf_counter() - start)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--exact", action="store_true")
    parser.add_argument("--steps", type=int, default=96)
    parser.add_argument("--repack", action=argparse.BooleanOptionalAction)
    parser.add_argument("--unified", action=argparse.BooleanOptionalAction)
    parser.add_argument("--level", type=int, help=argparse.SUPPRESS)  # one level, in-process
    args = parser.parse_args()
    repack = not args.exact if args.repack is None else args.repack
    unified = not args.exact if args.unified is None else args.unified
    if args.level:
        print(f"{_level(args.level, args.steps, args.exact, repack, unified):.2f}")
        return
    label = "exact" if args.exact else "default"
    label += f" repack={'on' if repack else 'off'} unified={'on' if unified else 'off'}"
    rates = {}
    for n in (1, 2, 4, 8):
        command = [sys.executable, __file__, "--level", str(n), "--steps", str(args.steps)]
        command += ["--exact"] if args.exact else []
        command += ["--repack" if repack else "--no-repack"]
        command += ["--unified" if unified else "--no-unified"]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        rates[n] = float(done.stdout.strip().splitlines()[-1])
        print(f"{label} n={n}: {rates[n]:7.1f} tok/s", flush=True)
    print(f"8 / 1: {rates[8] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
