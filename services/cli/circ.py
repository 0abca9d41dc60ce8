"""`circ`: manage circadian — daemons, the event log, models, health.

Subcommand modules are imported only when used, so `circ --help` is instant
and `circ log` never loads MLX.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from services.common.config import ConfigError

# name -> (module, one-line help)
COMMANDS = {
    "up": ("services.cli.cmd_daemons", "start the daemons under supervisord and wait until ready"),
    "down": ("services.cli.cmd_daemons", "stop every daemon and supervisord"),
    "status": ("services.cli.cmd_daemons", "show each daemon's state, pid, uptime and the last event"),
    "doctor": ("services.cli.cmd_doctor", "check the machine: backend, BLAS speed, model, data, daemons"),
    "log": ("services.cli.cmd_log", "read the event log: tail, export, verify, stats"),
    "model": ("services.cli.cmd_model", "install or convert the chat model"),
    "sleep": ("services.cli.cmd_night", "sleep now: train, evaluate and maybe promote an adapter"),
    "adapters": ("services.cli.cmd_night", "list, show, roll back or pin adapters"),
    "bench": ("services.cli.cmd_bench", "run a benchmark from bench/ (JSON on stdout)"),
    "redact": ("services.cli.cmd_redact", "redact PII and secrets from stdin (check what would be stored)"),
    "recall": ("services.cli.cmd_memory", "search memory the way chat does"),
    "memory": ("services.cli.cmd_memory", "list, show, count or rebuild memories"),
    "forget": ("services.cli.cmd_memory", "forget memories (and erase their text from the log)"),
    "import": ("services.cli.cmd_memory", "import a JSON-lines conversation file now"),
    "api": ("services.cli.cmd_api", "the OpenAI-compatible HTTP API: its URL and bearer token"),
    "report": ("services.cli.cmd_report", "write the morning report (HTML and plots) of the last nights"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circ", description="circadian: a local LLM that remembers your day.",
        epilog="Chat with bin/circ-chat. CIRCADIAN_HOME selects the instance directory (default: the repo).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(name, command)
    return parser


def main(argv: list[str] | None = None) -> int:
    from services.cli.pipes import quiet_on_broken_pipe

    return quiet_on_broken_pipe(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except ConfigError as exc:
        print(f"circ: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
