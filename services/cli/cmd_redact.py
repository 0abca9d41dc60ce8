"""`circ redact [--json]`: show what the redactor would keep of some text.

Reads text on stdin and prints it redacted, exactly as ingest would store it
(the same ``services.lib.privacy.redact.redact``), so a user can check a message
before trusting it to memory:

    echo "mail me at ann@example.org" | circ redact
    mail me at [EMAIL]

``--json`` prints ``{"text", "spans": [{"start", "end", "kind", "placeholder",
"text"}], "counts"}``; offsets index the input text (in code points).
Bytes that are not UTF-8 pass through unchanged in plain mode (they are
never part of a finding); in JSON they become U+FFFD.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the redacted text, the spans found (with the original text) and counts as JSON")


def run(args: argparse.Namespace) -> int:
    from services.lib.privacy.redact import redact

    raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
    # surrogateescape keeps undecodable bytes as lone surrogates: offsets stay stable
    # and the plain output reproduces the input byte for byte outside the findings.
    text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
    result = redact(text)
    try:
        if args.json:
            doc = {
                "text": result.text,
                "spans": [{"start": s.start, "end": s.end, "kind": s.kind, "placeholder": s.placeholder,
                           "text": text[s.start:s.end]} for s in result.spans],
                "counts": result.counts,
            }
            _write(json.dumps(doc, ensure_ascii=False, indent=2) + "\n", errors="replace")
        else:
            _write(result.text, errors="surrogateescape")
    except BrokenPipeError:  # `circ redact < big.txt | head`
        return 0
    return 0


def _write(s: str, *, errors: str) -> None:
    out = getattr(sys.stdout, "buffer", None)
    if out is None:  # a test's StringIO
        sys.stdout.write(s.encode("utf-8", errors).decode("utf-8", "replace"))
        sys.stdout.flush()
        return
    out.write(s.encode("utf-8", errors))
    out.flush()
