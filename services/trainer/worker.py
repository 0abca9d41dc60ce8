"""The training worker: one LoRA run in its own process, so its memory goes back to the OS.

    python -m services.trainer.worker --model DIR --data DIR --out DIR
        [--resume] [--params JSON] [--parent-fd N --parent-pid PID]

``--data`` holds ``train.jsonl`` in mlx-lm's chat format (one
``{"messages": [...]}`` per line, the last message the assistant's) and,
for the stop rule (``early_stop``), ``probe.jsonl``: one trained item per
fact with its ``value`` (services.trainer.stop_rule). The
run uses mlx-lm's pieces — :func:`linear_to_lora_layers`, ``ChatDataset``
(prompt masking) and its adapter format — in a small loop of its own, which
makes resuming exact (the example order is a function of the step) and
reports progress between steps.

stdout carries only JSON lines, one per event (everything else the process
prints goes to stderr)::

    {"type": "hello", "pid": ...}                          at once
    {"type": "started", "start_step", "steps", "examples", "compute", ...}
    {"type": "progress", "step", "steps", "loss", "tokens_per_s", "eta_s", ...}
    {"type": "check", "step", "learned", "facts", "probe_loss", "stop"}   the stop rule, with probe.jsonl
    {"type": "checkpoint", "step", "path"}
    {"type": "done", "steps", "steps_planned", "stopped_because", "final_loss", "duration_s", ...}
    {"type": "stopped", "step"}                             after SIGTERM (checkpoint saved)
    {"type": "error", "kind", "error", ...}                 then a non-zero exit

Exit codes: 0 done, 1 unexpected failure, 2 bad input (data, params,
model), 3 not enough free memory (refused before loading anything), 5
stopped by SIGTERM, 6 the parent died.

Output in ``--out``: ``adapters.safetensors`` + ``adapter_config.json``
(loadable by ``mlx_lm.tuner.utils.load_adapters`` on the 4-bit model and on
the float32 copy alike) and ``training.json`` (figures, loss curve). While
running, ``checkpoints/`` holds the latest adapter weights and the step
(no optimizer state: Adam restarts its moments on resume, which costs a
few noisy steps and keeps checkpoints at the adapter's size); it is removed
once the final files are durable.

The worker dies with its parent: ``--parent-fd`` is the read end of a pipe
whose write end only the parent holds; a watcher thread exits the process
when it reads EOF (the parent closed it or died). On Linux
``PR_SET_PDEATHSIG`` (SIGKILL) is a second guard that works even while the
main thread is inside a long MLX call.

Where things live: this module is the entry (flags, signals, the order of
the checks); :mod:`.worker_io` (exit codes, the JSON-lines channel, the
parent watch, shared with the paraphrase worker), :mod:`.memory_budget`
(the free-memory check), :mod:`.train_data` (``train.jsonl``, the example
order), :mod:`.checkpoints` (every file in ``--out``), :mod:`.train_loop`
(the model, the LoRA layers and the loop).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from services.trainer.checkpoints import ADAPTER_FILE, CONFIG_FILE, SUMMARY_FILE, finished_summary
from services.trainer.memory_budget import check_memory
from services.trainer.params import TrainParams
from services.trainer.train_data import TRAIN_FILE, read_examples
from services.trainer.train_loop import Trainer
from services.trainer.worker_io import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_NO_MEMORY,
    EXIT_OK,
    EXIT_STOPPED,
    Emitter,
    InputError,
    add_parent_arguments,
    start_child,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.trainer.worker",
                                     description="Train one LoRA adapter (JSON lines on stdout).")
    parser.add_argument("--model", required=True, help="mlx-lm model directory (e.g. models/smollm2-135m-instruct)")
    parser.add_argument("--data", required=True, help=f"directory holding {TRAIN_FILE} (chat format)")
    parser.add_argument("--out", required=True, help="output directory (adapter, summary, checkpoints)")
    parser.add_argument("--resume", action="store_true", help="continue from the last matching checkpoint")
    parser.add_argument("--params", default="{}", help="TrainParams as JSON (missing fields: defaults)")
    parser.add_argument("--anchor-cache", default=None,
                        help="directory caching the base model's anchor replies (default: no cache)")
    add_parent_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emit = start_child(args)
    stop = threading.Event()
    in_loop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if not in_loop.is_set():  # nothing to save yet: leave at once
            emit("stopped", step=0)
            os._exit(EXIT_STOPPED)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _main(args, emit, stop, in_loop)
    except InputError as exc:
        emit("error", kind="input", error=str(exc))
        return EXIT_BAD_INPUT
    except MemoryError as exc:
        emit("error", kind="memory", error=f"ran out of memory while training: {exc}")
        return EXIT_NO_MEMORY
    except Exception as exc:  # a bug: say what, let the parent report it
        import traceback

        traceback.print_exc()
        emit("error", kind="internal", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _main(args: argparse.Namespace, emit: Emitter, stop: threading.Event, in_loop: threading.Event) -> int:
    try:
        params = TrainParams.from_json(args.params)
    except ValueError as exc:
        raise InputError(f"bad --params: {exc}") from exc
    model_dir, data_dir, out_dir = Path(args.model), Path(args.data), Path(args.out)
    if not model_dir.is_dir():
        raise InputError(f"model directory {model_dir} does not exist")
    examples = read_examples(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.resume:
        summary = finished_summary(out_dir, params, data_dir)
        if summary is not None:
            emit("done", steps=summary["steps"], steps_planned=summary.get("steps_planned", summary["steps"]),
                 stopped_because=summary.get("stopped_because", "cap"), final_loss=summary.get("final_loss"),
                 duration_s=0.0, tokens_per_s=summary.get("tokens_per_s", 0.0), resumed_from=summary["steps"],
                 files=[ADAPTER_FILE, CONFIG_FILE, SUMMARY_FILE])
            return EXIT_OK
    else:
        (out_dir / SUMMARY_FILE).unlink(missing_ok=True)
    memory = check_memory(model_dir, params)
    if not memory.ok:
        emit("error", kind="memory", error=memory.message(), needed_bytes=memory.needed_bytes,
             available_bytes=memory.available_bytes, detail=memory.detail)
        return EXIT_NO_MEMORY
    emit("memory", needed_bytes=memory.needed_bytes, available_bytes=memory.available_bytes,
         detail=memory.detail, source=memory.source)
    trainer = Trainer(args, params, emit, stop.is_set)
    from services.lib.models.validate import ModelError

    try:
        trainer.load(examples)
    except InputError:
        raise
    except (ModelError, ValueError, OSError, KeyError) as exc:
        raise InputError(f"cannot load the model {model_dir}: {exc}") from exc
    in_loop.set()
    if stop.is_set():
        return trainer.stop(0, 0)
    return trainer.run()


if __name__ == "__main__":
    sys.exit(main())
