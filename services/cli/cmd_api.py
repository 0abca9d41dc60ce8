"""`circ api url` and `circ api token`: what an OpenAI client needs to connect."""

from __future__ import annotations

import argparse
import sys


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="api_command", metavar="ACTION", required=True)
    sub.add_parser("url", help="print the API's base URL (for OpenAI clients: base_url)",
                   description="Print the running API's base URL, e.g. http://127.0.0.1:8642/v1.")
    sub.add_parser("token", help="print the bearer token (created on first use, data/keys/api.token, 0600)",
                   description="Print the API's bearer token (the api_key of an OpenAI client). It is "
                               "required when [api] host is not a loopback address; it is created on "
                               "first use in data/keys/api.token (mode 0600). Delete the file and "
                               "restart the api (`circ down && circ up`) to change it.")


def run(args: argparse.Namespace) -> int:
    from services.common.paths import current_paths

    paths = current_paths()
    if args.api_command == "token":
        from services.common.api_token import ensure_token

        print(ensure_token(paths))
        return 0
    from services.cli.daemons import ping

    pong = ping(paths, "api", timeout_s=2.0)
    if pong is None or not pong.details.get("url"):
        print("circ api: the api service is not running: start it with `circ up`", file=sys.stderr)
        return 3
    print(f"{pong.details['url']}/v1")
    return 0
