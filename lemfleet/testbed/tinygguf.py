"""Write a small but real ``gemma3`` GGUF with random weights.

The hub is out of reach on development and CI machines, yet the deploy, the
smoke test and the model transfer all need a GGUF that ``llama-server`` really
loads and answers with. This module builds one with the ``gguf`` package: the
gemma3 hyperparameters and tensors that llama.cpp's loader asks for, the SPM
vocabulary from llama.cpp's ``models/ggml-vocab-llama-spm.gguf`` and a Gemma
chat template. The defaults (2 layers, embedding 64) give a ~4 MiB file; larger
shapes (e.g. 8 layers x 512) make files for transfer benchmarks. The same seed
and shape always give the same bytes.

Required keys and tensor shapes follow the pinned llama.cpp:
``src/models/gemma3.cpp`` (``load_arch_hparams``/``load_arch_tensors``),
``src/llama-model.cpp`` (``llama_model_base::load_hparams``) and
``conversion/gemma.py`` (``Gemma3Model.set_gguf_parameters``).
"""

from __future__ import annotations

import argparse
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

ARCH = "gemma3"

# The chat template shipped with Gemma 3 instruction-tuned models (tokenizer_config.json):
# a system message is folded into the first user turn, assistant turns are called "model".
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    '{%- set first_user_prefix = "" -%}'
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

# Copied from the vocab file as they are; every other tokenizer key is written explicitly.
_VOCAB_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type")


@dataclass(frozen=True)
class TinyShape:
    """The model's dimensions. ``head_dim`` defaults to ``embd // heads``."""

    layers: int = 2
    embd: int = 64
    heads: int = 4
    kv_heads: int = 1
    ff: int = 0  # 0 means 4 x embd
    head_dim: int = 0
    context: int = 8192
    sliding_window: int = 512

    def __post_init__(self) -> None:
        problems = [
            f"{name}={value} must be at least 1"
            for name, value in (("layers", self.layers), ("embd", self.embd), ("heads", self.heads))
            if value < 1
        ]
        if self.kv_heads < 1 or self.heads % self.kv_heads:
            problems.append(f"kv_heads={self.kv_heads} must divide heads={self.heads}")
        if not self.head_dim and self.embd % self.heads:
            problems.append(f"embd={self.embd} must be divisible by heads={self.heads}")
        if problems:
            raise ValueError("invalid tiny gemma3 shape: " + "; ".join(problems))

    @property
    def n_ff(self) -> int:
        return self.ff or 4 * self.embd

    @property
    def n_head_dim(self) -> int:
        return self.head_dim or self.embd // self.heads


def default_vocab_path() -> Path | None:
    """The SPM vocab inside a llama.cpp tree named by ``LEMFLEET_LLAMA_CPP_SRC``, if set."""
    src = os.environ.get("LEMFLEET_LLAMA_CPP_SRC")
    return Path(src) / "models" / "ggml-vocab-llama-spm.gguf" if src else None


@functools.lru_cache(maxsize=4)
def _read_vocab(vocab_gguf: Path) -> tuple[dict[str, list], dict[str, int]]:
    """The vocab's token arrays and special ids; cached, as parsing it takes seconds."""
    reader = gguf.GGUFReader(vocab_gguf)
    model = reader.fields.get("tokenizer.ggml.model")
    if model is None or model.contents() != "llama":
        raise ValueError(f"{vocab_gguf} is not a SentencePiece (tokenizer.ggml.model=llama) vocab")
    arrays = {key: reader.fields[key].contents() for key in _VOCAB_ARRAYS}
    ids = {key: int(reader.fields[f"tokenizer.ggml.{key}_token_id"].contents()) for key in ("bos", "eos", "unknown")}
    return arrays, ids


def _tensors(shape: TinyShape, n_vocab: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """Name and data of every tensor, in llama.cpp's order. Numpy shapes are ggml's reversed."""
    rng = np.random.default_rng(seed)
    q_dim = shape.heads * shape.n_head_dim
    kv_dim = shape.kv_heads * shape.n_head_dim

    def weight(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm(size: int) -> np.ndarray:
        # Gemma's RMSNorm multiplies by (1 + w); the converter stores 1 + w, so ~1.0 is neutral.
        return (1.0 + rng.standard_normal(size, dtype=np.float32) * 0.01).astype(np.float32)

    tensors: list[tuple[str, np.ndarray]] = [
        ("token_embd.weight", weight(n_vocab, shape.embd)),
        ("output_norm.weight", norm(shape.embd)),
    ]
    for i in range(shape.layers):
        blk = f"blk.{i}"
        tensors += [
            (f"{blk}.attn_norm.weight", norm(shape.embd)),
            (f"{blk}.attn_q.weight", weight(q_dim, shape.embd)),
            (f"{blk}.attn_k.weight", weight(kv_dim, shape.embd)),
            (f"{blk}.attn_v.weight", weight(kv_dim, shape.embd)),
            (f"{blk}.attn_q_norm.weight", norm(shape.n_head_dim)),
            (f"{blk}.attn_k_norm.weight", norm(shape.n_head_dim)),
            (f"{blk}.attn_output.weight", weight(shape.embd, q_dim)),
            (f"{blk}.post_attention_norm.weight", norm(shape.embd)),
            (f"{blk}.ffn_norm.weight", norm(shape.embd)),
            (f"{blk}.ffn_gate.weight", weight(shape.n_ff, shape.embd)),
            (f"{blk}.ffn_up.weight", weight(shape.n_ff, shape.embd)),
            (f"{blk}.ffn_down.weight", weight(shape.embd, shape.n_ff)),
            (f"{blk}.post_ffw_norm.weight", norm(shape.embd)),
        ]
    return tensors


def write_tiny_gemma3(
    out: Path,
    vocab_gguf: Path,
    *,
    shape: TinyShape | None = None,
    name: str = "LEM-Gemma3-tiny-test",
    seed: int = 0,
) -> Path:
    """Write a gemma3 GGUF with random weights to ``out`` and return its path.

    The output token projection is left out, so llama.cpp ties it to
    ``token_embd`` exactly as in Gemma 3 checkpoints.
    """
    shape = shape or TinyShape()
    arrays, ids = _read_vocab(Path(vocab_gguf).resolve())
    n_vocab = len(arrays["tokenizer.ggml.tokens"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(out, ARCH)
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(shape.context)
    writer.add_embedding_length(shape.embd)
    writer.add_block_count(shape.layers)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.heads)
    writer.add_head_count_kv(shape.kv_heads)
    writer.add_key_length(shape.n_head_dim)
    writer.add_value_length(shape.n_head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)  # global layers
    writer.add_rope_freq_base_swa(10_000.0)  # sliding-window layers
    writer.add_sliding_window(shape.sliding_window)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(arrays["tokenizer.ggml.tokens"])
    writer.add_token_scores(arrays["tokenizer.ggml.scores"])
    writer.add_token_types(arrays["tokenizer.ggml.token_type"])
    writer.add_bos_token_id(ids["bos"])
    writer.add_eos_token_id(ids["eos"])
    writer.add_unk_token_id(ids["unknown"])
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(GEMMA3_CHAT_TEMPLATE)

    for tensor_name, data in _tensors(shape, n_vocab, seed):
        writer.add_tensor(tensor_name, data)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lemfleet.testbed.tinygguf",
        description="Write a small gemma3 GGUF with random weights that llama-server can load.",
    )
    parser.add_argument("out", type=Path, help="path of the GGUF to write")
    parser.add_argument(
        "--vocab-gguf",
        type=Path,
        default=default_vocab_path(),
        help="llama.cpp's models/ggml-vocab-llama-spm.gguf (default: from $LEMFLEET_LLAMA_CPP_SRC)",
    )
    parser.add_argument("--layers", type=int, default=TinyShape.layers)
    parser.add_argument("--embd", type=int, default=TinyShape.embd)
    parser.add_argument("--heads", type=int, default=TinyShape.heads)
    parser.add_argument("--kv-heads", type=int, default=TinyShape.kv_heads)
    parser.add_argument("--ff", type=int, default=0, help="feed-forward length (default 4 x embd)")
    parser.add_argument("--head-dim", type=int, default=0, help="default embd / heads")
    parser.add_argument("--name", default="LEM-Gemma3-tiny-test", help="general.name")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.vocab_gguf is None:
        parser.error("--vocab-gguf is required when $LEMFLEET_LLAMA_CPP_SRC is not set")
    try:
        shape = TinyShape(
            layers=args.layers,
            embd=args.embd,
            heads=args.heads,
            kv_heads=args.kv_heads,
            ff=args.ff,
            head_dim=args.head_dim,
        )
    except ValueError as err:
        parser.error(str(err))
    path = write_tiny_gemma3(args.out, args.vocab_gguf, shape=shape, name=args.name, seed=args.seed)
    print(f"{path} {path.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
