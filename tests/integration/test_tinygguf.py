"""The tiny gemma3 GGUF: read back with gguf's own reader, and served by a real llama-server."""

from __future__ import annotations

import functools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import httpx
import jinja2
import numpy as np
import pytest

from lemfleet.testbed.tinygguf import GEMMA3_CHAT_TEMPLATE, TinyShape, main, write_tiny_gemma3


@functools.lru_cache(maxsize=8)
def _reader(path: Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(path)  # parsing 32000 tokens takes seconds: once per file


def _fields(path: Path) -> tuple[dict[str, object], dict[str, tuple[int, ...]]]:
    reader = _reader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    shapes = {t.name: tuple(int(n) for n in t.shape) for t in reader.tensors}
    return fields, shapes


def test_metadata_has_every_key_the_gemma3_loader_reads(tiny_gguf: Path) -> None:
    fields, _ = _fields(tiny_gguf)
    assert fields["general.architecture"] == "gemma3"
    assert fields["general.name"] == "LEM-Gemma3-tiny-test"
    expected = {
        "gemma3.context_length": 8192,
        "gemma3.embedding_length": 64,
        "gemma3.block_count": 2,
        "gemma3.feed_forward_length": 256,
        "gemma3.attention.head_count": 4,
        "gemma3.attention.head_count_kv": 1,
        "gemma3.attention.key_length": 16,
        "gemma3.attention.value_length": 16,
        "gemma3.attention.sliding_window": 512,
        "gemma3.rope.freq_base": 1_000_000.0,
        "gemma3.rope.freq_base_swa": 10_000.0,
    }
    assert {key: fields[key] for key in expected} == expected
    assert fields["gemma3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert fields["tokenizer.ggml.model"] == "llama"
    tokens = fields["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list) and len(tokens) == 32000 and tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert (fields["tokenizer.ggml.bos_token_id"], fields["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert fields["tokenizer.chat_template"] == GEMMA3_CHAT_TEMPLATE


def test_tensors_are_gemma3_tensors_with_loader_shapes(tiny_gguf: Path) -> None:
    _, shapes = _fields(tiny_gguf)
    # Shapes as ggml's ne (fastest dimension first), as in src/models/gemma3.cpp.
    embd, q, kv, head, ff, vocab = 64, 64, 16, 16, 256, 32000
    per_layer = {
        "attn_norm": (embd,),
        "attn_q": (embd, q),
        "attn_k": (embd, kv),
        "attn_v": (embd, kv),
        "attn_q_norm": (head,),
        "attn_k_norm": (head,),
        "attn_output": (q, embd),
        "post_attention_norm": (embd,),
        "ffn_norm": (embd,),
        "ffn_gate": (embd, ff),
        "ffn_up": (embd, ff),
        "ffn_down": (ff, embd),
        "post_ffw_norm": (embd,),
    }
    expected = {"token_embd.weight": (embd, vocab), "output_norm.weight": (embd,)}
    for layer in range(2):
        expected |= {f"blk.{layer}.{name}.weight": shape for name, shape in per_layer.items()}
    assert shapes == expected
    known = {
        gguf.TENSOR_NAMES[t].format(bid=layer) + ".weight"
        for t in gguf.MODEL_TENSORS[gguf.MODEL_ARCH.GEMMA3]
        for layer in range(2)
    }
    assert set(shapes) <= known


def test_same_seed_same_bytes_other_seed_other_weights(tmp_path: Path, vocab_gguf: Path) -> None:
    first = write_tiny_gemma3(tmp_path / "a.gguf", vocab_gguf, seed=7)
    second = write_tiny_gemma3(tmp_path / "b.gguf", vocab_gguf, seed=7)
    third = write_tiny_gemma3(tmp_path / "c.gguf", vocab_gguf, seed=8)
    assert first.read_bytes() == second.read_bytes()
    assert first.read_bytes() != third.read_bytes()
    assert first.stat().st_size == third.stat().st_size


def test_shape_parameters_make_bigger_models(tmp_path: Path, vocab_gguf: Path) -> None:
    shape = TinyShape(layers=3, embd=128, heads=8, kv_heads=2, ff=320)
    fields, shapes = _fields(write_tiny_gemma3(tmp_path / "m.gguf", vocab_gguf, shape=shape))
    assert fields["gemma3.block_count"] == 3
    assert fields["gemma3.attention.key_length"] == 16
    assert shapes["blk.2.attn_k.weight"] == (128, 32)
    assert shapes["blk.2.ffn_down.weight"] == (320, 128)
    reader = _reader(tmp_path / "m.gguf")
    norms = [t for t in reader.tensors if t.name.endswith("_norm.weight")]
    assert all(np.allclose(t.data, 1.0, atol=0.1) for t in norms)


def test_bad_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="kv_heads=3 must divide heads=4"):
        TinyShape(kv_heads=3)
    with pytest.raises(ValueError, match="embd=65 must be divisible by heads=4"):
        TinyShape(embd=65)


def test_cli_writes_the_file(tmp_path: Path, vocab_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.gguf"
    assert main([str(out), "--layers", "1", "--embd", "32", "--vocab-gguf", str(vocab_gguf)]) == 0
    assert str(out) in capsys.readouterr().out
    fields, _ = _fields(out)
    assert (fields["gemma3.block_count"], fields["gemma3.embedding_length"]) == (1, 32)


def test_chat_template_renders_gemma_turns() -> None:
    env = jinja2.Environment()

    def raise_exception(message: str) -> None:
        raise ValueError(message)

    template = env.from_string(GEMMA3_CHAT_TEMPLATE)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " Hello "},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "Bye"},
    ]
    text = template.render(
        messages=messages,
        bos_token="<s>",
        add_generation_prompt=True,
        raise_exception=raise_exception,
    )
    assert text == (
        "<s><start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )


def test_llama_server_loads_it_and_answers_a_chat(
    llama_server_bin: Path, tiny_gguf: Path, free_port: Callable[[], int]
) -> None:
    port = free_port()
    command = [str(llama_server_bin), "-m", str(tiny_gguf), "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen([*command, "-c", "256", "-t", "1"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama-server did not become healthy in 60 s"
            time.sleep(0.2)
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 8},
            timeout=30,
        )
        assert chat.status_code == 200, chat.text
        answer = chat.json()
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["choices"][0]["message"]["content"].strip()
        assert answer["usage"]["completion_tokens"] == 8
        props = httpx.get(f"{base}/props", timeout=5).json()
        assert props["chat_template"] == GEMMA3_CHAT_TEMPLATE
    finally:
        server.terminate()
        server.wait(timeout=10)
