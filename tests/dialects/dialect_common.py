"""Shared by the dialect test clients (stellarstack_client.py, ignis_client.py,
stonyx_client.py), which tests/dialects.rs runs against the real server.

Conventions:
- Invocation: `CLIENT.py FLOW 'JSON ARGS'`.
- Every line on stdout is one JSON object `{"at": NAME, ...}`; tests/dialects.rs reads them in
  order and knows the exact sequence each flow prints.
- At a point where the test has to act (publish from a backend, check membership), the client
  prints `{"at": NAME, ...}` and reads commands from stdin, one JSON object a line:
    {"expect": N}   receive N pushes, check each one's shape, print {"at":"received",...} for
                    each, then {"at":"ok"}
    {"send": OBJ}   send OBJ (JSON) as a text message, then print {"at":"ok"}
    {"continue": true}  go on with the flow
- Any deviation from the documented shapes (exact keys and values), any unexpected message,
  any wait past its deadline: a message on stderr starting with DEVIATION and exit status 1.
- The last line of a successful flow is {"at": "done", "flow": FLOW}.
"""
import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
import time
import urllib.parse

import websockets

# How long any single wait may take (the Rust side waits longer, so this message comes first).
T = 8.0


def out(at, **kw):
    sys.stdout.write(json.dumps({"at": at, **kw}) + "\n")
    sys.stdout.flush()


def fail(msg):
    sys.stdout.flush()
    sys.stderr.write(f"DEVIATION: {msg}\n")
    sys.stderr.flush()
    os._exit(1)


def canon(v):
    return json.dumps(v, sort_keys=True, separators=(",", ":"))


def exact(got, want, what):
    """`got` must be `want`: same keys, same values, same JSON types (1 is not true)."""
    if canon(got) != canon(want):
        fail(f"{what}: expected {canon(want)}, got {canon(got)}")


def keys(obj, ks, what):
    """`obj` must be an object with exactly the keys `ks`."""
    if not isinstance(obj, dict) or set(obj) != set(ks):
        got = sorted(obj) if isinstance(obj, dict) else obj
        fail(f"{what}: expected an object with exactly the keys {sorted(ks)}, got {canon(got)}"
             f" ({canon(obj)})")


def check(cond, msg):
    if not cond:
        fail(msg)


async def within(what, aw, t=T):
    try:
        return await asyncio.wait_for(aw, t)
    except asyncio.TimeoutError:
        fail(f"nothing within {t} s: {what}")


def close_of(e):
    r = e.rcvd
    return "no close frame" if r is None else f"close {r.code} {r.reason!r}"


async def connect(url, headers=None, deflate=True):
    """A `websockets` client; it offers permessage-deflate unless `deflate` is false."""
    try:
        return await within(f"connect {url}", websockets.connect(
            url, additional_headers=headers, open_timeout=T, ping_interval=None,
            max_size=None, compression="deflate" if deflate else None))
    except websockets.InvalidStatus as e:
        fail(f"upgrade refused at {url}: HTTP {e.response.status_code}")
    except (OSError, websockets.InvalidHandshake) as e:
        fail(f"cannot connect to {url}: {e!r}")


def extension(ws):
    """The extensions the server accepted (permessage-deflate or none)."""
    return ws.response.headers.get("Sec-WebSocket-Extensions")


async def send(ws, obj):
    await ws.send(obj if isinstance(obj, str) else json.dumps(obj))


async def recv(ws, what):
    """The next message, which must be a JSON object in a text frame: (object, text)."""
    try:
        m = await within(what, ws.recv())
    except websockets.ConnectionClosed as e:
        fail(f"connection closed ({close_of(e)}) while waiting for {what}")
    if isinstance(m, bytes):
        fail(f"a binary message ({m[:64]!r}) while waiting for {what}: "
             "these clients only speak JSON text")
    try:
        v = json.loads(m)
    except ValueError:
        fail(f"not JSON ({m!r}) while waiting for {what}")
    if not isinstance(v, dict):
        fail(f"not a JSON object ({m!r}) while waiting for {what}")
    return v, m


async def request(ws, obj, what):
    await send(ws, obj)
    v, _ = await recv(ws, what)
    return v


async def expect_close(ws, code, reason=None, what="the close"):
    """The server closes with `code` (and `reason` when given), sending nothing before.
    Returns (code, reason, seconds waited)."""
    t0 = time.monotonic()
    try:
        m = await within(f"{what} (close {code})", ws.recv())
        fail(f"expected the server to close with {code}, got a message first: {m!r}")
    except websockets.ConnectionClosed as e:
        r = e.rcvd
        if r is None:
            fail(f"expected close {code}, the connection ended without a close frame")
        if r.code != code:
            fail(f"expected close {code}, got {r.code} {r.reason!r}")
        if reason is not None and r.reason != reason:
            fail(f"close {code}: expected reason {reason!r}, got {r.reason!r}")
        return r.code, r.reason, time.monotonic() - t0


class Commands:
    """The test's commands on stdin (non-blocking, so a failing flow exits at once)."""

    reader = None

    @classmethod
    async def next(cls):
        if cls.reader is None:
            loop = asyncio.get_running_loop()
            cls.reader = asyncio.StreamReader()
            await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(cls.reader), sys.stdin)
        line = await within("a command from the test on stdin", cls.reader.readline(), 30)
        if not line:
            fail("the test closed stdin while the client waited for a command")
        return json.loads(line)


async def serve(ws, at, check_push, **info):
    """Prints {"at": at, **info}, then carries out the test's commands until `continue`."""
    out(at, **info)
    while True:
        cmd = await Commands.next()
        if "expect" in cmd:
            for i in range(cmd["expect"]):
                v, raw = await recv(ws, f"push {i + 1} of {cmd['expect']} at {at!r}")
                check_push(v)
                out("received", msg=v, raw=raw)
            out("ok")
        elif "send" in cmd:
            await send(ws, cmd["send"])
            out("ok")
        elif cmd.get("continue"):
            return
        else:
            fail(f"unknown command from the test: {cmd}")


def run(flows):
    """Runs flows[argv[1]] with the JSON argv[2]; prints done."""
    if len(sys.argv) != 3 or sys.argv[1] not in flows:
        fail(f"usage: {sys.argv[0]} {'|'.join(flows)} 'JSON ARGS'")
    flow, args = sys.argv[1], json.loads(sys.argv[2])

    async def main():
        await flows[flow](args)
        out("done", flow=flow)

    asyncio.run(main())


class RawWs:
    """A WebSocket client written by hand on a TCP socket, to play a client that never
    answers the server's pings (a library client answers them by itself). Text frames only,
    masked; server frames unfragmented or fragmented, uncompressed (no extension offered)."""

    def __init__(self, r, w):
        self.r, self.w = r, w
        self.pings = 0

    @classmethod
    async def connect(cls, url):
        u = urllib.parse.urlsplit(url)
        r, w = await within(f"TCP connect {url}", asyncio.open_connection(u.hostname, u.port))
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        w.write((f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
                 f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        await w.drain()
        head = (await within("the 101", r.readuntil(b"\r\n\r\n"))).decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            fail(f"upgrade refused at {url}: {head.splitlines()[0]!r}")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        if accept not in head:
            fail(f"wrong Sec-WebSocket-Accept in {head!r}")
        return cls(r, w)

    async def send_text(self, obj):
        payload = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.w.write(head + mask + body)
        await self.w.drain()

    async def frame(self, what):
        """The next whole message: (opcode, payload). Pings are counted, never answered."""
        async def read():
            op0, data = None, b""
            while True:
                b0, b1 = await self.r.readexactly(2)
                n = b1 & 0x7F
                if n == 126:
                    n = struct.unpack("!H", await self.r.readexactly(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", await self.r.readexactly(8))[0]
                if b1 & 0x80:
                    fail("the server masked a frame")
                payload = await self.r.readexactly(n)
                op = b0 & 0x0F
                if op == 9:
                    self.pings += 1
                    continue
                if op == 10:
                    continue
                if op >= 8:
                    return op, payload
                if op != 0:
                    op0 = op
                data += payload
                if b0 & 0x80:
                    return op0, data
        try:
            return await within(what, read())
        except asyncio.IncompleteReadError:
            fail(f"the connection ended without a close frame while waiting for {what}")

    async def recv(self, what):
        op, payload = await self.frame(what)
        if op == 8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            fail(f"closed ({code} {payload[2:].decode(errors='replace')!r}) while waiting for "
                 f"{what}")
        if op != 1:
            fail(f"opcode {op} while waiting for {what}: these clients only get text")
        try:
            return json.loads(payload)
        except ValueError:
            fail(f"not JSON ({payload!r}) while waiting for {what}")

    async def expect_close(self, what):
        """Waits for the close frame (pings skipped, unanswered): (code, reason)."""
        op, payload = await self.frame(what)
        if op != 8:
            fail(f"expected a close frame ({what}), got opcode {op}: {payload[:200]!r}")
        if len(payload) < 2:
            fail(f"a close frame without a code ({what})")
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode()

    def close(self):
        self.w.close()


async def auth_timeout(url, keep_alive):
    """A client that keeps itself alive (`await keep_alive(ws)`) but never authenticates, and
    waits for the close 4001 of the auth timeout: prints {"at":"closed", code, reason,
    seconds}."""
    ws = await connect(url)
    await keep_alive(ws)
    code, reason, waited = await expect_close(ws, 4001, "Authentication timeout",
                                              "the auth timeout")
    out("closed", code=code, reason=reason, seconds=round(waited, 3))


async def silent(url, auth_msg, auth_ok, wait_s):
    """A client that authenticates by hand, then never sends a byte nor answers a ping, and
    waits for the server to close it: prints {"at":"closed", code, reason, pings, seconds}."""
    c = await RawWs.connect(url)
    await c.send_text(auth_msg)
    v = await c.recv("the authentication answer")
    auth_ok(v)
    t0 = time.monotonic()
    code, reason = await within("the heartbeat close", c.expect_close("the heartbeat close"),
                                wait_s)
    out("closed", code=code, reason=reason, pings=c.pings,
        seconds=round(time.monotonic() - t0, 3))
    c.close()
