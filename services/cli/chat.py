"""circ-chat: talk to circadian.

Interactive by default (streaming output, readline history, multi-line input
with a trailing backslash or a triple-quote block, /new, /help, /quit);
``--message TEXT`` (``-`` for stdin) prints one reply and exits, ``--json``
prints the logged turn record instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import msgspec

from services.common.paths import Paths, current_paths

HELP = """Commands:
  /new    start a new session (forget the conversation context)
  /help   show this help
  /quit   leave (Ctrl-D works too)
End a line with \\ to continue on the next line, or wrap a block in \"\"\".
Ctrl-C while a reply streams stops it; the partial turn is still logged."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circ-chat", description="Chat with circadian's local model. Every turn is logged.",
        epilog="Start the daemons first with `circ up`.")
    parser.add_argument("-m", "--message", metavar="TEXT",
                        help="send one message, print the reply, exit (use - to read stdin)")
    parser.add_argument("--session", metavar="ID", help="continue session ID (default: a new session)")
    parser.add_argument("--json", action="store_true", help="with --message: print the turn record as JSON")
    parser.add_argument("--max-tokens", type=_positive_int, metavar="N", help="longest reply in tokens")
    parser.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0 = greedy)")
    parser.add_argument("--system", metavar="TEXT", help="system prompt for a new session")
    parser.add_argument("--no-recall", action="store_true",
                        help="answer without consulting memory (recall is on by default)")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    from services.cli.pipes import quiet_on_broken_pipe

    return quiet_on_broken_pipe(lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    from services.cli.chat_client import ChatClient
    from services.cli.flags import resolve_with_flags
    from services.common.config import ConfigError
    from services.common.rpc import RemoteError, ServiceUnavailable

    try:
        # Flags override chat's configuration for this client's turns; checked by the same rules.
        resolve_with_flags({"chat.max_tokens": ("--max-tokens", args.max_tokens),
                            "chat.temperature": ("--temperature", args.temperature),
                            "chat.system_prompt": ("--system", args.system)})
    except ConfigError as exc:
        print(f"circ-chat: {exc}", file=sys.stderr)
        return 2

    paths = current_paths()
    client = ChatClient(paths)
    try:
        pong = client.ping()
        if not pong.ready:
            print("circ-chat: chat is still loading its model; waiting...", file=sys.stderr)
            client.wait_ready(300)
        if args.message is not None:
            return _one_shot(client, args)
        return Repl(client, args, paths).loop()
    except ServiceUnavailable as exc:
        print(f"circ-chat: {exc}", file=sys.stderr)
        return 3
    except RemoteError as exc:
        print(f"circ-chat: {exc}", file=sys.stderr)
        return 4
    finally:
        client.close()


def _request_options(args: argparse.Namespace) -> dict:
    return {"max_tokens": args.max_tokens, "temperature": args.temperature, "system_prompt": args.system,
            "recall": not args.no_recall}


def _one_shot(client, args: argparse.Namespace) -> int:
    from protocol.chat_api import ChatDelta, ChatFinished

    text = sys.stdin.read() if args.message == "-" else args.message
    if not text.strip():
        print("circ-chat: the message is empty", file=sys.stderr)
        return 2
    for reply in client.send(text, session_id=args.session, **_request_options(args)):
        if isinstance(reply, ChatDelta) and not args.json:
            sys.stdout.write(reply.text)
            sys.stdout.flush()
        elif isinstance(reply, ChatFinished):
            if args.json:
                record = msgspec.to_builtins(reply.turn)
                record.update(seq=reply.seq, duplicate=reply.duplicate)
                print(json.dumps(record, ensure_ascii=False))
            else:
                sys.stdout.write("\n")
    return 0


class Repl:
    def __init__(self, client, args: argparse.Namespace, paths: Paths) -> None:
        self.client = client
        self.args = args
        self.session_id: str | None = args.session
        self.history_file: Path = paths.state / "chat_history"
        self._setup_readline()

    def _setup_readline(self) -> None:
        try:
            import readline
        except ImportError:  # not on every platform; input() still works
            return
        self.history_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            readline.read_history_file(self.history_file)
        except OSError:
            pass
        readline.set_history_length(1000)
        import atexit

        def save() -> None:
            try:
                readline.write_history_file(self.history_file)
                self.history_file.chmod(0o600)  # what you typed is private
            except OSError:
                pass

        atexit.register(save)

    def read_message(self) -> str | None:
        """One message, possibly multi-line; None on EOF."""
        try:
            line = input("you> ")
        except EOFError:
            return None
        if line.strip() == '"""':
            lines = []
            while True:
                more = input("... ")
                if more.strip() == '"""':
                    return "\n".join(lines)
                lines.append(more)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = input("... ")
        lines.append(line)
        return "\n".join(lines)

    def loop(self) -> int:
        print("circadian chat. /help for commands, /quit to leave.", file=sys.stderr)
        while True:
            try:
                message = self.read_message()
            except KeyboardInterrupt:
                print(file=sys.stderr)
                continue
            if message is None:
                print(file=sys.stderr)
                return 0
            command = message.strip()
            if not command:
                continue
            if command in ("/quit", "/exit"):
                return 0
            if command == "/help":
                print(HELP, file=sys.stderr)
                continue
            if command == "/new":
                self.session_id = None
                print("(new session)", file=sys.stderr)
                continue
            if command.startswith("/"):
                print(f"unknown command {command.split()[0]}; /help lists them", file=sys.stderr)
                continue
            self.answer(message)

    def answer(self, message: str) -> None:
        from protocol.chat_api import ChatDelta, ChatFinished, ChatStarted
        from protocol.envelope import new_id
        from services.common.rpc import RemoteError

        request_id = new_id("r")
        sys.stdout.write("bot> ")
        sys.stdout.flush()
        try:
            for reply in self.client.send(message, session_id=self.session_id, request_id=request_id,
                                          **_request_options(self.args)):
                if isinstance(reply, ChatStarted):
                    self.session_id = reply.session_id
                elif isinstance(reply, ChatDelta):
                    sys.stdout.write(reply.text)
                    sys.stdout.flush()
                elif isinstance(reply, ChatFinished):
                    suffix = " [stopped]" if reply.turn.finish_reason == "cancelled" else ""
                    sys.stdout.write(f"{suffix}\n")
        except KeyboardInterrupt:
            self.client.cancel(request_id)
            sys.stdout.write(" [stopping]\n")
            self._drain_after_cancel(request_id)
        except RemoteError as exc:
            sys.stdout.write("\n")
            print(f"error: {exc}", file=sys.stderr)

    def _drain_after_cancel(self, request_id: str) -> None:
        """Wait for chat to confirm the cancelled turn so the next reply starts clean."""
        from services.common.rpc import RemoteError, ServiceUnavailable

        try:
            for _ in self.client.replies(request_id):
                pass
        except (RemoteError, ServiceUnavailable, KeyboardInterrupt):
            pass


if __name__ == "__main__":
    sys.exit(main())
