#!/usr/bin/env python
"""Training throughput of the nightly LoRA run: our worker vs ``python -m mlx_lm lora``.

Usage: .venv/bin/python bench/bench_train.py [--quick] [--steps N] [--runs A,B] [--threads N]

One dataset in a temporary directory, written as the trainer writes a night's
(``train.jsonl``/``valid.jsonl`` in mlx-lm's chat format): the first 16
identity examples of ``services.trainer.identity`` plus 4 question/answer
pairs about the user, all with chat's system prompt (20 examples; the
validation file is ``identity.valid_examples``). Three runs, one after the
other, each in a process of its own, with the trainer's LoRA settings from
the config (rank, scale, lr, layers, max_seq_len; batch size 1, prompt
masked, no anchors):

  worker_float32    services.trainer.runner.run_worker, compute="auto"
                    (on a CPU: the float32 copy + OpenBLAS, as a night trains)
  worker_quantized  the same worker, compute="quantized": the stored 4-bit
                    weights (QLoRA, as mlx-lm trains)
  mlx_lm_lora       ``python -m mlx_lm lora --train ...`` on the stored (4-bit)
                    weights, LoRA rank/scale/dropout from a ``-c`` config file
  worker_float32_batched, mlx_lm_lora_batched
                    the same two at ``--batch`` examples per step (default 4)
                    and steps / batch steps: the same examples, epochs and
                    tokens. The worker buckets rows by length (services.trainer.
                    train_data.example_order) and reports the padding share it
                    computed; mlx-lm sorts by length and pads to 1 + 32k

Every run gets the environment the trainer daemon gives its worker
(``[program:trainer]`` in etc/supervisord.conf: OPENBLAS_NUM_THREADS=2,
PYTHONUNBUFFERED=1; --threads overrides). Our worker preloads OpenBLAS itself
(services.common.blas); mlx-lm gets it with LD_PRELOAD when
``services.common.blas.find_openblas()`` finds it. Which BLAS each process
really had mapped is read from /proc/PID/maps and reported per run.

--steps must be a multiple of the dataset's 20 examples: both trainers draw
a fresh permutation of the examples each epoch, so with whole epochs every
run trains on exactly the same examples the same number of times, and the
same token count. Figures per run:

  tokens_per_s   headline, the same definition and method for all runs:
                 every token of every example trained (prompt + answer,
                 counted with mlx-lm's ChatDataset, as both trainers tokenize)
                 / training-loop time. The loop time is measured from the
                 arrival of output lines: the line each trainer prints just
                 before its loop (worker: "started"; mlx-lm: its table
                 header) to the report of the last step, minus mlx-lm's
                 validation passes (it validates at step 1 and the last step
                 whatever --steps-per-eval says; their times are printed).
  steady_tokens_per_s  the same, from the first report (step 5) on: without
                 the first steps' warm-up (mlx-lm compiles its step function)
  tokens_per_s_reported  what the trainer itself says: the worker's
                 training.json ``tokens_per_s`` (same tokens, step time only);
                 mlx-lm's "tok/s" counts only the trained (unmasked answer)
                 tokens plus one padding position per row — not comparable
  wall_s         process start to exit (imports, model load, float32 copy,
                 tokenizing, training, saving)
  peak_rss_bytes VmHWM of the process (polled at each output line)

Ratios are worker / mlx-lm on ``tokens_per_s`` (and on the steady figure).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    REPO_ROOT,
    emit,
    fail,
    machine_load,
    progress,
    resolve_model_or_exit,
    wait_quiet,
)

PROG = "bench_train"
RUNS = ("worker_float32", "worker_quantized", "mlx_lm_lora", "worker_float32_batched", "mlx_lm_lora_batched")
WORKER_COMPUTE = {"worker_float32": "auto", "worker_quantized": "quantized", "worker_float32_batched": "auto"}
DEFAULT_BATCH = 4
IDENTITY_EXAMPLES = 16
FACTS_QA = (
    ("What is my cat called?", "Your cat is called Miso."),
    ("Where does my sister live?", "Your sister lives in Porto."),
    ("What is my favourite colour?", "Your favourite colour is green."),
    ("When is my birthday?", "Your birthday is on the 3rd of May."),
)
DATASET_SIZE = IDENTITY_EXAMPLES + len(FACTS_QA)
REPORT_EVERY = 5
QUICK_STEPS = DATASET_SIZE  # one epoch
DEFAULT_STEPS = 3 * DATASET_SIZE
MLX_PAD_TO = 32  # mlx_lm.tuner.trainer.iterate_batches pads rows to 1 + a multiple of 32
SUPERVISORD_CONF = REPO_ROOT / "etc" / "supervisord.conf"

# mlx-lm's report lines: the table of mlx-lm >= 0.30 (rich) and the older "Iter N: ..." lines.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
TABLE_HEADER = re.compile(r"^\s*iter\s+train_loss\b|Starting training")
TABLE_TRAIN = re.compile(r"^\s*(\d+)\s+(nan|inf|[-\d.]+)\s*[▼▲]?\s+([\d,]+)\s+([\d.]+)k\s*$")
TABLE_VAL = re.compile(r"^\s*(\d+)\s+val\s+(nan|inf|[-\d.]+)\s+([\d.]+)s\s*$")
OLD_TRAIN = re.compile(r"Iter (\d+): Train loss (\S+), Learning Rate \S+, It/sec ([\d.]+), "
                       r"Tokens/sec ([\d.]+), Trained Tokens (\d+)(?:, Peak mem ([\d.]+) GB)?")
OLD_VAL = re.compile(r"Iter (\d+): Val loss (\S+), Val took ([\d.]+)s")
TRAINABLE = re.compile(r"Trainable parameters:\s*([\d.]+)%\s*\(([\d.]+)M/([\d.]+)M\)")


# -- arguments --------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_STEPS} steps per run (one epoch) instead of {DEFAULT_STEPS}")
    p.add_argument("--steps", type=int,
                   help=f"training steps per run: a multiple of the dataset's {DATASET_SIZE} examples, so every "
                        f"run trains the same examples equally often (default {DEFAULT_STEPS}, quick {QUICK_STEPS})")
    p.add_argument("--runs", default=",".join(RUNS),
                   help=f"comma-separated, from {', '.join(RUNS)} (default: all, in that order)")
    p.add_argument("--batch", type=int, default=DEFAULT_BATCH,
                   help=f"examples per step of the *_batched runs: a divisor of {DATASET_SIZE}, >= 2 "
                        f"(default {DEFAULT_BATCH})")
    p.add_argument("--threads", type=int,
                   help="OPENBLAS_NUM_THREADS for every run (default: the trainer's, from etc/supervisord.conf)")
    p.add_argument("--model", help="model directory or name (default: chat's configured model)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (data, adapters, logs)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for CPU pressure to drop (shared machines)")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    if args.steps < DATASET_SIZE or args.steps % DATASET_SIZE:
        p.error(f"--steps must be a positive multiple of {DATASET_SIZE} (the dataset's size: whole epochs "
                f"make every run train the same examples), not {args.steps}")
    if args.steps > 100_000:
        p.error("--steps must be at most 100000")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in runs if r not in RUNS]
    if unknown or not runs:
        p.error(f"--runs: unknown run(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(RUNS)}")
    if len(set(runs)) != len(runs):
        p.error("--runs: each run at most once")
    args.runs = runs
    if args.batch < 2 or DATASET_SIZE % args.batch:
        p.error(f"--batch must be >= 2 and divide the dataset's {DATASET_SIZE} examples (2, 4, 5, 10 or 20), "
                f"not {args.batch}")
    if args.threads is not None and not 1 <= args.threads <= 256:
        p.error("--threads must be 1..256")
    if args.wait_quiet < 0:
        p.error("--wait-quiet must be >= 0")
    return args


# -- the environment the trainer gives its worker ------------------------------
def trainer_environment(conf: Path = SUPERVISORD_CONF) -> dict[str, str]:
    """``environment=`` of ``[program:trainer]`` in supervisord.conf (its worker inherits it)."""
    env: dict[str, str] = {}
    section = None
    try:
        lines = conf.read_text().splitlines()
    except OSError:
        return {"OPENBLAS_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1]
        elif section == "program:trainer" and stripped.startswith("environment="):
            for item in re.findall(r'(\w+)="([^"]*)"|(\w+)=([^,]*)', stripped.removeprefix("environment=")):
                key, value = (item[0], item[1]) if item[0] else (item[2], item[3])
                env[key] = value
    return env


def jit_dir(kind: str) -> str:
    """A private MLX kernel-cache directory (as services.common.mlxjit gives our processes)."""
    base = os.environ.get("CIRCADIAN_MLX_JIT_BASE") or str(Path(tempfile.gettempdir()) / f"circadian-mlx-{os.getuid()}")
    target = Path(base) / kind
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    return str(target)


# -- /proc ----------------------------------------------------------------
def mapped_openblas(pid: int) -> str | None:
    """The OpenBLAS library mapped into process ``pid`` (not numpy's private copy), if any."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        fields = line.split(maxsplit=5)
        path = fields[5].strip() if len(fields) == 6 else ""
        name = os.path.basename(path)
        if "openblas" in path and "scipy_openblas" not in name and "numpy" not in path:
            return path
    return None


def vm_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


# -- the dataset ------------------------------------------------------------
def build_dataset(directory: Path, system_prompt: str) -> list[dict[str, Any]]:
    """train.jsonl + valid.jsonl in the trainer's format; returns the training examples."""
    from services.trainer.identity import chat_example, identity_examples, valid_examples

    examples = identity_examples(system_prompt)[:IDENTITY_EXAMPLES]
    examples += [chat_example(system_prompt, q, a) for q, a in FACTS_QA]
    directory.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", examples), ("valid.jsonl", valid_examples(system_prompt))):
        (directory / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return examples


def token_counts(model_dir: Path, examples: list[dict[str, Any]], max_seq_len: int) -> dict[str, int]:
    """Per-epoch token counts, tokenized as both trainers do (mlx-lm's ChatDataset, prompt masked)."""
    from services.common.blas import preload_openblas

    preload_openblas()  # this process computes nothing, but keep the house rule: before mlx
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.utils import load_tokenizer

    dataset = ChatDataset(examples, load_tokenizer(model_dir), mask_prompt=True)
    tokens = answer = mlx_counted = inputs = padded_inputs = 0
    for i in range(len(dataset)):
        ids, offset = dataset.process(dataset[i])
        n = min(len(ids), max_seq_len)
        width = min(1 + MLX_PAD_TO * math.ceil(n / MLX_PAD_TO), max_seq_len)
        tokens += n
        answer += n - offset
        mlx_counted += min(n, width - 1) - offset + 1  # its mask runs to `length` inclusive
        inputs += n - 1
        padded_inputs += width - 1
    return {"examples": len(dataset), "tokens": tokens, "answer_tokens": answer,
            "mlx_lm_counted_tokens": mlx_counted, "model_inputs": inputs, "mlx_lm_padded_inputs": padded_inputs}


# -- figures from timed report lines ----------------------------------------------
def loop_figures(start_at: float | None, reports: list[tuple[int, float]], vals: list[tuple[int, float, float]],
                 steps: int, tokens_per_step: float) -> dict[str, Any]:
    """Loop time (start marker -> last report, minus validation) and steady state (first -> last report)."""
    out: dict[str, Any] = {"loop_s": None, "tokens_per_s": None, "steps_per_s": None,
                           "steady_tokens_per_s": None, "steady_s_per_step": None}
    if start_at is None or not reports or reports[-1][0] != steps:
        return out
    last_at = reports[-1][1]
    val_s = sum(v[2] for v in vals)
    loop_s = last_at - start_at - val_s
    if loop_s > 0:
        out.update(loop_s=round(loop_s, 2), tokens_per_s=round(steps * tokens_per_step / loop_s, 2),
                   steps_per_s=round(steps / loop_s, 4))
    first_step, first_at = reports[0]
    if first_step < steps:
        # Validation passes after the first report (mlx-lm: the one before the last step).
        later_val_s = sum(v[2] for v in vals if v[0] > first_step)
        steady_s = last_at - first_at - later_val_s
        if steady_s > 0:
            n = steps - first_step
            out.update(steady_tokens_per_s=round(n * tokens_per_step / steady_s, 2),
                       steady_s_per_step=round(steady_s / n, 3))
    out["validation_s"] = round(val_s, 2)
    return out


# -- our worker ---------------------------------------------------------------
def run_ours(name: str, model_dir: Path, data_dir: Path, out_dir: Path, params: Any, env: dict[str, str],
             tokens_per_step: float) -> dict[str, Any]:
    from services.trainer.checkpoints import SUMMARY_FILE
    from services.trainer.runner import run_worker

    state: dict[str, Any] = {"pid": 0, "blas": None, "hwm": 0, "started_at": None, "started": {}}
    reports: list[tuple[int, float]] = []

    def on_line(line: dict[str, Any]) -> None:
        now = time.perf_counter()
        kind = line.get("type")
        if kind == "hello":
            state["pid"] = int(line.get("pid", 0))
        elif kind == "started":
            state["started_at"], state["started"] = now, line
        elif kind == "progress":
            reports.append((int(line["step"]), now))
            if state["blas"] is None and state["pid"]:
                state["blas"] = mapped_openblas(state["pid"]) or ""
            progress(f"{name}: step {line['step']}/{line['steps']} loss {line['loss']} "
                     f"{line['tokens_per_s']} tok/s")
        if state["pid"]:
            state["hwm"] = max(state["hwm"], vm_hwm_bytes(state["pid"]))

    before = machine_load()
    started = time.perf_counter()
    result = run_worker(model_dir, data_dir, out_dir, params, on_line=on_line, resume=False, env=env)
    wall_s = time.perf_counter() - started
    run: dict[str, Any] = {"status": result.status, "wall_s": round(wall_s, 2), "machine_before": before,
                           "machine_after": machine_load()}
    if not result.ok:
        run["error"] = result.error
        run["stderr_tail"] = result.stderr_tail[-2000:]
        return run
    summary = json.loads((out_dir / SUMMARY_FILE).read_text())
    run.update(loop_figures(state["started_at"], reports, [], params.steps, tokens_per_step))
    started_line = state["started"]
    compute = started_line.get("compute") or summary.get("compute") or {}
    mapped = state["blas"]
    run.update({
        "tokens_per_s_reported": summary.get("tokens_per_s"),
        "reported_definition": "training.json tokens_per_s: every token of the batch / summed step time",
        "batch_size": params.batch_size, "padding_share": summary.get("padding_share"),
        "train_s_reported": summary.get("train_s"),
        "final_loss": summary.get("final_loss"),
        "examples": started_line.get("examples"), "dropped": started_line.get("dropped"),
        "trainable_params": started_line.get("trainable_params"), "lora_layers": started_line.get("lora_layers"),
        "compute": compute,
        "blas": {"name": "openblas" if mapped else "reference", "mapped": mapped or None,
                 "how": "preloaded by the worker itself (services.common.blas.preload_openblas)"},
        "peak_rss_bytes": state["hwm"] or None,
        "peak_memory_bytes": summary.get("peak_memory_bytes"),
        "peak_memory_note": "peak_memory_bytes: MLX's allocator peak (mx.get_peak_memory)",
    })
    return run


# -- mlx-lm ---------------------------------------------------------------------
def mlx_lm_command(model_dir: Path, data_dir: Path, out_dir: Path, config: Path, params: Any) -> list[str]:
    return [sys.executable, "-m", "mlx_lm", "lora", "--model", str(model_dir), "--train", "--data", str(data_dir),
            "--fine-tune-type", "lora", "--optimizer", "adam",
            "--iters", str(params.steps), "--batch-size", str(params.batch_size),
            "--num-layers", str(params.num_layers), "--learning-rate", repr(params.lr),
            "--adapter-path", str(out_dir), "--mask-prompt", "--steps-per-report", str(REPORT_EVERY),
            "--steps-per-eval", "100000", "--val-batches", "1", "--max-seq-length", str(params.max_seq_len),
            "--save-every", str(params.steps), "--seed", str(params.seed), "-c", str(config)]


def run_mlx_lm(model_dir: Path, data_dir: Path, work: Path, params: Any, env: dict[str, str],
               tokens_per_step: float, name: str = "mlx_lm_lora") -> dict[str, Any]:
    from services.common.blas import find_openblas

    out_dir = work / name
    config = work / f"{name}.yaml"
    # JSON is YAML; lora_parameters can only be set through the config file.
    config.write_text(json.dumps({"lora_parameters": params.lora_parameters()}) + "\n")
    command = mlx_lm_command(model_dir, data_dir, out_dir, config, params)
    child_env = {**os.environ, **env, "NO_COLOR": "1", "TMPDIR": jit_dir("mlx_lm_lora")}
    blas_path = None
    if os.environ.get("CIRCADIAN_BLAS", "auto").strip().lower() != "reference":
        blas_path = find_openblas()
    if blas_path:
        child_env["LD_PRELOAD"] = " ".join(x for x in (blas_path, os.environ.get("LD_PRELOAD", "")) if x)
    stderr_path = work / f"{name}.stderr"
    reports: list[tuple[int, float]] = []
    vals: list[tuple[int, float, float]] = []
    reported: list[dict[str, Any]] = []
    state: dict[str, Any] = {"header_at": None, "blas": None, "hwm": 0, "trainable": None}
    tail: list[str] = []
    before = machine_load()
    started = time.perf_counter()
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace", env=child_env, cwd=work)
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                now = time.perf_counter()
                line = ANSI.sub("", raw).rstrip()
                tail = (tail + [line])[-20:]
                state["hwm"] = max(state["hwm"], vm_hwm_bytes(proc.pid))
                if state["header_at"] is None and TABLE_HEADER.search(line):
                    state["header_at"] = now
                    state["blas"] = mapped_openblas(proc.pid) or ""
                    continue
                if m := TRAINABLE.search(line):
                    state["trainable"] = round(float(m.group(2)) * 1e6)
                elif m := TABLE_TRAIN.match(line):
                    step, loss, tps, trained = int(m.group(1)), m.group(2), float(m.group(3).replace(",", "")), \
                        round(float(m.group(4)) * 1000)
                    reports.append((step, now))
                    reported.append({"step": step, "loss": float(loss), "tokens_per_s": tps, "trained_tokens": trained})
                    progress(f"mlx_lm_lora: step {step}/{params.steps} loss {loss} {tps:g} trained tok/s")
                elif m := OLD_TRAIN.search(line):
                    step = int(m.group(1))
                    reports.append((step, now))
                    reported.append({"step": step, "loss": float(m.group(2)), "it_per_s": float(m.group(3)),
                                     "tokens_per_s": float(m.group(4)), "trained_tokens": int(m.group(5)),
                                     "peak_memory_gb": float(m.group(6)) if m.group(6) else None})
                    progress(f"mlx_lm_lora: step {step}/{params.steps} loss {m.group(2)} {m.group(4)} trained tok/s")
                elif m := (TABLE_VAL.match(line) or OLD_VAL.search(line)):
                    vals.append((int(m.group(1)), now, float(m.group(3))))
            code = proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    wall_s = time.perf_counter() - started
    run: dict[str, Any] = {"status": "ok" if code == 0 else "failed", "exit_code": code, "wall_s": round(wall_s, 2),
                           "machine_before": before, "machine_after": machine_load(),
                           "command": " ".join(command[1:]).replace(str(REPO_ROOT) + "/", "")}
    if code != 0 or not reports:
        err_tail = stderr_path.read_text(errors="replace").splitlines()[-15:]
        run["status"] = "failed"
        run["error"] = (f"mlx_lm lora exited {code}" if code else "no training report lines were recognised "
                        "(has mlx-lm's output format changed?)")
        run["stdout_tail"] = tail
        run["stderr_tail"] = err_tail
        return run
    run.update(loop_figures(state["header_at"], reports, vals, params.steps, tokens_per_step))
    mapped = state["blas"]
    run.update({
        "tokens_per_s_reported": reported[-1]["tokens_per_s"],
        "reported_definition": "mlx-lm's tok/s of the last report window: trained (answer) tokens + 1 padding "
                               "position per row (its loss mask), per second of step time; printed as a whole "
                               "number (and its trained-token total in thousands with one decimal)",
        "reported_trained_tokens": reported[-1]["trained_tokens"],
        "reports": reported,
        "validation_passes": [{"step": s, "seconds": v} for s, _, v in vals],
        "final_loss": reported[-1]["loss"],
        "trainable_params": state["trainable"],
        "weights": "as stored (the model's 4-bit quantized weights): QLoRA",
        "blas": {"name": "openblas" if mapped else "reference", "mapped": mapped or None,
                 "how": f"LD_PRELOAD={blas_path}" if blas_path else "none found: the wheel's reference BLAS"},
        "peak_rss_bytes": state["hwm"] or None,
    })
    if reported and reported[-1].get("peak_memory_gb") is not None:
        run["peak_memory_bytes"] = int(reported[-1]["peak_memory_gb"] * 1e9)
    return run


# -- main -------------------------------------------------------------------------
def ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> float | None:
    if not a or not b or not a.get(key) or not b.get(key):
        return None
    return round(a[key] / b[key], 3)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    model_dir = resolve_model_or_exit(PROG, args.model)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)  # the finally below still cleans up
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    from services.common.config import load_config
    from services.trainer.params import TrainParams

    config = load_config()
    t = config.trainer
    env = trainer_environment()
    if args.threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(args.threads)
    env.setdefault("OPENBLAS_NUM_THREADS", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    try:
        base = TrainParams(rank=t.rank, scale=t.lora_scale, lr=t.learning_rate, num_layers=t.num_layers,
                           max_seq_len=t.max_seq_len, batch_size=1, steps=args.steps, mask_prompt=True,
                           steps_per_report=REPORT_EVERY, steps_per_checkpoint=args.steps, anchor_share=0.0)
    except ValueError as exc:
        fail(PROG, f"the trainer's config gives unusable training parameters: {exc}")
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    started = time.perf_counter()
    keep = args.keep
    try:
        data_dir = work / "data"
        examples = build_dataset(data_dir, config.chat.system_prompt)
        progress(f"dataset: {len(examples)} examples in {data_dir}; counting tokens")
        counts = token_counts(model_dir, examples, base.max_seq_len)
        tokens_per_step = counts["tokens"] / counts["examples"]  # batch size 1, whole epochs
        epochs = args.steps // DATASET_SIZE
        result: dict[str, Any] = {
            "bench": "train", "quick": args.quick, "model": model_dir.name, "steps": args.steps,
            "epochs": epochs, "waited_for_quiet": quiet,
            "dataset": {**{k: v for k, v in counts.items()},
                        "per": "epoch (each run trains every example once per epoch)",
                        "tokens_per_run": counts["tokens"] * epochs,
                        "mlx_lm_padding_overhead": round(counts["mlx_lm_padded_inputs"] / counts["model_inputs"], 3)},
            "params": {k: getattr(base, k) for k in ("rank", "scale", "dropout", "num_layers", "lr", "batch_size",
                                                     "max_seq_len", "mask_prompt", "seed")},
            "env": env, "runs": {}, "machine_start": machine_load(),
        }
        batched = msgspec_replace(base, batch_size=args.batch, steps=args.steps // args.batch,
                                  steps_per_checkpoint=args.steps // args.batch)
        for name in args.runs:
            params = batched if name.endswith("_batched") else base
            step_tokens = tokens_per_step * params.batch_size  # whole epochs: the same tokens per run
            progress(f"{name}: {params.steps} steps of batch {params.batch_size}")
            if name.startswith("mlx_lm_lora"):
                run = run_mlx_lm(model_dir, data_dir, work, params, env, step_tokens, name)
                if run.get("reported_trained_tokens") is not None and params.batch_size == 1:
                    expected = counts["mlx_lm_counted_tokens"] * epochs
                    # mlx-lm prints thousands with one decimal: within 50 tokens when it trained the same data.
                    run["trained_tokens_check"] = {
                        "printed": run["reported_trained_tokens"], "expected_from_dataset": expected,
                        "consistent": abs(run["reported_trained_tokens"] - expected) <= 50}
            else:
                params = msgspec_replace(params, compute=WORKER_COMPUTE[name])
                run = run_ours(name, model_dir, data_dir, work / name, params, env, step_tokens)
            result["runs"][name] = run
            progress(f"{name}: {run['status']}, {run.get('tokens_per_s')} tok/s (all tokens), wall {run['wall_s']} s")
        runs = result["runs"]
        mlx = runs.get("mlx_lm_lora")
        result["ratios"] = {
            "worker_float32_vs_mlx_lm": ratio(runs.get("worker_float32"), mlx, "tokens_per_s"),
            "worker_quantized_vs_mlx_lm": ratio(runs.get("worker_quantized"), mlx, "tokens_per_s"),
            "worker_float32_vs_worker_quantized": ratio(runs.get("worker_float32"), runs.get("worker_quantized"),
                                                        "tokens_per_s"),
            "steady_worker_float32_vs_mlx_lm": ratio(runs.get("worker_float32"), mlx, "steady_tokens_per_s"),
            "steady_worker_quantized_vs_mlx_lm": ratio(runs.get("worker_quantized"), mlx, "steady_tokens_per_s"),
            "wall_worker_float32_vs_mlx_lm": ratio(mlx, runs.get("worker_float32"), "wall_s"),
            "wall_worker_quantized_vs_mlx_lm": ratio(mlx, runs.get("worker_quantized"), "wall_s"),
            "worker_float32_batched_vs_mlx_lm_batched": ratio(runs.get("worker_float32_batched"),
                                                              runs.get("mlx_lm_lora_batched"), "tokens_per_s"),
            "worker_float32_batched_vs_worker_float32": ratio(runs.get("worker_float32_batched"),
                                                              runs.get("worker_float32"), "tokens_per_s"),
            "mlx_lm_batched_vs_mlx_lm": ratio(runs.get("mlx_lm_lora_batched"), mlx, "tokens_per_s"),
        }
        result["notes"] = [
            "ratios: worker tokens/s / mlx-lm tokens/s (> 1: the worker is faster); wall_*: mlx-lm wall / worker wall",
            "mlx-lm pads every row to 1 + a multiple of 32 tokens and computes on the padding "
            "(dataset.mlx_lm_padding_overhead); our worker does not pad at batch size 1",
            "mlx-lm compiles its step function (mx.compile); our worker does not",
            "mlx-lm validates at step 1 and at the last step even with a large --steps-per-eval; "
            "its validation time is subtracted from its loop time",
        ]
        result["machine"] = machine_load()
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        failed = [name for name, run in runs.items() if run["status"] != "ok"]
        if failed:
            keep = True
            result["work_dir"] = str(work)
        emit(result)
        return 1 if failed else 0
    finally:
        if keep:
            progress(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def msgspec_replace(params: Any, **changes: Any) -> Any:
    import msgspec

    return msgspec.structs.replace(params, **changes)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
