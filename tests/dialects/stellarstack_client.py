"""A StellarStack WebSocket client written from StellarStack's WebSocket API document
(../shared/seeds/002) and the dialect contract, driven by tests/dialects.rs.

Usage: stellarstack_client.py FLOW 'JSON ARGS' (see dialect_common.py for the conventions).

Flows (what the document shows, message by message):
  auth      {url, token, bad_token, user}: ping -> pong before auth; subscribe before auth ->
            the "Authentication required to subscribe" error; nothing pushed while
            unauthenticated; auth with a bad token -> auth_error (the connection stays open);
            auth without a token -> auth_error; auth -> auth_success {userId}; ping -> pong;
            an unknown type and malformed messages -> the error messages.
  upgrade   {url, token, user}: the session cookie `better-auth.session_token` (the document's
            automatic authentication), an `Authorization: Bearer` header and `?token=`:
            auth_success is the first message, then subscribe works.
  session   {url, token, user, servers: [S1, S2, ...], forbidden?}: auth, subscribe each ->
            subscribed; `forbidden` (outside the token's rooms claim) -> "Not allowed to
            subscribe to ..."; pushes (server:sync and others) at "subscribed"; unsubscribe S1
            -> unsubscribed; pushes at "unsubscribed"; ping -> pong.
  member    {url, token, user, servers, deflate?}: auth, subscribe each, then pushes at
            "ready" (which names the negotiated extension).
  timeout   {url}: no auth: ping -> pong, then close 4001 "Authentication timeout".
  silent    {url, token, user, wait_s}: authenticates by hand on a raw socket, then never
            answers a ping: prints how the server closed it.
"""
import json
import urllib.parse

from dialect_common import (auth_timeout, check, connect, exact, extension, keys, out, recv,
                            request, run, serve, silent)

REPLY_TYPES = {"auth_success", "auth_error", "subscribed", "unsubscribed", "pong", "error"}


def push_checker(subscribed):
    """A push: `{"type": E, "serverId": S, "data": D}` for a server the client subscribed to
    (server:sync always has data, an object: the server's state), `{"type": E, "data": D}`
    for one not sent to a server."""
    def check_push(v):
        t = v.get("type")
        check(isinstance(t, str) and t, f"a push without a string type: {json.dumps(v)}")
        check(t not in REPLY_TYPES, f"expected a push, got a {t!r} message: {json.dumps(v)}")
        if "serverId" in v:
            if t == "server:sync":
                keys(v, ["type", "serverId", "data"], "server:sync")
                check(isinstance(v["data"], dict),
                      f"server:sync data must be the server's state object: {json.dumps(v)}")
            else:
                check(set(v) <= {"type", "serverId", "data"}, f"unknown keys: {json.dumps(v)}")
            check(v["serverId"] in subscribed,
                  f"a push for {v['serverId']!r}, not subscribed (subscribed: "
                  f"{sorted(subscribed)}): {json.dumps(v)}")
        else:
            check(t != "server:sync", f"server:sync without serverId: {json.dumps(v)}")
            check(set(v) <= {"type", "data"}, f"unknown keys: {json.dumps(v)}")
    return check_push


async def auth(ws, token, user):
    v = await request(ws, {"type": "auth", "token": token}, "auth_success")
    exact(v, {"type": "auth_success", "userId": user}, "auth with a valid token")


async def subscribe(ws, server_id):
    v = await request(ws, {"type": "subscribe", "serverId": server_id}, "subscribed")
    exact(v, {"type": "subscribed", "serverId": server_id}, f"subscribe {server_id}")


async def ping(ws, what):
    v = await request(ws, {"type": "ping"}, "pong")
    exact(v, {"type": "pong"}, what)


async def flow_auth(a):
    ws = await connect(a["url"])
    await ping(ws, "ping before auth")
    v = await request(ws, {"type": "subscribe", "serverId": "srv_abc123"}, "an error")
    exact(v, {"type": "error", "error": "Authentication required to subscribe"},
          "subscribe before auth")
    # Nothing reaches an unauthenticated client; the pong is the next message.
    await serve(ws, "unauthenticated", push_checker(set()))
    await ping(ws, "ping after pushes the client must not get")
    v = await request(ws, {"type": "auth", "token": a["bad_token"]}, "auth_error")
    keys(v, ["type", "error"], "auth with a bad token")
    check(v["type"] == "auth_error", f"auth with a bad token: {json.dumps(v)}")
    check(isinstance(v["error"], str) and v["error"], f"auth_error without a reason: {v}")
    out("auth_error", error=v["error"])
    v = await request(ws, {"type": "auth"}, "auth_error")
    keys(v, ["type", "error"], "auth without a token")
    check(v["type"] == "auth_error", f"auth without a token: {json.dumps(v)}")
    # The connection stayed open: the documented retry succeeds.
    await auth(ws, a["token"], a["user"])
    out("authenticated")
    await ping(ws, "ping after auth")
    v = await request(ws, {"type": "bogus", "x": 1}, "an error")
    exact(v, {"type": "error", "error": "Unknown message type: bogus"}, "an unknown type")
    for bad in ["not json", json.dumps({"serverId": "srv_1"}), json.dumps({"type": 5}),
                json.dumps(["subscribe"])]:
        v = await request(ws, bad, "an error")
        exact(v, {"type": "error", "error": "Invalid message format"}, f"sending {bad!r}")
    await ping(ws, "ping at the end")
    await ws.close()


async def flow_upgrade(a):
    url, token = a["url"], a["token"]
    q = urllib.parse.quote(token, safe="")
    ways = [
        ("cookie", url, {"Cookie": f"theme=dark; better-auth.session_token={token}"}),
        ("bearer", url, {"Authorization": f"Bearer {token}"}),
        ("query", f"{url}?token={q}", None),
    ]
    for via, u, headers in ways:
        ws = await connect(u, headers)
        v, _ = await recv(ws, f"auth_success on connect ({via})")
        exact(v, {"type": "auth_success", "userId": a["user"]}, f"the first message ({via})")
        await subscribe(ws, f"srv_{via}")
        await ws.close()
        out("auto-auth", via=via)


async def flow_session(a):
    ws = await connect(a["url"])
    await auth(ws, a["token"], a["user"])
    servers = a["servers"]
    for s in servers:
        await subscribe(ws, s)
    if a.get("forbidden"):
        f = a["forbidden"]
        v = await request(ws, {"type": "subscribe", "serverId": f}, "an error")
        exact(v, {"type": "error", "error": f"Not allowed to subscribe to {f}"},
              f"subscribe {f} (outside the token's rooms)")
    subscribed = set(servers)
    await serve(ws, "subscribed", push_checker(subscribed))
    v = await request(ws, {"type": "unsubscribe", "serverId": servers[0]}, "unsubscribed")
    exact(v, {"type": "unsubscribed", "serverId": servers[0]}, f"unsubscribe {servers[0]}")
    subscribed.discard(servers[0])
    await serve(ws, "unsubscribed", push_checker(subscribed))
    await ping(ws, "ping at the end")
    await ws.close()


async def flow_member(a):
    ws = await connect(a["url"], deflate=a.get("deflate", True))
    await auth(ws, a["token"], a["user"])
    for s in a["servers"]:
        await subscribe(ws, s)
    await serve(ws, "ready", push_checker(set(a["servers"])), extension=extension(ws))
    await ping(ws, "ping at the end")
    await ws.close()


async def flow_timeout(a):
    await auth_timeout(a["url"], lambda ws: ping(ws, "ping before auth"))


async def flow_silent(a):
    def ok(v):
        exact(v, {"type": "auth_success", "userId": a["user"]}, "auth (raw client)")
    await silent(a["url"], {"type": "auth", "token": a["token"]}, ok, a["wait_s"])


if __name__ == "__main__":
    run({"auth": flow_auth, "upgrade": flow_upgrade, "session": flow_session,
         "member": flow_member, "timeout": flow_timeout, "silent": flow_silent})
