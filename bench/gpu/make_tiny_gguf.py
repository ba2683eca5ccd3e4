"""Write a tiny llama-architecture GGUF (a few MB, random weights) for the GPU pinning check.

The weights are random, so the text it generates is garbage; what matters is that llama.cpp
loads it, tokenizes with a real tokenizer and runs every layer (on the CPU or offloaded to CUDA).
The tokenizer metadata (tokens, merges, token types, special ids, chat template) is copied from
the SmolLM2 GGUF that `make setup` fetches, so chat completions use its real template.

    pip install gguf   # or PYTHONPATH=<llama-cpp-python sdist>/vendor/llama.cpp/gguf-py
    python bench/gpu/make_tiny_gguf.py [--source models/SmolLM2-135M-Instruct.Q4_1.gguf] \
        [--out bench/gpu/tiny.gguf]
"""

from __future__ import annotations

import argparse

import gguf
import numpy as np

N_EMBD = 64
N_HEAD = 2
N_HEAD_KV = 2
N_FF = 128
N_LAYER = 2
N_CTX_TRAIN = 2048


def copy_tokenizer(reader: gguf.GGUFReader, writer: gguf.GGUFWriter) -> int:
    """Copy every tokenizer.* key; return the vocabulary size."""
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        writer.add_key_value(key, value, vtype, sub_type)
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    if not n_vocab:
        raise SystemExit("the source GGUF has no tokenizer.ggml.tokens")
    return n_vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="models/SmolLM2-135M-Instruct.Q4_1.gguf")
    parser.add_argument("--out", default="bench/gpu/tiny.gguf")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    reader = gguf.GGUFReader(args.source)
    writer = gguf.GGUFWriter(args.out, "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = copy_tokenizer(reader, writer)
    writer.add_vocab_size(n_vocab)

    rng = np.random.default_rng(args.seed)

    def weight(*shape: int) -> np.ndarray:  # numpy shape = ggml ne reversed: (out, in)
        return (rng.standard_normal(shape) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(N_EMBD, dtype=np.float32)

    n_kv = N_EMBD // N_HEAD * N_HEAD_KV
    writer.add_tensor("token_embd.weight", weight(n_vocab, N_EMBD))
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_kv, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_kv, N_EMBD))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(N_EMBD, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(N_FF, N_EMBD))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(N_EMBD, N_FF))
    writer.add_tensor("output_norm.weight", norm())
    # No output.weight: llama.cpp ties the output to token_embd, as SmolLM2 does.

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {args.out}: vocab {n_vocab}, n_embd {N_EMBD}, {N_LAYER} layers")


if __name__ == "__main__":
    main()
