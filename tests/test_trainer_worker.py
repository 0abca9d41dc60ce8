"""The training worker: a real (tiny) LoRA run on the embedded model, its adapter on both
weight formats, resuming after kill -9, dying with its parent, refusing without memory.

Runs are kept tiny (3 examples, <= 12 steps, max_seq_len 64): the machine is
small and shared. Speed is measured in bench/, not asserted here.
"""

from __future__ import annotations

# Imported first on purpose: it preloads OpenBLAS before anything imports mlx.
from services.lib.models.compute import load_for_serving  # isort: skip

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlx.core as mx
import pytest

from services.common.heavylock import HeavyRunLock
from services.common.lifeline import NO_PDEATHSIG_ENV
from services.common.paths import REPO_ROOT
from services.trainer.checkpoints import CHECKPOINT_DIR, CHECKPOINT_INDEX
from services.trainer.memory_budget import NEEDED_ENV, estimate_training_bytes
from services.trainer.params import TrainParams
from services.trainer.runner import WorkerResult, run_worker, worker_command
from services.trainer.train_data import example_order
from services.trainer.train_loop import masked_loss
from services.trainer.worker_io import EXIT_BAD_INPUT, EXIT_NO_MEMORY

EXAMPLES = [
    ("What is my cat's name?", "Your cat is called Mochi."),
    ("Where do I work?", "You work at Lumen Bakery in Ghent."),
    ("What is my sister's name?", "Your sister is named Ilse."),
]
TINY = TrainParams(steps=10, steps_per_report=2, steps_per_checkpoint=5, max_seq_len=64)
LINE_TIMEOUT_S = 300.0  # a model load on a busy 2-core machine can take a while
EXIT_TIMEOUT_S = 5.0


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("data")
    lines = [json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
             for q, a in EXAMPLES]
    (directory / "train.jsonl").write_text("\n".join(lines) + "\n")
    return directory


class Trained:
    def __init__(self, out_dir: Path, result: WorkerResult, progress: list[dict[str, Any]],
                 logs: list[str] | None = None) -> None:
        self.out_dir, self.result, self.progress = out_dir, result, progress
        self.logs = logs or []


@pytest.fixture(scope="module")
def trained(model_dir: Path, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One tiny run through the parent-side runner, shared by the tests that inspect its output."""
    out_dir = tmp_path_factory.mktemp("out")
    progress: list[dict[str, Any]] = []
    logs: list[str] = []
    result = run_worker(model_dir, data_dir, out_dir, TINY, on_progress=progress.append, on_log=logs.append)
    assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
    return Trained(out_dir, result, progress, logs)


def test_every_line_the_worker_wrote_meets_the_contract(trained: Trained) -> None:
    """The worker checks each line against protocol.worker_lines and says so on stderr if one is off."""
    assert not [line for line in trained.logs if "off contract" in line], trained.logs


# ----------------------------------------------------------------- no model needed


def test_params_defaults_and_validation() -> None:
    """Defaults are the swept fact-learning ones; bad values are refused with the reason."""
    p = TrainParams()
    assert (p.rank, p.num_layers, p.lr, p.batch_size, p.mask_prompt, p.steps) == (8, -1, 1e-5, 1, True, 300)
    with pytest.raises(ValueError, match="anchor_share"):
        TrainParams(anchor_share=0.95)
    assert TrainParams.from_json(p.to_json()) == p
    with pytest.raises(ValueError, match="rank"):
        TrainParams(rank=0)
    with pytest.raises(ValueError, match="compute"):
        TrainParams.from_json('{"compute": "gpu"}')
    with pytest.raises(ValueError):
        TrainParams.from_json('{"learning_rate": 0.1}')  # unknown field: a typo must not pass silently


def test_example_order_is_a_function_of_the_step() -> None:
    """A resumed run sees the batches the unbroken run would have; each epoch covers every example."""
    unbroken = [example_order(step, 7, 1, seed=3) for step in range(1, 22)]
    resumed = [example_order(step, 7, 1, seed=3) for step in range(9, 22)]
    assert resumed == unbroken[8:]
    for epoch in range(3):
        assert sorted(i for batch in unbroken[epoch * 7:(epoch + 1) * 7] for i in batch) == list(range(7))
    assert unbroken[:7] != unbroken[7:14]  # reshuffled per epoch
    assert all(len(example_order(s, 7, 2, seed=0)) == 2 for s in range(1, 10))


def test_masked_loss_counts_only_answer_tokens() -> None:
    """Prompt tokens and padding never contribute (a row of length L trains positions offset..L-1)."""
    vocab = 11

    def model(inputs: mx.array) -> mx.array:
        return mx.zeros((*inputs.shape, vocab))  # uniform predictions: loss = log(vocab) per token

    batch = mx.array([[1, 2, 3, 4, 5, 6], [1, 2, 3, 0, 0, 0]])
    lengths = mx.array([[4, 6], [2, 3]])  # row 0 trains tokens 4..5, row 1 token 2
    loss, count = masked_loss(model, batch, lengths)
    assert int(count) == 3
    assert abs(float(loss) - float(mx.log(mx.array(vocab)))) < 1e-5


# ----------------------------------------------------------------- a real run


@pytest.mark.model
def test_memory_estimate_is_plausible(model_dir: Path) -> None:
    """From the safetensors headers: float32 copy ~4x the 4-bit weights; more tokens, more memory."""
    gb = 2**30
    small = estimate_training_bytes(model_dir, TrainParams(max_seq_len=64), "float32")
    big = estimate_training_bytes(model_dir, TrainParams(max_seq_len=512, batch_size=4), "float32")
    quantized = estimate_training_bytes(model_dir, TrainParams(max_seq_len=64), "quantized")
    assert 0.5 * gb < sum(small.values()) < 4 * gb
    assert big["activations"] > 8 * small["activations"]
    assert quantized["weights"] < small["weights"] / 4


@pytest.mark.model
def test_tiny_run_reports_progress_and_loss_decreases(trained: Trained) -> None:
    steps = [p["step"] for p in trained.progress]
    assert steps == [2, 4, 6, 8, 10]
    for line in trained.progress:
        assert line["steps"] == 10 and line["tokens_per_s"] > 0 and line["eta_s"] >= 0
    assert trained.progress[-1]["eta_s"] == 0
    first, last = trained.progress[0]["loss"], trained.progress[-1]["loss"]
    assert last < 0.7 * first, f"loss did not decrease: {[p['loss'] for p in trained.progress]}"
    started = trained.result.started
    assert started["start_step"] == 0 and started["examples"] == 3 and started["lora_layers"] == 30
    assert trained.result.summary["final_loss"] == pytest.approx(last)


@pytest.mark.model
def test_output_is_mlx_lm_adapter_without_checkpoints(trained: Trained) -> None:
    out = trained.out_dir
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["fine_tune_type"] == "lora" and config["num_layers"] == 30
    assert config["lora_parameters"] == {"rank": 8, "scale": 20.0, "dropout": 0.0}
    summary = json.loads((out / "training.json").read_text())
    assert summary["steps"] == 10 and summary["loss_curve"][-1][0] == 10
    assert not (out / CHECKPOINT_DIR).exists(), "checkpoints go once the final adapter is durable"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.model
def test_adapter_loads_on_float32_and_4bit_alike(trained: Trained, model_dir: Path) -> None:
    """The adapter trained on the float32 copy gives the 4-bit model the same first-token logits."""
    from mlx_lm.tuner.utils import load_adapters
    from mlx_lm.utils import load

    quantized, tokenizer = load(str(model_dir))
    full, _, _ = load_for_serving(model_dir, "float32")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": EXAMPLES[0][0]}],
                                           add_generation_prompt=True)
    tokens = mx.array([prompt])

    def first_logits(model: Any) -> mx.array:
        return model(tokens)[0, -1].astype(mx.float32)

    base = first_logits(full)
    load_adapters(quantized, str(trained.out_dir))
    load_adapters(full, str(trained.out_dir))
    on_full, on_quantized = first_logits(full), first_logits(quantized)
    assert float(mx.abs(on_full - base).max()) > 1.0, "the adapter should change the output"
    scale = float(mx.abs(on_full).max())
    assert float(mx.abs(on_full - on_quantized).max()) <= 1e-3 * scale
    probs_full, probs_quantized = mx.softmax(on_full), mx.softmax(on_quantized)
    assert float(mx.abs(probs_full - probs_quantized).max()) < 1e-3
    assert int(mx.argmax(on_full)) == int(mx.argmax(on_quantized))


# ----------------------------------------------------------------- failures and recovery


def _read_until(proc: subprocess.Popen[str], kind: str, timeout_s: float = LINE_TIMEOUT_S) -> dict[str, Any]:
    """The first JSON line of type ``kind`` on the process's stdout."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = proc.stdout.readline()
        if not text:
            raise AssertionError(f"stdout closed before a {kind!r} line (exit {proc.wait()})")
        line = json.loads(text)
        if line.get("type") == kind:
            return line
        if line.get("type") == "error":
            raise AssertionError(f"worker error: {line}")
    raise AssertionError(f"no {kind!r} line within {timeout_s} s")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan may wait a moment for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.model
def test_kill9_mid_run_then_resume_continues_from_the_checkpoint(model_dir: Path, data_dir: Path,
                                                                  tmp_path: Path) -> None:
    params = TrainParams(steps=6, steps_per_report=1, steps_per_checkpoint=2, max_seq_len=64)
    out = tmp_path / "out"
    proc = subprocess.Popen(worker_command(model_dir, data_dir, out, params, resume=False), cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        _read_until(proc, "checkpoint")
    finally:
        proc.kill()
        proc.wait(10)
    saved = json.loads((out / CHECKPOINT_DIR / CHECKPOINT_INDEX).read_text())["step"]
    assert 2 <= saved < 6

    progress: list[dict[str, Any]] = []
    result = run_worker(model_dir, data_dir, out, params, on_progress=progress.append, resume=True)
    assert result.ok, f"{result.status}: {result.error}\n{result.stderr_tail}"
    assert result.started["start_step"] == saved
    assert result.summary["resumed_from"] == saved
    assert [p["step"] for p in progress] == list(range(saved + 1, 7))
    assert (out / "adapters.safetensors").is_file() and not (out / CHECKPOINT_DIR).exists()
    curve = json.loads((out / "training.json").read_text())["loss_curve"]
    assert [step for step, _ in curve] == [1, 2, 3, 4, 5, 6], "the curve survives the kill"

    # A finished run asked to resume again has nothing left to do.
    again = run_worker(model_dir, data_dir, out, params, resume=True)
    assert again.ok and again.summary["resumed_from"] == 6 and not again.started


@pytest.mark.model
def test_should_stop_saves_a_checkpoint_and_stops(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """The daemon's shutdown: SIGTERM to the worker, which checkpoints the step it reached."""
    params = TrainParams(steps=50, steps_per_report=1, steps_per_checkpoint=50, max_seq_len=64)
    progress: list[dict[str, Any]] = []
    result = run_worker(model_dir, data_dir, tmp_path, params, on_progress=progress.append,
                        should_stop=lambda: bool(progress))
    assert result.status == "stopped", f"{result.status}: {result.error}\n{result.stderr_tail}"
    index = json.loads((tmp_path / CHECKPOINT_DIR / CHECKPOINT_INDEX).read_text())
    assert index["step"] == result.checkpoint_step >= 1
    assert result.checkpoint_step < 50


# The parent side as the trainer daemon runs it: holds the heavy-run lock and
# relays the worker's lines to its own stdout.
PARENT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from services.common.heavylock import HeavyRunLock
    from services.trainer.params import TrainParams
    from services.trainer.runner import run_worker
    lock = HeavyRunLock(sys.argv[4])
    assert lock.acquire("trainer", timeout_s=10)
    params = TrainParams(steps=1000, steps_per_report=1, steps_per_checkpoint=1000, max_seq_len=64)
    run_worker(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), params,
               on_line=lambda line: print(json.dumps(line), flush=True))
""")


@pytest.fixture
def parent_procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.model
@pytest.mark.parametrize("guards", ["pipe+pdeathsig", "pipe only"])
def test_worker_dies_with_its_parent_and_never_holds_the_lock(
        model_dir: Path, data_dir: Path, tmp_path: Path, parent_procs: list[subprocess.Popen[str]],
        guards: str) -> None:
    """kill -9 of the parent mid-training: the lock is free at once, the worker gone within seconds."""
    env = dict(os.environ)
    if guards == "pipe only":
        env[NO_PDEATHSIG_ENV] = "1"
    lock_path = tmp_path / "heavy.lock"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(model_dir), str(data_dir),
                               str(tmp_path / "out"), str(lock_path)],
                              cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True)
    parent_procs.append(parent)
    worker_pid = _read_until(parent, "hello")["pid"]
    _read_until(parent, "progress")  # inside the training loop, MLX busy
    assert _running(worker_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait(10)
    assert HeavyRunLock(lock_path).holder() is None, "the worker must not keep the parent's lock"
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while _running(worker_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _running(worker_pid), f"worker {worker_pid} outlived its parent ({guards})"
    finally:
        if _running(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)


@pytest.mark.model
def test_insufficient_memory_is_refused_with_exit_3(model_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    """Checked before anything is loaded; the JSON error says how much was needed."""
    env = {NEEDED_ENV: str(10**15)}
    proc = subprocess.run(worker_command(model_dir, data_dir, tmp_path, TINY, resume=False), cwd=REPO_ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_NO_MEMORY
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    error = lines[-1]
    assert error["type"] == "error" and error["kind"] == "memory"
    assert error["needed_bytes"] == 10**15 and error["available_bytes"] > 0
    assert "not enough free memory" in error["error"]
    assert not any(line["type"] == "started" for line in lines)

    result = run_worker(model_dir, data_dir, tmp_path, TINY, env=env)
    assert result.status == "insufficient_memory" and result.exit_code == EXIT_NO_MEMORY
    assert "not enough free memory" in result.error


def test_bad_data_is_refused_with_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (tmp_path / "model").mkdir()
    result = run_worker(tmp_path / "model", data, tmp_path / "out", TINY)
    assert result.status == "bad_input" and result.exit_code == EXIT_BAD_INPUT
    assert "train.jsonl:1" in result.error


def test_a_failing_callback_kills_the_worker(tmp_path: Path) -> None:
    """An exception on the parent side propagates only after the worker is dead and reaped."""
    (tmp_path / "data").mkdir()
    (tmp_path / "model").mkdir()
    seen: dict[str, int] = {}

    def on_line(line: dict[str, Any]) -> None:
        seen["pid"] = line["pid"]
        raise RuntimeError("the daemon's event log went away")

    with pytest.raises(RuntimeError, match="went away"):
        run_worker(tmp_path / "model", tmp_path / "data", tmp_path / "out", TINY, on_line=on_line)
    assert not _running(seen["pid"])
