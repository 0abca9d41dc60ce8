"""Wait for the evaluator's verdict on a night's adapter, and never take a failure for a promote.

The trainer asks once (``Evaluate``) and waits in slices of ``CHECK_EVERY_S``;
between slices it pings the evaluator. A verdict is lost, and the night
rejected at once rather than after the full timeout, when the evaluator
restarted meanwhile (a new pid that is not judging this adapter: supervisord
brought it back after a crash or a kill, and the new process knows nothing
of the request). No reply within
``[evaluator] verdict_timeout_s`` is a reject too. A reply is checked before
it is believed (:func:`checked`): a ``promote`` must carry gates, all passed,
and finite figures, for this adapter. Each failure raises
:class:`VerdictMissing`, which ``Sleep._judge`` turns into ``adapter.rejected``
with the message as the reason; ``adapters/current`` is left as it was.
"""

from __future__ import annotations

import math
import time
from typing import Any

from protocol.events import EvaluationCompleted
from protocol.service_api import Ping, Pong
from protocol.trainer_api import Evaluate, EvaluationResult, EvaluatorReply
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

CHECK_EVERY_S = 5.0
PING_TIMEOUT_S = 10.0  # the evaluator's main thread answers Ping at once, even while judging


class VerdictMissing(RuntimeError):
    """No verdict that can be believed: the night's adapter is rejected."""


def await_verdict(paths: Paths, evaluator: RpcClient, request: Evaluate, *, timeout_s: float,
                  check_every_s: float = CHECK_EVERY_S, ctx: Any = None) -> EvaluationCompleted:
    """Send ``request`` on ``evaluator`` and return the checked verdict, or raise VerdictMissing."""
    watch = RpcClient(paths, "evaluator", "evaluator.ctl", EvaluatorReply, timeout_s=PING_TIMEOUT_S, ctx=ctx)
    try:
        judging_pid, _ = _peer(watch)
        evaluator.send(request)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                evaluator.reset()  # a late reply must not be read as the next night's
                raise VerdictMissing(f"the evaluator gave no verdict within {timeout_s:g} s; the adapter is "
                                     "rejected (see `circ logs evaluator`; a slower machine may need a larger "
                                     "[evaluator] verdict_timeout_s)")
            reply = evaluator.poll_reply(request.request_id, min(check_every_s, remaining))
            if reply is not None:
                break
            pid, busy_with = _peer(watch)
            if pid is None:
                continue  # not answering now (restarting?): look again at the next check
            if busy_with == request.adapter_id or judging_pid is None:
                judging_pid = pid  # (a restart between our ping and our send: this one has it)
            elif pid != judging_pid:
                evaluator.reset()
                raise VerdictMissing(f"the evaluator restarted while judging (pid {judging_pid} -> {pid}), so "
                                     "the judgement was lost; the adapter is rejected: run `circ sleep` again")
    except RemoteError as exc:
        raise VerdictMissing(f"the evaluator refused to judge it: {exc}") from exc
    except ServiceUnavailable as exc:
        raise VerdictMissing(f"the evaluator could not be reached: {exc}") from exc
    finally:
        watch.close()
    if not isinstance(reply, EvaluationResult):
        raise VerdictMissing(f"the evaluator answered {type(reply).__name__}, not a verdict")
    return checked(reply.evaluation, request)


def checked(evaluation: EvaluationCompleted, request: Evaluate) -> EvaluationCompleted:
    """The verdict if it can be believed; a ``promote`` without proof raises VerdictMissing."""
    if evaluation.adapter_id != request.adapter_id:
        raise VerdictMissing(f"the evaluator judged {evaluation.adapter_id}, not {request.adapter_id}")
    if evaluation.verdict != "promote":
        return evaluation
    if not evaluation.gates:
        raise VerdictMissing("the evaluator said promote but reported no gates; rejected (fail closed)")
    failed = sorted(name for name, ok in evaluation.gates.items() if not ok)
    if failed:
        raise VerdictMissing(f"the evaluator said promote with failed gates ({', '.join(failed)}); "
                             "rejected (fail closed)")
    broken = sorted(k for k, v in evaluation.metrics.items() if not math.isfinite(v))
    if broken:
        raise VerdictMissing(f"the evaluator said promote with figures that are not numbers "
                             f"({', '.join(broken)}); rejected (fail closed)")
    return evaluation


def _peer(watch: RpcClient) -> tuple[int | None, str]:
    """The evaluator's pid and the adapter it is judging; (None, "") when it does not answer now."""
    try:
        pong: Any = watch.request(Ping(request_id=f"w{time.monotonic_ns()}"))
    except (ServiceUnavailable, RemoteError):
        return None, ""
    if not isinstance(pong, Pong):
        return None, ""
    return pong.pid, pong.details.get("busy_with", "")
