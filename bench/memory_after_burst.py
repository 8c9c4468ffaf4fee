#!/usr/bin/env python3
"""Memory after a burst: one run against one shardcast binary (driven by memory-after-burst.sh).

Starts the server (one shard, pinned to SERVER_CPU), then for each phase: CLIENTS raw WebSocket
clients with a small receive buffer join a room and never read again, and one publisher sends
`publish` frames of SIZE data bytes to that room as fast as the server takes them, for SECONDS.
The server queues what the stalled clients cannot take and cuts them as slow consumers
(`timeouts.slow_consumer_ms`, 5 s by default); when the phases are over every client still
open is closed. RSS (VmRSS of the server) is recorded at start, at its peak (VmHWM), right after
the server reports no connection left, and HOLD seconds after that. Prints one JSON object.

Standard library only. Talks to 127.0.0.1 only; every loop is bounded in time.
"""

import argparse
import base64
import json
import os
import re
import select
import socket
import subprocess
import sys
import time

KEY = base64.b64encode(b"shardcast-bench!").decode()


def rss(pid, field="VmRSS"):
    """The server's `field` from /proc/PID/status, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


def metrics(port):
    """The server's /metrics as {sample: value}."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    body = data.split(b"\r\n\r\n", 1)[1].decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def client_frame(payload, opcode=1):
    """A masked, final client frame (RFC 6455 §5.2) with a fixed mask."""
    mask = b"\x12\x34\x56\x78"
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def ws_connect(port, rcvbuf=None, deadline_s=10.0):
    """A raw socket that has completed the WebSocket upgrade; returns (socket, bytes past it)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # Before connect, so the window the server sees is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(deadline_s)
    s.connect(("127.0.0.1", port))
    s.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the upgrade")
        got += chunk
    head, rest = got.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 101"):
        raise RuntimeError(head.decode(errors="replace"))
    return s, rest


def read_until(s, got, needle):
    while needle not in got:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError(f"closed before {needle!r}")
        got += chunk
    return got


def stalled_member(port, room):
    """A client that joins `room`, waits for `joined-room`, and never reads again."""
    s, rest = ws_connect(port, rcvbuf=4096)
    join = json.dumps({"event": "join-room", "data": room}).encode()
    s.sendall(client_frame(join))
    read_until(s, rest, b"joined-room")
    return s


def publish_for(port, room, size, seconds, limit=None):
    """One publisher sending `publish` frames of `size` data bytes to `room` as fast as the
    server reads them, for `seconds` or until `limit` frames are written. Returns the socket
    and the number of frames written whole."""
    data = "x" * (size - 2)  # a JSON string of `size` bytes with its quotes
    msg = json.dumps(
        {"event": "publish", "data": {"room": room, "event": "m", "data": data}},
        separators=(",", ":"),
    ).encode()
    frame = client_frame(msg)
    per_batch = max(1, (256 * 1024) // len(frame))
    batch = memoryview(frame * per_batch)
    s, _ = ws_connect(port)
    s.setblocking(False)
    end = time.monotonic() + seconds
    total = limit * len(frame) if limit else None
    sent = 0
    while total is None or sent < total:
        left = end - time.monotonic()
        if left <= 0:
            break
        _, w, _ = select.select([], [s], [], min(left, 0.2))
        if not w:
            continue
        try:
            off = sent % len(batch)
            upto = len(batch) if total is None else min(len(batch), off + total - sent)
            sent += s.send(batch[off:upto])
        except BlockingIOError:
            continue
    return s, sent // len(frame)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("binary")
    ap.add_argument("--label", default="")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--clients", type=int, default=30)
    ap.add_argument(
        "--phase",
        action="append",
        metavar="SIZE:SECONDS[:MESSAGES]",
        help="data bytes per message, how long to publish and at most how many messages; "
        "repeat for several phases (default: 64:10)",
    )
    ap.add_argument("--after", default="5,15,30", help="seconds after 'all gone' to sample RSS")
    ap.add_argument("--server-arg", action="append", default=[], help="extra server flag")
    args = ap.parse_args()
    phases = [(list(map(int, p.split(":"))) + [0])[:3] for p in (args.phase or ["64:10"])]
    after = [float(x) for x in args.after.split(",")]
    os.sched_setaffinity(0, {args.client_cpu})

    env = dict(os.environ, SHARDCAST_LOG="warn")
    server = subprocess.Popen(
        ["taskset", "-c", str(args.server_cpu), args.binary, "--host", "127.0.0.1",
         "--port", "0", "--tcp-port", "0", "--shards", "1", *args.server_arg],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
    )
    try:
        port = None
        start_deadline = time.monotonic() + 30
        while port is None and time.monotonic() < start_deadline:
            line = server.stdout.readline()
            if not line:
                break
            m = re.search(r"shardcast listening ws=127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        if port is None:
            raise RuntimeError("the server did not start")
        pid = server.pid  # taskset execs the server in place
        time.sleep(0.5)  # let start-up allocations settle before the baseline
        out = {"label": args.label, "binary": args.binary, "phases": [], "rss": {}}
        out["rss"]["start"] = rss(pid)
        sockets = []
        for i, (size, seconds, limit) in enumerate(phases):
            room = f"burst{i}"
            members = [stalled_member(port, room) for _ in range(args.clients)]
            pub, published = publish_for(port, room, size, seconds, limit or None)
            m = metrics(port)
            out["phases"].append({
                "size": size, "seconds": seconds, "published": published,
                "peak": rss(pid, "VmHWM"),
                "rss_at_end": rss(pid),
                "queued_bytes_at_end": m.get("shardcast_output_queued_bytes", 0),
                "slow_consumer_cuts": m.get('shardcast_disconnects_total{reason="slow_consumer"}', 0),
                "output_budget_cuts": m.get('shardcast_disconnects_total{reason="output_budget"}', 0),
            })
            sockets += members + [pub]
            # Reset the peak (VmHWM) so that the next phase has its own (proc(5), clear_refs).
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        out["rss"]["peak"] = max(p["peak"] for p in out["phases"])
        # Close every client the server has not cut (and the cut ones' sockets).
        for s in sockets:
            s.close()
        t0 = time.monotonic()
        gone_deadline = t0 + 30
        while True:
            m = metrics(port)
            active = sum(v for k, v in m.items() if k.startswith("shardcast_connections_active"))
            if active == 0:
                break
            if time.monotonic() > gone_deadline:
                raise RuntimeError(f"{active} connections still open 30 s after closing")
            time.sleep(0.01)
        out["gone_after_close_s"] = round(time.monotonic() - t0, 3)
        t_gone = time.monotonic()
        out["rss"]["gone"] = rss(pid)
        out["rss_series"] = []
        for a in sorted(after):
            while time.monotonic() < t_gone + a:
                time.sleep(min(0.25, t_gone + a - time.monotonic()))
                out["rss_series"].append((round(time.monotonic() - t_gone, 2), rss(pid)))
            out["rss"][f"+{a:g}s"] = rss(pid)
        out["queued_bytes_at_end"] = metrics(port).get("shardcast_output_queued_bytes", 0)
        print(json.dumps(out))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    sys.exit(main())
