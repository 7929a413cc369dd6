"""wsingest device client (asyncio).

A device keeps one WebSocket open to a wsingest server, sends telemetry and
gets ``{"ack": seq}`` once its points are durable (in InfluxDB or the
server's fsynced spool). This client keeps every message until it is acked,
resends what was not acked after a reconnect (same seq, same ``ts``, same
bytes: InfluxDB overwrites, so nothing is stored twice), backs off when the
server is overloaded, stops on an auth refusal and reports every message the
server refuses for good, with its reason::

    import asyncio
    from wsingest_client import Client

    async def main():
        async with Client("ws://127.0.0.1:8765", device="meter-7",
                          token="wsi_...", encoding="cbor") as c:
            c.on_command(lambda cmd: print("command", cmd.name, cmd.args))
            for i in range(100):
                await c.send("power", {"watts": 230.5 + i}, tags={"phase": "L1"})
            await c.flush(timeout=30)
            print(c.stats.to_dict())

    asyncio.run(main())

See docs/devices.md in the wsingest repository for the protocol and the rules.
"""

from .client import TRANSIENT_ERRORS, Client, Command, Stats, device_url
from .errors import (
    AuthError,
    BufferFull,
    ClientClosed,
    DeliveryFailed,
    Failure,
    MessageTooLarge,
    WsingestError,
)

__version__ = "0.1.0"

__all__ = [
    "AuthError",
    "BufferFull",
    "Client",
    "ClientClosed",
    "Command",
    "DeliveryFailed",
    "Failure",
    "MessageTooLarge",
    "Stats",
    "TRANSIENT_ERRORS",
    "WsingestError",
    "device_url",
    "__version__",
]
