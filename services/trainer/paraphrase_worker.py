"""The paraphrase worker: the model rewords a night's questions and answers.

``python -m services.trainer.paraphrase_worker --model DIR --requests IN.jsonl
--out OUT.json`` reads ``{"question", "answer"}`` lines, generates greedy
rewordings (``services.trainer.paraphrase``) and writes
``{request_key: [[question, answer | null], ...]}`` atomically. JSON lines on
stdout for the parent (``services.trainer.runner.run_paraphraser``): hello,
started, progress (step = requests done, steps = all), done | error. It
dies with its parent exactly like the training worker (same death pipe and
``PR_SET_PDEATHSIG``) and exits 5 at once on SIGTERM: a half-done pass has
nothing worth saving.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from services.trainer.paraphrase import MAX_TOKENS, SYSTEM_PROMPT, propose, read_requests
from services.trainer.worker_io import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_STOPPED,
    Emitter,
    add_parent_arguments,
    start_child,
)

REQUESTS_PER_CHUNK = 8  # progress granularity; Scorer batches within a chunk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.trainer.paraphrase_worker",
                                     description="Reword questions/answers with the model (JSON lines on stdout).")
    parser.add_argument("--model", required=True, help="mlx-lm model directory")
    parser.add_argument("--requests", required=True, help='JSON lines of {"question": ..., "answer": ...}')
    parser.add_argument("--out", required=True, help="where the proposals go (JSON object by request key)")
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS, help=f"per reply (default {MAX_TOKENS})")
    add_parent_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    emit = start_child(args)

    def on_signal(_signum: int, _frame: Any) -> None:
        emit("stopped", step=0)
        os._exit(EXIT_STOPPED)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _main(args, emit)
    except (ValueError, OSError) as exc:
        emit("error", kind="input", error=str(exc))
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: say what, let the parent report it
        import traceback

        traceback.print_exc()
        emit("error", kind="internal", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED


def _main(args: argparse.Namespace, emit: Emitter) -> int:
    model_dir, out = Path(args.model), Path(args.out)
    if not model_dir.is_dir():
        raise ValueError(f"model directory {model_dir} does not exist")
    if args.max_tokens < 1:
        raise ValueError("--max-tokens must be at least 1")
    requests = read_requests(Path(args.requests))
    started = time.monotonic()
    # First: it preloads OpenBLAS, which must happen before mlx is imported.
    from services.lib.models.compute import load_for_serving

    # isort: split
    from services.lib.models.scoring import Scorer

    model, tokenizer, compute = load_for_serving(model_dir)
    scorer = Scorer(model, tokenizer, SYSTEM_PROMPT)
    emit("started", requests=len(requests), backend=compute.backend, weights=compute.weights)
    proposals: dict[str, Any] = {}
    for start in range(0, len(requests), REQUESTS_PER_CHUNK):
        chunk = requests[start:start + REQUESTS_PER_CHUNK]
        proposals.update(propose(chunk, lambda prompts: scorer.greedy(prompts, args.max_tokens)))
        done = start + len(chunk)
        elapsed = time.monotonic() - started
        emit("progress", step=done, steps=len(requests), eta_s=round(elapsed / done * (len(requests) - done), 1))
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(proposals, ensure_ascii=False))
    os.replace(tmp, out)
    emit("done", requests=len(requests), duration_s=round(time.monotonic() - started, 2))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
