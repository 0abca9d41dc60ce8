"""The common `main` of every daemon: config, logging, fatal-error policy.

A fatal error is logged with its cause, announced as ``service.failed``
(best effort: the log itself may be what failed), and the process exits
non-zero so supervisord restarts it. A bad configuration exits 2 with one
line saying what to fix (restarting would not help, and supervisord gives up
after its start retries).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from services.common.config import Config, ConfigError, load_config
from services.common.daemon import AlreadyRunning
from services.common.logging import configure_logging, get_logger
from services.common.paths import Paths, current_paths

# supervisord (etc/supervisord.conf: startsecs=1, exitcodes=2, autorestart=unexpected) honours
# an exit code only from a process that stayed up past startsecs; a quicker exit is a failed
# start it retries until FATAL. A bad config waits this long so its exit 2 is final.
CONFIG_ERROR_HOLD_S = 1.5
CONFIG_ERROR_EXIT = 2


def announce_failure(paths: Paths, service: str, exc: BaseException) -> None:
    import zmq

    from protocol.codec import encode
    from protocol.envelope import new_envelope
    from protocol.eventlog_api import Append
    from protocol.events import ServiceFailed
    from services.common.zmqio import connect_push

    env = new_envelope(ServiceFailed(service=service, pid=os.getpid(), error=type(exc).__name__,
                                     detail=str(exc)[:2000]), source=service)
    ctx = zmq.Context()
    try:
        sock = connect_push(ctx, paths.endpoint("events.in"))
        sock.send(encode(Append(events=[env])), zmq.NOBLOCK)
        sock.close(linger=500)
    except Exception:
        pass
    finally:
        ctx.term()


def run_service(service: str, run: Callable[[Paths, Config], int], argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m services.{service}",
                                     description=f"circadian {service} daemon (normally started by `circ up`)")
    parser.add_argument("--home", type=Path, help="CIRCADIAN_HOME for this daemon (default: env or repo)")
    args = parser.parse_args(argv)
    if args.home:
        os.environ["CIRCADIAN_HOME"] = str(args.home.resolve())
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        if os.environ.get("SUPERVISOR_ENABLED"):
            announce_failure(current_paths(), service, exc)  # `circ status` shows the last event
            time.sleep(CONFIG_ERROR_HOLD_S)
        return CONFIG_ERROR_EXIT
    configure_logging(service, config.log_level)
    log = get_logger(service)
    paths = current_paths()
    try:
        return run(paths, config)
    except AlreadyRunning as exc:
        log.error(f"{service}.already_running", error=str(exc))
        return 1
    except Exception as exc:
        log.exception(f"{service}.fatal", error=str(exc))
        announce_failure(paths, service, exc)
        return 1
