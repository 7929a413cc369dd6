"""Test driver for the Python client (tests/clients_python.rs runs it).

Sends points i = first .. first+count-1 of measurement "clients": fields
n = i, v = i * 0.25, s = "p-<i>-" padded; ts = ts0 + i ms (or stamped by the
client with --auto-ts). Prints JSON lines: {"progress": k} every 10 sends,
{"held": k} once everything is taken (mode hold), and finally
{"result": ..., "stats": {...}, "failures": [...]}.
"""

import argparse
import asyncio
import json
import sys

from wsingest_client import AuthError, Client, DeliveryFailed


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def point(i, pad):
    return {"n": i, "v": i * 0.25, "s": f"p-{i:06d}-" + "x" * pad}


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--token")
    p.add_argument("--encoding", default="json")
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--ts0", type=int, default=1_700_000_000_000)
    p.add_argument("--auto-ts", action="store_true")
    p.add_argument("--pad", type=int, default=0)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--buffer-dir")
    p.add_argument("--backoff-max", type=float, default=2.0)
    p.add_argument("--flush-timeout", type=float, default=90.0)
    p.add_argument("--mode", default="normal", choices=["normal", "nacks", "hold", "forever"])
    a = p.parse_args()

    client = Client(a.url, device=a.device, token=a.token, encoding=a.encoding,
                    window=a.window, buffer_dir=a.buffer_dir, backoff_base=0.1,
                    backoff_max=a.backoff_max, ack_timeout=20.0)
    result = {"result": "ok"}
    async with client as c:
        try:
            i = a.first
            sent = 0
            loop = asyncio.get_running_loop()
            start = loop.time()
            while a.mode == "forever" or i < a.first + a.count:
                if a.rate > 0:
                    due = start + sent / a.rate
                    if due > loop.time():
                        await asyncio.sleep(due - loop.time())
                fields = point(i, a.pad)
                tags = {"client": "python"}
                if a.mode == "nacks" and i == a.first + 3:
                    tags["device"] = "someone-else"  # reserved_tag
                if a.mode == "nacks" and i == a.first + 5:
                    fields["v"] = "five"  # field type conflict: rejected_by_database
                if a.mode == "nacks" and i == a.first + 7:
                    fields["s"] = "x" * 5000  # over the server's 4096 bytes: close 1009
                ts = None if a.auto_ts else a.ts0 + i
                await c.send("clients", fields, tags=tags, ts=ts)
                i += 1
                sent += 1
                if sent % 10 == 0:
                    out({"progress": sent})
            if a.mode == "hold":
                out({"held": sent, "stats": c.stats.to_dict()})
                await asyncio.sleep(3600)
            await c.flush(a.flush_timeout)
        except AuthError as e:
            result = {"result": "auth_error", "error": str(e), "status": e.status,
                      "close_code": e.close_code}
        except DeliveryFailed as e:
            result = {"result": "failed", "error": str(e),
                      "failures": [{"seq": f.seq, "error": f.error, "detail": f.detail}
                                   for f in e.failures]}
        except TimeoutError as e:
            result = {"result": "timeout", "error": str(e)}
        result["stats"] = c.stats.to_dict()
    out(result)


asyncio.run(main())
