"""`circ doctor`: what this machine will do, and whether it is healthy.

Shows the MLX backend, the BLAS in use with a quick GFLOP/s probe, the compute
path chat will choose (float32 copy on CPU, 4-bit on Metal/CUDA), the model,
the data directory, the embedder ingest uses for memory (asked from the
running ingest, else predicted from what is installed) and whether each
daemon is up.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import stat
import sys


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-probe", action="store_true", help="skip the BLAS speed probe")


def _compute_plan(backend: str, requested: str, blas_name: str) -> tuple[str, str]:
    """What chat's compute=auto will choose here, without loading the model."""
    if requested == "quantized" or (requested == "auto" and backend != "cpu"):
        return "4bit", f"{backend} backend: keep the 4-bit weights (QLoRA)"
    note = "" if blas_name != "reference" else " — but BLAS is the slow reference one: " \
        "install OpenBLAS (`apt-get install libopenblas0-pthread`) for ~10-25x faster float32 math"
    return "float32", f"cpu backend: dequantized float32 compute copy through BLAS{note}"


def _embedder_report(ingest: dict, model_state: str) -> dict:
    """Which embedder ingest uses: what the running ingest says, else what it would load.

    ``using``: "minilm" | "chat-model" | "none" | "unknown" (ingest busy loading
    or rebuilding); ``source``: "ingest" (asked) or "predicted" (files checked,
    nothing loaded); ``fix`` when it is not MiniLM.
    """
    from services.ingest.embed import (
        EMBEDDER_ENV,
        EmbedderUnavailable,
        embedder_choice,
        minilm_problem,
    )

    minilm = minilm_problem()
    try:
        choice = embedder_choice()
    except EmbedderUnavailable as exc:
        choice, choice_problem = "invalid", str(exc)
    else:
        choice_problem = ""
    details = ingest.get("details") or {}
    report = {"choice": choice, "minilm": minilm or "ok"}
    if details.get("embedder") and details.get("state") in ("ready", "no embedder", "rebuilding"):
        using = details["embedder"]
        report.update(source="ingest", using=using, state=details.get("state", ""),
                      description=details.get("embedder_description", ""),
                      identity=details.get("embedder_identity", ""), problem=details.get("problem", ""),
                      fallback_reason=details.get("embedder_fallback_reason", ""))
    else:  # ingest not running (or still loading): predict from the files, load nothing
        problems = [choice_problem] if choice_problem else []
        if choice in ("auto", "minilm") and minilm:
            problems.append(f"MiniLM: {minilm}")
        if choice in ("auto", "chat-model") and model_state != "ok":
            problems.append(f"chat model: {model_state}")
        if choice_problem:
            using = "none"
        elif choice in ("auto", "minilm") and not minilm:
            using = "minilm"
        elif choice in ("auto", "chat-model") and model_state == "ok":
            using = "chat-model"
        else:
            using = "none"
        report.update(source="predicted", using=using, state="", description="", identity="",
                      problem="; ".join(problems) if using == "none" else "",
                      fallback_reason=minilm if using == "chat-model" and choice == "auto" else "")
    if report["using"] == "chat-model":
        report["fix"] = ("memory runs on the chat-model fallback (worse recall, slower): install MiniLM with "
                         "`bin/setup`, then restart ingest (it rebuilds the index from the log)"
                         if choice == "auto" else f"{EMBEDDER_ENV}=chat-model asks for the fallback; unset it")
    elif report["using"] == "none":
        if choice_problem:
            report["fix"] = f"unset {EMBEDDER_ENV} (or set it to auto, minilm or chat-model)"
        else:
            report["fix"] = "run `bin/setup` (it installs MiniLM)" + (
                ", or repair the chat model (the fallback) with `bin/circ model install`"
                if choice == "auto" and model_state != "ok" else "")
            if choice == "minilm":
                report["fix"] += f"; or unset {EMBEDDER_ENV}=minilm to allow the chat-model fallback"
    return report


def run(args: argparse.Namespace) -> int:
    from services.common.blas import preload_openblas

    blas = preload_openblas()  # before anything imports mlx
    import mlx.core as mx

    from services.cli.cmd_daemons import collect_status
    from services.common.blas import probe_gflops
    from services.common.config import load_config
    from services.common.paths import current_paths, resolve_model_dir
    from services.lib.models.compute import current_backend
    from services.lib.models.validate import ModelError, validate_model_dir

    config = load_config()
    paths = current_paths()
    backend = current_backend()
    weights, why = _compute_plan(backend, config.chat.compute, blas.name)
    model_dir = resolve_model_dir(config.chat.model)
    try:
        validate_model_dir(model_dir)
        model_state = "ok"
    except ModelError as exc:
        model_state = str(exc)
    run_mode = None
    if paths.run.exists():
        run_mode = oct(stat.S_IMODE(paths.run.stat().st_mode))
    status = collect_status(paths)
    report = {
        "platform": f"{platform.system()} {platform.machine()}, python {platform.python_version()}, "
                    f"{os.cpu_count()} cpus",
        "mlx": {"version": mx.__version__, "backend": backend},
        "blas": {"name": blas.name, "path": blas.path, "reason": blas.reason,
                 "gflops_f32_512": None if args.no_probe else round(probe_gflops(), 1)},
        "compute": {"configured": config.chat.compute, "chosen": weights, "reason": why},
        "model": {"setting": config.chat.model, "path": str(model_dir), "state": model_state},
        "data": {"home": str(paths.home), "events_db": str(paths.events_db),
                 "events_db_exists": paths.events_db.exists(), "run_dir": str(paths.run), "run_dir_mode": run_mode},
        "embedder": _embedder_report(status["daemons"].get("ingest", {}), model_state),
        "daemons": {name: {"state": d["state"], "ready": d["ready"], "pid": d["pid"]}
                    for name, d in status["daemons"].items()},
        "api": _api_report(config, status["daemons"].get("api", {})),
    }
    problems = []
    if model_state != "ok":
        problems.append(f"model: {model_state}")  # the message ends with the fix for this directory
    if backend == "cpu" and blas.name == "reference":
        problems.append("BLAS: the wheel's reference BLAS is slow — install OpenBLAS "
                        "(`apt-get install libopenblas0-pthread`); everything still works, just slower")
    if run_mode not in (None, "0o700"):
        problems.append(f"run directory {paths.run} has mode {run_mode}; it must be 0700")
    embedder = report["embedder"]
    if embedder["using"] == "none":
        problems.append(f"embedder: {embedder['problem'] or 'none loads'}")
    report["problems"] = problems
    code = 0 if model_state == "ok" and embedder["using"] != "none" else 1
    if args.json:
        print(json.dumps(report, indent=2))
        return code
    _print_report(report)
    return code


def _api_report(config, api: dict) -> dict:  # noqa: ANN001
    """Where the OpenAI-compatible API listens (the daemon's word), or would listen (the config)."""
    from services.common.api_token import is_loopback

    details = api.get("details", {})
    configured = f"http://{config.api.host}:{config.api.port}"
    return {"url": details.get("url") or None, "configured": configured,
            "auth": details.get("auth") or ("loopback" if is_loopback(config.api.host) else "token")}


def _embedder_line(e: dict) -> str:
    said = "ingest says" if e["source"] == "ingest" else "predicted; ingest is not running"
    if e["using"] == "none":
        return f"embedder  none ({said}): memory and recall are off — fix: {e['fix']}"
    what = e["description"] or {"minilm": "MiniLM (all-MiniLM-L6-v2)",
                                "chat-model": "the chat model (fallback)"}.get(e["using"], e["using"])
    state = f", {e['state']}" if e["state"] and e["state"] != "ready" else ""
    line = f"embedder  {e['using']}: {what} ({said}{state})"
    return line + (f" — {e['fix']}" if e.get("fix") else "")


def _print_report(r: dict) -> None:
    gflops = r["blas"]["gflops_f32_512"]
    speed = f", {gflops} GFLOP/s float32 matmul" if gflops is not None else ""
    lines = [
        f"platform  {r['platform']}",
        f"mlx       {r['mlx']['version']}, backend {r['mlx']['backend']}",
        f"blas      {r['blas']['name']}{speed} ({r['blas']['reason']})",
        f"compute   {r['compute']['chosen']} (config: {r['compute']['configured']}): {r['compute']['reason']}",
        f"model     {r['model']['path']}: {r['model']['state']}",
        f"data      {r['data']['home']} (log {'present' if r['data']['events_db_exists'] else 'not created yet'}; "
        f"run dir {r['data']['run_dir']} {r['data']['run_dir_mode'] or 'not created yet'})",
        _embedder_line(r["embedder"]),
        f"api       {(r['api']['url'] + '/v1') if r['api']['url'] else 'not running (configured ' + r['api']['configured'] + ')'}"
        f" ({'bearer token required: `circ api token`' if r['api']['auth'] == 'token' else 'loopback only, no token'})",
    ]
    for name, d in r["daemons"].items():
        lines.append(f"daemon    {name:<9} {d['state']}{', ready' if d['ready'] else ''}"
                     f"{', pid ' + str(d['pid']) if d['pid'] else ''}")
    for problem in r["problems"]:
        lines.append(f"PROBLEM   {problem}")
    print("\n".join(lines))
    sys.stdout.flush()
