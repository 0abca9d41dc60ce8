"""`circ sleep --dry-run [--json] [--steps N]`: ask the trainer for the next sleep's plan and print it.

Exit codes as `circ sleep --wait`: 0 with a plan, 1 when there is nothing to
learn (a sleep would fail at its dataset stage), 3 when the trainer is not
running, 4 while a sleep runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import msgspec

from services.common.paths import Paths

PLAN_TIMEOUT_S = 180.0  # ingest pages out the memories while it may be embedding a turn; a busy box


def dry_run(paths: Paths, args: argparse.Namespace) -> int:
    from protocol.envelope import new_id
    from protocol.trainer_api import PlanSleep, TrainerReply
    from services.cli.flags import resolve_with_flags
    from services.common.rpc import RpcClient

    if args.wait:
        print("circ sleep: --dry-run trains nothing, so there is nothing to --wait for; drop one of them",
              file=sys.stderr)
        return 2
    resolve_with_flags({"trainer.steps": ("--steps", args.steps)})
    client = RpcClient(paths, "trainer", "trainer.ctl", TrainerReply, timeout_s=PLAN_TIMEOUT_S)
    try:
        plan = client.request(PlanSleep(request_id=new_id("p"), steps=args.steps))
    finally:
        client.close()
    data = msgspec.to_builtins(plan)
    data.pop("type", None)
    data.pop("request_id", None)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    elif plan.nothing_to_learn and plan.retrain:
        print(f"dry run: {plan.nothing_to_learn}.", file=sys.stderr)
    elif plan.nothing_to_learn:
        print(f"nothing to learn: {plan.nothing_to_learn}. Tell circadian something first.", file=sys.stderr)
    else:
        print(render(data))
    return 1 if plan.nothing_to_learn else 0


def _joined(counts: dict[str, Any], *, skip_zero: bool = False) -> str:
    shown = [f"{k} {v}" for k, v in counts.items() if not (skip_zero and not v)]
    return ", ".join(shown) or "none"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def render(p: dict[str, Any]) -> str:
    """The plan, for a person (``p`` is SleepPlan as builtins)."""
    lines = (["dry run: " + p["retrain"] + f": the next sleep re-trains its night from the base model on the "
              f"{p['memories']} memories still remembered (after seq {p['since_seq']}); nothing was trained."]
             if p.get("retrain") else
             [f"dry run: the next sleep would train on {p['memories']} new memories (after seq {p['since_seq']});"
              " nothing was trained."])
    lines += [
             f"  memories by route  {_joined(p['routes'])}"
             + (f"  (left out: {_joined(p['excluded'], skip_zero=True)})" if any(p["excluded"].values()) else ""),
             f"  facts taught       {p['facts']}  (superseded {p['superseded']}, withheld {p['withheld']})",
             f"  examples           {p['examples']}  ({_joined(p['counts'])})",
             f"  items, steps       {p['items']} items with {p['anchors']} anchors; {p['steps']} steps",
             f"  estimated time     {_duration(p['estimated_train_s'])} training at {p['seconds_per_step']:g} s/step, "
             f"from {p['step_time_from']}"]
    if p["paraphrased_by"]:
        missing = p["paraphrases_missing"]
        note = (f"; the night asks for the {missing} missing first"
                + (f" (about {_duration(p['estimated_paraphrase_s'])})" if p["estimated_paraphrase_s"] else "")
                + ", this plan goes without them") if missing else ""
        lines.append(f"  rewordings         by {p['paraphrased_by']}: {p['paraphrase_requests'] - missing} of "
                     f"{p['paraphrase_requests']} questions cached{note}")
    else:
        lines.append("  rewordings         templates only (trainer.model_paraphrases = 0)")
    dropped = p["replay_dropped"]
    lines.append(f"  replay adds        {p['replay_added']} examples from earlier nights (pool {p['replay_pool']}"
                 + (f"; dropped {_joined(dropped, skip_zero=True)}" if any(dropped.values()) else "") + ")")
    forgets = f"  forgets remove     {p['forgets_remove']} examples ({p['forgotten_memories']} forgotten memories"
    if p["forgotten_in_current"]:
        forgets += f"; the serving adapter {p['current_adapter']} was trained on {p['forgotten_in_current']} of them"
    lines.append(forgets + ")")
    lines.append(f"  evaluation         {p['eval_facts']} fact items, {p['false_facts']} false-recall probes")
    lines.append(f"dataset: {p['plan_dir']}/train.jsonl (the plan beside it in plan.json; "
                 "the next dry run replaces it)")
    return "\n".join(lines)
