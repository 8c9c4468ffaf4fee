"""An ignis WebSocket client written from ignis' WebSocket helper reference (WebSocketServerHelper,
../shared/seeds/003) and the dialect contract, driven by tests/dialects.rs.

Usage: ignis_client.py FLOW 'JSON ARGS' (see dialect_common.py for the conventions).

Wire format: `{"event": E, "data": D}` both ways.

Flows:
  auth       {url, token, user}: heartbeat (no answer); join / any event before auth ->
             error "Not authenticated"; not JSON -> error "Invalid message format"; nothing
             pushed while unauthenticated; authenticate -> connected {id, userId, time};
             the relay's echo; an unknown event -> error {message, code, event}.
  auth-bad   {url, bad_token}: authenticate with a bad token, with no token, with no data ->
             error {message: REASON}, then close 4003 REASON.
  timeout    {url}: heartbeats but no authenticate -> close 4001 "Authentication timeout".
  heartbeat  {url, token, user, wait_s}: two clients written by hand that never answer the
             server's pings: one silent (closed 4002 "Heartbeat timeout"), one sending
             heartbeat events (kept alive past the timeout; its echo still answered).
  session    {url, token, user, rooms: [R1, R2]}: authenticate; pushes at "connected" (default
             rooms, the client-id room, to the client, to the user, broadcast); join R1 R2 (no
             confirmation); pushes at "joined"; leave R1; pushes at "left"; echo.
  member     {url, token, user, rooms, deflate?}: authenticate, join, pushes at "ready"
             (which names the negotiated extension).
"""
import asyncio
import datetime
import json
import re
import time

from dialect_common import (RawWs, auth_timeout, check, connect, exact, expect_close, extension,
                            keys, out, request, run, send, serve, within)

NOT_AUTHENTICATED = {"event": "error", "data": {"message": "Not authenticated"}}
INVALID = {"event": "error", "data": {"message": "Invalid message format"}}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def check_push(v):
    """A push is `{"event": E, "data": D}` (IWebSocketMessage without id), never an error."""
    check(set(v) <= {"event", "data"} and isinstance(v.get("event"), str),
          f"a push must be {{event, data}}: {json.dumps(v)}")
    check(v["event"] not in ("error", "connected"),
          f"expected a push, got {json.dumps(v)}")


def check_connected(v, user):
    check(v.get("event") == "connected", f"expected the connected event, got {json.dumps(v)}")
    keys(v, ["event", "data"], "connected")
    d = v["data"]
    keys(d, ["id", "userId", "time"], "connected data")
    check(isinstance(d["id"], str) and d["id"], f"connected: id must be a string: {d}")
    exact(d["userId"], user, "connected: userId (the token's sub)")
    check(isinstance(d["time"], str) and ISO_MS.match(d["time"]),
          f"connected: time must be an ISO 8601 UTC timestamp with ms: {d['time']!r}")
    t = datetime.datetime.strptime(d["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    check(abs(t - time.time()) < 60, f"connected: time {d['time']} is not now")
    return d


async def authenticate(ws, token, user):
    v = await request(ws, {"event": "authenticate", "data": {"token": token}}, "connected")
    return check_connected(v, user)


async def flow_auth(a):
    ws = await connect(a["url"])
    await send(ws, {"event": "heartbeat"})
    v = await request(ws, {"event": "join", "data": {"rooms": ["x"]}}, "an error")
    exact(v, NOT_AUTHENTICATED, "join before authenticate (heartbeat got no answer)")
    v = await request(ws, {"event": "echo", "data": 1}, "an error")
    exact(v, NOT_AUTHENTICATED, "an event before authenticate")
    v = await request(ws, "not json", "an error")
    exact(v, INVALID, "not JSON")
    await serve(ws, "unauthenticated", check_push)
    v = await request(ws, "{\"event\":", "an error")
    exact(v, INVALID, "truncated JSON (after pushes the client must not get)")
    await send(ws, {"event": "heartbeat"})
    d = await authenticate(ws, a["token"], a["user"])
    out("connected", id=d["id"], time=d["time"])
    data = {"n": [1, "two", None], "s": "é"}
    v = await request(ws, {"event": "echo", "data": data}, "the echo")
    exact(v, {"event": "echo", "data": data}, "echo")
    v = await request(ws, {"event": "bogus", "data": 1}, "an error")
    check(v.get("event") == "error", f"an unknown event: expected an error: {json.dumps(v)}")
    keys(v, ["event", "data"], "an unknown event's error")
    keys(v["data"], ["message", "code", "event"], "an unknown event's error data")
    exact(v["data"]["event"], "bogus", "the error names the event")
    check(isinstance(v["data"]["message"], str) and isinstance(v["data"]["code"], str),
          f"message and code must be strings: {json.dumps(v)}")
    out("unknown", error=v["data"])
    await ws.close()


async def flow_auth_bad(a):
    for how, msg in [
        ("bad token", {"event": "authenticate", "data": {"token": a["bad_token"]}}),
        ("no token", {"event": "authenticate", "data": {}}),
        ("no data", {"event": "authenticate"}),
    ]:
        ws = await connect(a["url"])
        v = await request(ws, msg, f"the error ({how})")
        check(v.get("event") == "error", f"authenticate with {how}: {json.dumps(v)}")
        keys(v, ["event", "data"], f"authenticate with {how}")
        keys(v["data"], ["message"], f"authenticate with {how}: data")
        reason = v["data"]["message"]
        check(isinstance(reason, str) and reason, f"no reason: {json.dumps(v)}")
        await expect_close(ws, 4003, reason, f"the close after a refused authenticate ({how})")
        out("refused", how=how, reason=reason)


async def flow_timeout(a):
    await auth_timeout(a["url"], lambda ws: send(ws, {"event": "heartbeat"}))


async def flow_heartbeat(a):
    """Both clients authenticate by hand and never answer a ping."""
    async def raw_client():
        c = await RawWs.connect(a["url"])
        await c.send_text({"event": "authenticate", "data": {"token": a["token"]}})
        check_connected(await c.recv("connected"), a["user"])
        return c

    silent, beating = await raw_client(), await raw_client()
    t0 = time.monotonic()
    stop = asyncio.Event()

    async def beat():
        while not stop.is_set():
            await beating.send_text({"event": "heartbeat"})
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass

    beater = asyncio.create_task(beat())
    code, reason = await within("the heartbeat close", silent.expect_close("the 4002"),
                                a["wait_s"])
    closed_after = time.monotonic() - t0
    exact([code, reason], [4002, "Heartbeat timeout"], "the silent client's close")
    out("closed", code=code, reason=reason, pings=silent.pings,
        seconds=round(closed_after, 3))
    # The heartbeating client outlives the silent one by as long again.
    await asyncio.sleep(closed_after)
    stop.set()
    await beater
    await beating.send_text({"event": "echo", "data": "alive"})
    v = await beating.recv("the echo of the heartbeating client")
    exact(v, {"event": "echo", "data": "alive"}, "echo after heartbeats")
    out("alive", pings=beating.pings, seconds=round(time.monotonic() - t0, 3))
    silent.close()
    beating.close()


async def flow_session(a):
    ws = await connect(a["url"])
    d = await authenticate(ws, a["token"], a["user"])
    await serve(ws, "connected", check_push, id=d["id"])
    r1, r2 = a["rooms"]
    await send(ws, {"event": "join", "data": {"rooms": [r1, r2]}})
    await serve(ws, "joined", check_push)
    await send(ws, {"event": "leave", "data": {"rooms": [r1]}})
    await serve(ws, "left", check_push)
    await send(ws, {"event": "heartbeat"})
    v = await request(ws, {"event": "echo", "data": "end"}, "the echo")
    exact(v, {"event": "echo", "data": "end"}, "echo at the end")
    await ws.close()


async def flow_member(a):
    ws = await connect(a["url"], deflate=a.get("deflate", True))
    d = await authenticate(ws, a["token"], a["user"])
    await send(ws, {"event": "join", "data": {"rooms": a["rooms"]}})
    await serve(ws, "ready", check_push, id=d["id"], extension=extension(ws))
    v = await request(ws, {"event": "echo", "data": "end"}, "the echo")
    exact(v, {"event": "echo", "data": "end"}, "echo at the end")
    await ws.close()


if __name__ == "__main__":
    run({"auth": flow_auth, "auth-bad": flow_auth_bad, "timeout": flow_timeout,
         "heartbeat": flow_heartbeat, "session": flow_session, "member": flow_member})
