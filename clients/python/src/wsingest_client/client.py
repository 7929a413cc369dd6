"""The asyncio device client. See the package docstring for the rules."""

from __future__ import annotations

import asyncio
import datetime as _dt
import heapq
import inspect
import json
import math
import random
import time
import urllib.parse
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Optional, Union

import cbor2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from .diskbuffer import DiskBuffer
from .errors import (
    AuthError,
    BufferFull,
    ClientClosed,
    DeliveryFailed,
    Failure,
    MessageTooLarge,
    WsingestError,
)

FieldValue = Union[float, int, bool, str]
Timestamp = Union[int, float, _dt.datetime, None]

#: Nack reasons worth a resend after a backoff: the server could not take the
#: message *now*. Every other reason is permanent: resending the same bytes
#: gets the same answer, so the message is reported to the caller instead.
TRANSIENT_ERRORS = frozenset(
    {
        "storage_unavailable",
        "rate_limited",
        "overloaded",
        "shutting_down",
        "bridge_unavailable",
        "too_many_series",
    }
)

#: After a transient nack the pause before sending again grows (doubling, up
#: to backoff_max) until this many seconds pass without one.
NACK_QUIET_S = 30.0

SUBPROTOCOLS = {"json": "wsingest.v1.json", "cbor": "wsingest.v1.cbor"}

_QUEUED, _IN_FLIGHT = 0, 1


@dataclass
class Stats:
    """What the client did, since it was created. ``to_dict()`` gives the same
    keys as the JavaScript and C clients."""

    #: Messages taken by ``send`` (each counted once).
    sent: int = 0
    #: Messages acked (durable on the server).
    acked: int = 0
    #: Messages refused for good (permanent nack, or 1009): see ``Failure``.
    nacked: int = 0
    #: Messages sent again after a reconnect (same seq, ts and bytes).
    resent: int = 0
    #: Messages sent again after a transient nack and its backoff.
    retried: int = 0
    #: Sessions established after a lost one.
    reconnects: int = 0
    #: Sessions established in all.
    connects: int = 0
    points_sent: int = 0
    points_acked: int = 0
    #: Messages restored from the disk buffer at start.
    restored: int = 0
    #: Commands received and answered.
    commands: int = 0
    #: Nacks by error code (permanent and transient).
    nacks: dict[str, int] = field(default_factory=dict)
    #: Close codes received from the server.
    closes: dict[str, int] = field(default_factory=dict)
    #: Failed connection attempts by reason (``refused``, ``http_503``, ...).
    connect_errors: dict[str, int] = field(default_factory=dict)
    #: Unacked messages held now (in flight or waiting).
    buffered: int = 0
    #: Messages sent on the current connection and not answered yet.
    in_flight: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Command:
    """A downlink command ``{"cmd": id, "name": ..., "args": {...}}``."""

    id: str
    name: str
    args: Any


CommandResult = Union[None, bool, tuple[bool, Optional[str]]]
CommandHandler = Callable[[Command], Union[CommandResult, Awaitable[CommandResult]]]


@dataclass
class _Msg:
    seq: int
    frame: Union[str, bytes]
    points: int
    state: int = _QUEUED
    sent_before: bool = False
    #: To go out again because the connection it was sent on was lost.
    resend: bool = False
    attempts: int = 0


class _Backoff:
    """Exponential backoff with jitter: base * 2^n, capped, times 0.5..1."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = base
        self.cap = max(cap, base)
        self.attempt = 0

    def next(self) -> float:
        d: float = min(self.base * float(2 ** min(self.attempt, 30)), self.cap)
        self.attempt += 1
        return d * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def device_url(url: str, device: str) -> str:
    """``ws://host:8765`` -> ``ws://host:8765/v1/devices/{device}``; a URL with
    ``{device}`` gets it substituted; a URL with another path is kept."""
    quoted = urllib.parse.quote(device, safe="")
    if "{device}" in url:
        return url.replace("{device}", quoted)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"url {url!r}: use ws:// or wss://, e.g. ws://127.0.0.1:8765")
    if parts.path in ("", "/"):
        return urllib.parse.urlunsplit(
            (parts.scheme, parts.netloc, f"/v1/devices/{quoted}", parts.query, "")
        )
    return url


class Client:
    """A device's connection to wsingest.

    ``url`` is the server's base URL (``ws://host:8765``); the client connects
    to ``/v1/devices/{device}`` with ``Authorization: Bearer <token>``.

    Rules (the same in every wsingest client, see docs/devices.md):

    * ``send`` stamps ``ts`` when the point is created (never at resend),
      assigns the next ``seq`` and keeps the encoded message until it is
      acked, in memory (at most ``buffer`` messages) and, with
      ``buffer_dir``, on disk.
    * Up to ``window`` messages are in flight on the connection; the rest
      wait their turn, in order.
    * A lost connection is reopened with exponential backoff and jitter
      (``backoff_base`` .. ``backoff_max`` seconds); everything unacked is
      sent again in seq order with the same bytes. Close 1013 (overloaded)
      and HTTP 429/503 are retried the same way.
    * HTTP 401/403 or close 1008: the client stops and ``send``/``flush``
      raise :class:`AuthError`.
    * A permanent nack, or close 1009 (then the largest unacked message is
      the culprit), ends that message: it is passed to ``on_failure`` or,
      without that callback, raised by the next ``flush`` as
      :class:`DeliveryFailed`. Transient nacks (``storage_unavailable``,
      ``rate_limited``, ...) are resent after a backoff.
    * No ack within ``ack_timeout`` seconds for the oldest message in
      flight: the connection is treated as lost.
    """

    def __init__(
        self,
        url: str,
        *,
        device: str,
        token: Optional[str] = None,
        encoding: str = "json",
        window: int = 64,
        buffer: int = 10_000,
        block: bool = True,
        buffer_dir: Optional[str] = None,
        fsync: bool = False,
        ack_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_message_bytes: int = 1 << 20,
        on_failure: Optional[Callable[[Failure], None]] = None,
        token_in_query: bool = False,
        ssl: Any = None,
    ) -> None:
        if encoding not in SUBPROTOCOLS:
            raise ValueError(f"encoding must be 'json' or 'cbor', not {encoding!r}")
        if window < 1 or buffer < 1:
            raise ValueError("window and buffer must be at least 1")
        self.url = device_url(url, device)
        if token and token_in_query:
            sep = "&" if "?" in self.url else "?"
            self.url += f"{sep}token={urllib.parse.quote(token, safe='')}"
        self.device = device
        self._token = token
        self._token_in_query = token_in_query
        self.encoding = encoding
        self.window = window
        self.buffer = buffer
        self.block = block
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.max_message_bytes = max_message_bytes
        self.on_failure = on_failure
        self._ssl = ssl
        self._backoff = _Backoff(backoff_base, backoff_max)
        self._nack_backoff = _Backoff(backoff_base, min(backoff_max, 5.0))
        self._hold_until = 0.0
        self._last_progress = 0.0
        # In flight at most: `window`, down to 1 after a transient nack.
        self._cwnd = window
        self._last_transient = 0.0
        self._disk = DiskBuffer(buffer_dir, fsync=fsync) if buffer_dir else None
        self._held: dict[int, _Msg] = {}
        self._queue: list[int] = []
        self._in_flight = 0
        self._replies: deque[Union[str, bytes]] = deque()
        self._next_seq = 1
        self._last_auto_ts = 0
        self._failures: list[Failure] = []
        self._fatal: Optional[WsingestError] = None
        self._closed = False
        self._command_handler: Optional[CommandHandler] = None
        self._changed = asyncio.Event()
        self._wake = asyncio.Event()
        self._runner: Optional[asyncio.Task[None]] = None
        self._ws: Optional[ClientConnection] = None
        self._session_end: Optional[tuple[int, str]] = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stats = Stats()
        if self._disk is not None:
            stored, self._next_seq = self._disk.load()
            for s in stored:
                self._held[s.seq] = _Msg(s.seq, s.frame, s.points, sent_before=True, resend=True)
                heapq.heappush(self._queue, s.seq)
            self.stats.restored = len(stored)
        self._sync_stats()

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> "Client":
        self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (``async with`` does this)."""
        if self._runner is None:
            self._changed = asyncio.Event()
            self._wake = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Close the connection (1000) and stop. Does not wait for acks: call
        ``flush`` first. Unacked messages stay in the disk buffer, if any."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        ws = self._ws
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(1000, "client closing"), 5)
            except Exception:
                pass
        if self._runner is not None:
            self._runner.cancel()
            try:
                await self._runner
            except (asyncio.CancelledError, Exception):
                pass
        for t in list(self._tasks):
            t.cancel()
        if self._disk is not None:
            self._disk.close()
        self._notify()

    # -- the API -----------------------------------------------------------

    def on_command(self, handler: CommandHandler) -> CommandHandler:
        """Set the handler of downlink commands (usable as a decorator).

        It gets a :class:`Command` and returns ``None``/``True`` (ok),
        ``False`` (failed) or ``(ok, detail)``; it may be async. An exception
        answers ``ok: false`` with its text. Without a handler every command
        is answered ``ok: false``."""
        self._command_handler = handler
        return handler

    async def send(
        self,
        measurement: str,
        fields: Mapping[str, FieldValue],
        tags: Optional[Mapping[str, str]] = None,
        ts: Timestamp = None,
    ) -> int:
        """Take one point; returns its ``seq``. Returns once the message is
        held (and written to the disk buffer, if any), not once acked: use
        ``flush`` for that. Waits while the buffer is full (``block=False``:
        raises :class:`BufferFull`).

        ``ts``: epoch milliseconds (int or float), a ``datetime`` (naive is
        taken as UTC), or None for now. Auto stamps never repeat a
        millisecond within a client, so two points of one series are never
        overwritten in InfluxDB."""
        return await self.send_points([{"measurement": measurement, "fields": fields,
                                        "tags": tags, "ts": ts}])

    async def send_points(self, points: list[Mapping[str, Any]]) -> int:
        """Take several points as one message (one seq, one ack). Each point
        is a mapping with ``fields`` and optional ``measurement``, ``tags``
        and ``ts`` (as in :meth:`send`)."""
        self._check_usable()
        if not points:
            raise ValueError("no points")
        wire = [self._point(p) for p in points]
        while len(self._held) >= self.buffer:
            if not self.block:
                raise BufferFull(f"{len(self._held)} unacked messages held (buffer={self.buffer})")
            changed = self._changed
            await changed.wait()
            self._check_usable()
        seq = self._next_seq
        msg: dict[str, Any] = {"seq": seq}
        if len(wire) == 1:
            msg.update(wire[0])
        else:
            msg["points"] = wire
        frame = self._encode(msg)
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode("utf-8"))
        if size > self.max_message_bytes:
            raise MessageTooLarge(
                f"message of {size} bytes is over max_message_bytes={self.max_message_bytes}"
            )
        self._next_seq += 1
        if self._disk is not None:
            self._disk.append(seq, frame, len(wire))
        self._held[seq] = _Msg(seq, frame, len(wire))
        heapq.heappush(self._queue, seq)
        self.stats.sent += 1
        self.stats.points_sent += len(wire)
        self._sync_stats()
        self._wake.set()
        return seq

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until every message taken so far is answered (acked, or
        refused for good). Raises ``TimeoutError`` after ``timeout`` seconds,
        :class:`AuthError` if the server refused the device, and
        :class:`DeliveryFailed` if messages were refused since the last flush
        and there is no ``on_failure`` callback."""
        last = self._next_seq - 1
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._fatal is not None:
                raise self._fatal
            oldest = next(iter(self._held), None)
            if oldest is None or oldest > last:
                break
            if self._closed:
                raise ClientClosed("closed before everything was acked")
            changed = self._changed
            if deadline is None:
                await changed.wait()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    n = sum(1 for s in self._held if s <= last)
                    raise TimeoutError(f"flush: {n} message(s) still unacked after {timeout} s")
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except asyncio.TimeoutError:
                    pass
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryFailed(failures)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- encoding ----------------------------------------------------------

    def _point(self, p: Mapping[str, Any]) -> dict[str, Any]:
        fields = p.get("fields")
        if not isinstance(fields, Mapping) or not fields:
            raise ValueError("fields must be a non-empty mapping")
        out: dict[str, Any] = {"ts": self._stamp(p.get("ts"))}
        measurement = p.get("measurement")
        if measurement is not None:
            if not isinstance(measurement, str):
                raise TypeError("measurement must be a str")
            out["measurement"] = measurement
        tags = p.get("tags")
        if tags:
            for k, v in tags.items():
                if not isinstance(k, str) or not isinstance(v, str):
                    raise TypeError(f"tag {k!r}: tag keys and values are str")
            out["tags"] = dict(tags)
        for k, v in fields.items():
            if not isinstance(k, str):
                raise TypeError(f"field name {k!r} is not a str")
            if isinstance(v, bool) or isinstance(v, str):
                continue
            if isinstance(v, (int, float)):
                if isinstance(v, float) and not math.isfinite(v):
                    raise ValueError(f"fields.{k} is {v}: InfluxDB stores finite numbers only")
                continue
            raise TypeError(f"fields.{k}: a number, bool or str, not {type(v).__name__}")
        out["fields"] = dict(fields)
        return out

    def _stamp(self, ts: Timestamp) -> Union[int, float, str]:
        if ts is None:
            now = time.time_ns() // 1_000_000
            t = max(now, self._last_auto_ts + 1)
            self._last_auto_ts = t
            return t
        if isinstance(ts, bool):
            raise TypeError("ts: epoch milliseconds, a datetime or None")
        if isinstance(ts, (int, float)):
            if isinstance(ts, float) and not math.isfinite(ts):
                raise ValueError("ts is not finite")
            return ts
        if isinstance(ts, _dt.datetime):
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=_dt.timezone.utc)
            ts = ts.astimezone(_dt.timezone.utc)
            if ts.microsecond % 1000 == 0:
                epoch = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
                delta = ts - epoch
                return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
            return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        raise TypeError("ts: epoch milliseconds, a datetime or None")

    def _encode(self, msg: Mapping[str, Any]) -> Union[str, bytes]:
        if self.encoding == "cbor":
            return cbor2.dumps(msg)
        return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def _decode(self, frame: Union[str, bytes]) -> Any:
        if isinstance(frame, bytes):
            return cbor2.loads(frame)
        return json.loads(frame)

    # -- state -------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closed:
            raise ClientClosed("the client is closed")

    def _notify(self) -> None:
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()

    def _sync_stats(self) -> None:
        self.stats.buffered = len(self._held)
        self.stats.in_flight = self._in_flight

    def _answered(self, m: _Msg) -> None:
        """``m`` is done (acked or refused for good): forget it."""
        del self._held[m.seq]
        if m.state == _IN_FLIGHT:
            self._in_flight -= 1
        if self._disk is not None:
            self._disk.done(m.seq, self._held)
        self._sync_stats()
        self._notify()
        self._wake.set()

    def _fail(self, m: _Msg, error: str, detail: str) -> None:
        self._answered(m)
        self.stats.nacked += 1
        f = Failure(m.seq, error, detail, m.frame)
        if self.on_failure is not None:
            try:
                self.on_failure(f)
            except Exception:  # the callback's bug must not kill the client
                pass
        else:
            self._failures.append(f)

    def _handle(self, frame: Union[str, bytes]) -> None:
        try:
            d = self._decode(frame)
        except Exception:
            return
        if not isinstance(d, dict):
            return
        if "ack" in d:
            m = self._held.get(d["ack"]) if isinstance(d["ack"], int) else None
            self._last_progress = time.monotonic()
            if m is not None and m.state == _IN_FLIGHT:
                self.stats.acked += 1
                self.stats.points_acked += m.points
                self._backoff.reset()
                if self._cwnd < self.window:
                    # Slow start after a transient nack: one more per ack.
                    self._cwnd += 1
                if time.monotonic() - self._last_transient > NACK_QUIET_S:
                    self._nack_backoff.reset()
                self._answered(m)
        elif "nack" in d:
            self._last_progress = time.monotonic()
            error = str(d.get("error", "unknown"))
            detail = str(d.get("detail", ""))
            self.stats.nacks[error] = self.stats.nacks.get(error, 0) + 1
            m = self._held.get(d["nack"]) if isinstance(d["nack"], int) else None
            if m is None or m.state != _IN_FLIGHT:
                return
            if error in TRANSIENT_ERRORS:
                # Back in the queue at its place; the whole session pauses
                # (new messages too) for a backoff, then sends one message at
                # a time and opens the window again ack by ack.
                m.state = _QUEUED
                self._in_flight -= 1
                m.attempts += 1
                heapq.heappush(self._queue, m.seq)
                now = time.monotonic()
                self._last_transient = now
                self._cwnd = 1
                if now >= self._hold_until:
                    self._hold_until = now + self._nack_backoff.next()
                self._sync_stats()
                self._wake.set()
            else:
                self._fail(m, error, detail)
        elif "cmd" in d:
            cmd = Command(str(d["cmd"]), str(d.get("name", "")), d.get("args"))
            t = asyncio.get_running_loop().create_task(self._command(cmd))
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _command(self, cmd: Command) -> None:
        ok: bool = False
        detail: Optional[str] = "this device has no command handler"
        if self._command_handler is not None:
            try:
                r = self._command_handler(cmd)
                if inspect.isawaitable(r):
                    r = await r
                if r is None or r is True:
                    ok, detail = True, None
                elif r is False:
                    ok, detail = False, None
                else:
                    ok, detail = bool(r[0]), r[1]
            except Exception as e:
                ok, detail = False, str(e) or type(e).__name__
        reply: dict[str, Any] = {"cmd_result": cmd.id, "ok": ok}
        if detail is not None:
            reply["detail"] = detail
        self.stats.commands += 1
        self._replies.append(self._encode(reply))
        self._wake.set()

    # -- the connection loop -----------------------------------------------

    async def _run(self) -> None:
        lost = False
        while not self._closed:
            try:
                ws = await self._connect()
            except AuthError as e:
                self._stop(e)
                return
            except Exception as e:
                kind = _connect_error_kind(e)
                self.stats.connect_errors[kind] = self.stats.connect_errors.get(kind, 0) + 1
                retry_after = _retry_after(e)
                await self._pause(max(self._backoff.next(), retry_after))
                continue
            self.stats.connects += 1
            if lost:
                self.stats.reconnects += 1
            lost = True
            code, reason = await self._session(ws)
            self._ws = None
            if self._closed:
                return
            if code == 1008:
                self._stop(AuthError(f"the server closed the session with 1008: {reason}",
                                     close_code=1008, reason=reason))
                return
            await self._pause(self._backoff.next())

    async def _connect(self) -> ClientConnection:
        headers = {}
        if self._token and not self._token_in_query:
            headers["Authorization"] = f"Bearer {self._token}"
        kwargs: dict[str, Any] = dict(
            subprotocols=[SUBPROTOCOLS[self.encoding]],
            additional_headers=headers,
            open_timeout=self.connect_timeout,
            compression=None,
            max_size=16 * 1024 * 1024,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=2,
        )
        if self._ssl is not None:
            kwargs["ssl"] = self._ssl
        try:
            return await connect(self.url, **kwargs)
        except InvalidStatus as e:
            status = e.response.status_code
            if status in (401, 403):
                body = e.response.body.decode("utf-8", "replace") if e.response.body else ""
                raise AuthError(f"the server refused the device's token: HTTP {status} {body}".strip(),
                                status=status, reason=body) from e
            raise

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._sleep_until_closed(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _sleep_until_closed(self) -> None:
        while not self._closed:
            self._wake.clear()
            await self._wake.wait()

    def _stop(self, err: WsingestError) -> None:
        self._fatal = err
        self._notify()

    async def _session(self, ws: ClientConnection) -> tuple[int, str]:
        """Run one connection until it ends; returns (close code, reason)."""
        self._ws = ws
        self._session_end = None
        self._replies.clear()
        # Everything unanswered goes out again, in seq order, same bytes.
        self._in_flight = 0
        self._queue = []
        for m in self._held.values():
            if m.sent_before:
                m.resend = True
            m.state = _QUEUED
            self._queue.append(m.seq)
        heapq.heapify(self._queue)
        self._sync_stats()
        reader = asyncio.get_running_loop().create_task(self._reader(ws))
        try:
            while self._session_end is None and not self._closed:
                self._wake.clear()
                while self._replies:
                    await ws.send(self._replies.popleft())
                while self._can_send():
                    seq = heapq.heappop(self._queue)
                    held = self._held.get(seq)
                    if held is None or held.state != _QUEUED:
                        continue
                    m = held
                    m.state = _IN_FLIGHT
                    if self._in_flight == 0:
                        self._last_progress = time.monotonic()
                    self._in_flight += 1
                    if m.resend:
                        self.stats.resent += 1
                    elif m.sent_before:
                        self.stats.retried += 1
                    m.resend = False
                    m.sent_before = True
                    await ws.send(m.frame)
                    if self._session_end is not None:
                        break
                self._sync_stats()
                if self._session_end is not None or self._closed:
                    break
                if self._replies or self._can_send():
                    continue
                held_back = self._hold_until - time.monotonic()
                timeout = held_back if held_back > 0 and self._queue else None
                if self._in_flight > 0:
                    # No answer at all for ack_timeout while messages are in
                    # flight: the connection is dead or the server stuck.
                    ack_left = self._last_progress + self.ack_timeout - time.monotonic()
                    timeout = ack_left if timeout is None else min(timeout, ack_left)
                    if ack_left <= 0:
                        await ws.close(4000, "no ack in time")
                        self.stats.closes["ack_timeout"] = self.stats.closes.get("ack_timeout", 0) + 1
                        break
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        except ConnectionClosed:
            pass
        await reader
        assert self._session_end is not None
        code, reason = self._session_end
        if code == 1009:
            self._too_big(reason)
        return code, reason

    def _can_send(self) -> bool:
        return (bool(self._queue) and self._in_flight < self._cwnd
                and time.monotonic() >= self._hold_until)

    async def _reader(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                self._handle(frame)
        except ConnectionClosed:
            pass
        except Exception:
            pass
        rcvd = ws.close_code if ws.close_code is not None else 1006
        reason = ws.close_reason or ""
        if not self._closed:
            key = str(rcvd)
            self.stats.closes[key] = self.stats.closes.get(key, 0) + 1
        self._session_end = (rcvd, reason)
        self._wake.set()

    def _too_big(self, reason: str) -> None:
        """Close 1009: the server refused a frame over its limit before
        reading it. The culprit is over the limit, so the largest unacked
        message is too: it is refused for good (else every reconnect would
        resend it and be closed again)."""
        candidates = list(self._held.values())
        if not candidates:
            return
        big = max(candidates, key=lambda m: len(m.frame))
        size = len(big.frame) if isinstance(big.frame, bytes) else len(big.frame.encode("utf-8"))
        self.max_message_bytes = min(self.max_message_bytes, max(size - 1, 1))
        self._fail(big, "too_large",
                   f"the server closed the connection with 1009 (message too big): "
                   f"this message is {size} bytes {reason}".strip())


def _connect_error_kind(e: BaseException) -> str:
    if isinstance(e, InvalidStatus):
        return f"http_{e.response.status_code}"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, (asyncio.TimeoutError, TimeoutError)):
        return "timeout"
    if isinstance(e, InvalidHandshake):
        return "handshake"
    if isinstance(e, OSError):
        return "tcp"
    return type(e).__name__


def _retry_after(e: BaseException) -> float:
    if isinstance(e, InvalidStatus):
        v = e.response.headers.get("Retry-After")
        try:
            return min(float(v), 300.0) if v else 0.0
        except ValueError:
            return 0.0
    return 0.0


__all__ = ["Client", "Stats", "Command", "Failure", "TRANSIENT_ERRORS", "device_url"]
