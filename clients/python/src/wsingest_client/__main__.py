"""Send points from the command line: ``python -m wsingest_client --help``.

Examples::

    # 10 points, one per second, field n counting 0..9
    python -m wsingest_client ws://127.0.0.1:8765 --device dev-1 --token "$TOKEN" \\
        --measurement demo --tag site=lab --field n={i} --field ok=true --count 10 --interval 1

    # JSON lines from stdin: {"measurement": ..., "fields": {...}, "tags": {...}, "ts": ...}
    tail -F readings.jsonl | python -m wsingest_client ws://host:8765 --device dev-1 --stdin

Exit status: 0 all acked, 1 some refused (reasons printed), 2 usage,
3 authentication refused, 4 flush timed out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, Optional

from . import AuthError, Client, DeliveryFailed, Failure


def _value(text: str, i: int) -> Any:
    text = text.replace("{i}", str(i))
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise SystemExit(f"--{what} {item!r}: use KEY=VALUE")
        out.append((k, v))
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m wsingest_client",
        description="Send telemetry points to a wsingest server and wait for their acks.",
        epilog="Values: true/false are booleans, numbers are numbers, anything else a string; "
        "{i} is replaced by the point's index (0, 1, ...). Exit status: 0 all acked, "
        "1 some refused, 2 usage, 3 authentication refused, 4 flush timed out.",
    )
    p.add_argument("url", help="server base URL, e.g. ws://127.0.0.1:8765")
    p.add_argument("--device", required=True, help="device id")
    p.add_argument("--token", default=os.environ.get("WSINGEST_TOKEN"),
                   help="device token (default: $WSINGEST_TOKEN)")
    p.add_argument("--encoding", choices=["json", "cbor"], default="json")
    p.add_argument("--measurement", default="telemetry")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--field", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--count", type=int, default=1, help="points to send (default 1)")
    p.add_argument("--interval", type=float, default=0.0, help="seconds between points")
    p.add_argument("--stdin", action="store_true",
                   help="read points as JSON lines from stdin instead of --field")
    p.add_argument("--buffer-dir", help="on-disk buffer directory (survives restarts)")
    p.add_argument("--window", type=int, default=64, help="messages in flight (default 64)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds to wait for the acks at the end (default 60)")
    p.add_argument("--json", action="store_true", help="print the stats as one JSON line")
    return p


async def run(args: argparse.Namespace) -> int:
    fields = _pairs(args.field, "field")
    tags = _pairs(args.tag, "tag")
    if not args.stdin and not fields:
        print("give at least one --field KEY=VALUE, or --stdin", file=sys.stderr)
        return 2
    failures: list[Failure] = []
    client = Client(args.url, device=args.device, token=args.token, encoding=args.encoding,
                    buffer_dir=args.buffer_dir, window=args.window,
                    on_failure=failures.append)
    code = 0
    async with client as c:
        try:
            if args.stdin:
                loop = asyncio.get_running_loop()
                while True:
                    line = await loop.run_in_executor(None, sys.stdin.readline)
                    if not line:
                        break
                    if not line.strip():
                        continue
                    p = json.loads(line)
                    await c.send(p.get("measurement", args.measurement), p["fields"],
                                 tags=p.get("tags"), ts=p.get("ts"))
            else:
                for i in range(args.count):
                    if i and args.interval:
                        await asyncio.sleep(args.interval)
                    await c.send(args.measurement, {k: _value(v, i) for k, v in fields},
                                 tags={k: v.replace("{i}", str(i)) for k, v in tags} or None)
            await c.flush(args.timeout)
        except AuthError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 3
        except TimeoutError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 4
        except DeliveryFailed as e:  # not raised with on_failure; kept for clarity
            failures.extend(e.failures)
    for f in failures:
        print(f"refused: seq {f.seq}: {f.error}: {f.detail}", file=sys.stderr)
    if failures and code == 0:
        code = 1
    s = c.stats
    if args.json:
        print(json.dumps(s.to_dict()))
    else:
        print(f"sent {s.sent}, acked {s.acked}, refused {s.nacked}, resent {s.resent}, "
              f"reconnects {s.reconnects}")
    return code


def main(argv: Optional[list[str]] = None) -> None:
    args = parser().parse_args(argv)
    try:
        sys.exit(asyncio.run(run(args)))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
