"""Talking to the daemons' control sockets from the CLI: who is up and ready."""

from __future__ import annotations

from typing import Any

from protocol.chat_api import ChatReply
from protocol.envelope import new_id
from protocol.eventlog_api import EventlogReply
from protocol.ingest_api import IngestReply
from protocol.openai_api import ApiReply
from protocol.service_api import Ping, Pong
from protocol.trainer_api import EvaluatorReply, TrainerReply
from services.common.paths import Paths
from services.common.rpc import RemoteError, RpcClient, ServiceUnavailable

CONTROL_SOCKETS: dict[str, tuple[str, Any]] = {
    "eventlog": ("events.ctl", EventlogReply),
    "chat": ("chat.ctl", ChatReply),
    "ingest": ("ingest.ctl", IngestReply),
    "trainer": ("trainer.ctl", TrainerReply),
    "evaluator": ("evaluator.ctl", EvaluatorReply),
    "api": ("api.ctl", ApiReply),
}


def ping(paths: Paths, service: str, timeout_s: float = 2.0) -> Pong | None:
    """The daemon's Pong, or None if it is not answering."""
    socket_name, reply_type = CONTROL_SOCKETS[service]
    client = RpcClient(paths, service, socket_name, reply_type, timeout_s=timeout_s)
    try:
        reply = client.request(Ping(request_id=new_id("p")))
        return reply if isinstance(reply, Pong) else None
    except (ServiceUnavailable, RemoteError):
        return None
    finally:
        client.close()
