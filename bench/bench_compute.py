#!/usr/bin/env python
"""Prefill and decode speed of the chat model per compute path (no LoRA).

Usage: .venv/bin/python bench/bench_compute.py [--quick] [--reps N] [--threads N]

Configurations, each in its own subprocess (the BLAS is fixed when mlx is
first imported, so the script re-invokes itself with ``--worker NAME``):
  4bit              the stored 4-bit weights (compute=quantized; BLAS auto)
  float32_openblas  the float32 compute copy, OpenBLAS (CIRCADIAN_BLAS=openblas)
  float32_reference the float32 compute copy, the wheel's reference BLAS
                    (CIRCADIAN_BLAS=reference)
All with OPENBLAS_NUM_THREADS=--threads (default 2, as chat runs). Opt-in with
--configs: float32_openblas_1thread (the same, OPENBLAS_NUM_THREADS=1).

Configurations run in rounds (one fresh worker per configuration per round,
so load drift on a shared machine hits all of them); ratios are computed per
round and the median is reported. Each run is one warm-up, then one
``mlx_lm.generate_step`` call, as chat serves a turn:
a fixed --prompt-tokens prompt (default 128), greedy, --decode-tokens
generated (default 64; generate_step never stops at EOS).
  prefill tokens/s = prompt tokens / time to the first token
  decode tokens/s  = (tokens - 1) / (last token - first token)
Ratios are against the 4bit baseline. ``probe_gflops`` (float32 512x512
matmul) is measured in each worker before the model loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    emit,
    fail,
    machine_load,
    median,
    progress,
    resolve_model_or_exit,
    spread,
    wait_quiet,
)

PROG = "bench_compute"
CONFIGS: dict[str, tuple[str, str, int | None]] = {  # name -> (compute, CIRCADIAN_BLAS, threads)
    "4bit": ("quantized", "auto", None),
    "float32_openblas": ("float32", "openblas", None),
    "float32_reference": ("float32", "reference", None),
    # Not run by default: OpenBLAS pinned to one thread, for thread-contention questions.
    "float32_openblas_1thread": ("float32", "openblas", 1),
}
DEFAULT_CONFIGS = ("4bit", "float32_openblas", "float32_reference")
BASELINE = "4bit"
TEXT = ("The lighthouse stood on a rock at the edge of the bay, and every night for thirty years the "
        "keeper climbed its hundred and twelve steps to light the lamp. He kept a log of the weather, "
        "the ships that passed, the birds that rested on the gallery rail, and the letters his sister "
        "sent from the city. ")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repetition per configuration")
    p.add_argument("--reps", type=int, help="rounds (one run of each configuration per round; default 3, quick 1)")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=2, help="OPENBLAS_NUM_THREADS (default 2, as chat)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help="comma-separated, from " + ", ".join(CONFIGS) + f" (default {','.join(DEFAULT_CONFIGS)})")
    p.add_argument("--model", help="model directory or name (default: chat's configured model)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                   help="first wait up to S seconds for CPU pressure to drop (shared machines)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.reps = args.reps or (1 if args.quick else 3)
    return args


# -- worker: one configuration, in a process of its own -------------------
def worker(args: argparse.Namespace) -> dict[str, Any]:
    from services.common.blas import preload_openblas, probe_gflops

    blas = preload_openblas()  # before the first `import mlx`
    gflops = probe_gflops()

    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.models.cache import make_prompt_cache

    from services.lib.models.compute import load_for_serving

    compute = CONFIGS[args.worker][0]
    started = time.perf_counter()
    model, tokenizer, info = load_for_serving(Path(args.model_dir), compute)
    load_s = time.perf_counter() - started
    ids = tokenizer.encode(TEXT * (1 + args.prompt_tokens // 40))
    if len(ids) < args.prompt_tokens:
        raise SystemExit(f"{PROG}: the prompt text has only {len(ids)} tokens")
    prompt = ids[: args.prompt_tokens]
    stream = mx.new_stream(mx.default_device())

    def one_run(tokens: list[int], max_tokens: int) -> tuple[float, float, list[int]]:
        cache = make_prompt_cache(model)
        out: list[int] = []
        times: list[float] = []
        t0 = time.perf_counter()
        steps = generate_step(mx.array(tokens), model, stream, max_tokens=max_tokens, prompt_cache=cache)
        for token, _ in steps:
            times.append(time.perf_counter())
            out.append(int(token))
        steps.close()
        mx.synchronize()
        prefill_tps = len(tokens) / (times[0] - t0)
        decode_tps = (len(out) - 1) / (times[-1] - times[0]) if len(out) > 1 else 0.0
        return prefill_tps, decode_tps, out

    progress(f"{args.worker}: warm-up")
    one_run(prompt[:16], 4)
    prefill, decode = [], []
    generated: list[int] = []
    for rep in range(args.reps):
        p_tps, d_tps, generated = one_run(prompt, args.decode_tokens)
        prefill.append(p_tps)
        decode.append(d_tps)
        progress(f"{args.worker}: rep {rep + 1}/{args.reps} prefill {p_tps:.1f} tok/s, decode {d_tps:.2f} tok/s")
    return {
        "compute": compute, "blas": blas.name, "blas_reason": blas.reason,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "weights": info.weights, "backend": info.backend, "compute_reason": info.reason,
        "probe_gflops": gflops, "load_s": load_s, "prefill": prefill, "decode": decode,
        "generated_tokens": generated, "machine": machine_load(),
    }


# -- parent: run each configuration, compare -------------------------------
def run_worker(args: argparse.Namespace, name: str, model_dir: Path) -> dict[str, Any]:
    _, blas_choice, threads = CONFIGS[name]
    env = dict(os.environ, CIRCADIAN_BLAS=blas_choice, OPENBLAS_NUM_THREADS=str(threads or args.threads))
    env.pop("LD_PRELOAD", None)  # the BLAS must be what the configuration says
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--model-dir", str(model_dir),
           "--reps", "1", "--prompt-tokens", str(args.prompt_tokens),
           "--decode-tokens", str(args.decode_tokens)]
    result = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    if result.returncode != 0:
        return {"error": f"worker exited {result.returncode}"}
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"error": f"worker printed no JSON: {result.stdout[-200:]!r}"}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": runs[0]["error"] if runs else "not run"}
    first = ok[0]
    decode = [v for r in ok for v in r["decode"]]
    out = {k: first[k] for k in ("compute", "blas", "blas_reason", "openblas_num_threads", "weights",
                                 "backend", "compute_reason")}
    out.update({
        "runs": len(ok),
        "probe_gflops": spread([r["probe_gflops"] for r in ok]),
        "prefill_tokens_per_s": spread([v for r in ok for v in r["prefill"]]),
        "decode_tokens_per_s": spread(decode),
        "decode_ms_per_token": round(1000 / median(decode), 2) if median(decode) else None,
        "load_s": spread([r["load_s"] for r in ok]),
        "machine_first_run": first["machine"],
    })
    if len(ok) < len(runs):
        out["errors"] = [r["error"] for r in runs if "error" in r]
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(runs: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    """Ratios to the baseline: per round (the two ran minutes apart at most), then the median."""
    per_round: dict[str, list[float]] = {"prefill": [], "decode": [], "probe_gflops": []}
    differing = None
    for base, other in zip(runs[BASELINE], runs[name], strict=True):
        if "error" in base or "error" in other:
            continue
        per_round["prefill"].append(median(other["prefill"]) / median(base["prefill"]))
        per_round["decode"].append(median(other["decode"]) / median(base["decode"]))
        per_round["probe_gflops"].append(other["probe_gflops"] / base["probe_gflops"])
        differing = first_difference(other["generated_tokens"], base["generated_tokens"])
    out: dict[str, Any] = {k: median(v) for k, v in per_round.items()}
    out["per_round"] = {k: [round(x, 3) for x in v] for k, v in per_round.items()}
    out["first_generated_token_differing_from_4bit"] = differing
    return out


def main() -> int:
    args = parse_args()
    if args.worker:
        if args.worker not in CONFIGS:
            fail(PROG, f"unknown configuration {args.worker!r}")
        print(json.dumps(worker(args)), flush=True)
        return 0
    model_dir = resolve_model_or_exit(PROG, args.model)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        fail(PROG, f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet else None
    started = time.perf_counter()
    # Rounds of one run per configuration, so a change in the machine's load
    # between minutes hits every configuration rather than one of them.
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_index in range(args.reps):
        for name in names:
            progress(f"round {round_index + 1}/{args.reps}: {name}")
            runs[name].append(run_worker(args, name, model_dir))
    configs = {name: summarize(r) for name, r in runs.items()}
    ratios = {name: compare(runs, name) for name in names if name != BASELINE and BASELINE in runs}
    emit({"bench": "compute", "quick": args.quick, "model": model_dir.name, "rounds": args.reps,
          "prompt_tokens": args.prompt_tokens, "decode_tokens": args.decode_tokens,
          "openblas_num_threads": args.threads, "waited_for_quiet": quiet, "baseline": BASELINE,
          "configs": configs, f"ratios_vs_{BASELINE}": ratios,
          "elapsed_s": round(time.perf_counter() - started, 1)})
    return 1 if any("error" in c for c in configs.values()) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        fail(PROG, "interrupted", 130)
