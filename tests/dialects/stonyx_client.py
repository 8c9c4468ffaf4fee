"""A @stonyx/sockets client written from its documentation (../shared/seeds/004: handlers,
wire protocol, auth enforcement, heartBeat) and the dialect contract, driven by
tests/dialects.rs.

Usage: stonyx_client.py FLOW 'JSON ARGS' (see dialect_common.py for the conventions).

Wire format: `{"request": R, "data": D}` from the client; `{"request": R, "response": X}` for a
handler's return value, `{"request": R, "data": D}` for a message the server sends on its own.
Encryption off (the server does not implement it; TLS does that job).

Flows:
  auth        {url, token, user}: heartBeat before auth -> true; auth {token} -> "success";
              heartBeat after -> true; auth {authKey} (the document's form) -> "success";
              nothing pushed while unauthenticated.
  auth-bad    {url, bad_token}: auth refused (bad token, no token) -> close 4003, no response.
  before-auth {url}: any request but auth / heartBeat before auth -> close 4003
              "Authentication required".
  timeout     {url}: heartBeat only -> close 4001 "Authentication timeout".
  session     {url, token, user, room, members}: auth; the relay's requests echo, time,
              whoami, stats (and members when asked); join-room -> response ROOM; pushes at
              "joined"; leave-room; pushes at "left"; an unknown request -> the error.
  member      {url, token, user, rooms, deflate?}: auth, join-room each, pushes at "ready"
              (which names the negotiated extension).
  silent      {url, token, user, wait_s}: authenticates by hand on a raw socket, then never
              answers a ping: prints how the server closed it.
"""
import json
import time

from dialect_common import (auth_timeout, check, connect, exact, expect_close, extension, keys,
                            out, request, run, send, serve, silent)

HEARTBEAT = {"request": "heartBeat", "response": True}
SUCCESS = {"request": "auth", "response": "success"}


def check_push(v):
    """A message the server sends on its own: exactly {request, data}."""
    keys(v, ["request", "data"], "a push")
    check(isinstance(v["request"], str) and v["request"] != "error",
          f"expected a push, got {json.dumps(v)}")


async def heartbeat(ws, what):
    exact(await request(ws, {"request": "heartBeat"}, "the heartBeat response"), HEARTBEAT,
          what)


async def auth(ws, token, form="token"):
    v = await request(ws, {"request": "auth", "data": {form: token}}, "the auth response")
    exact(v, SUCCESS, f"auth with a valid token in data.{form}")


async def flow_auth(a):
    ws = await connect(a["url"])
    await heartbeat(ws, "heartBeat before auth")
    await auth(ws, a["token"])
    await heartbeat(ws, "heartBeat after auth")
    await ws.close()
    ws = await connect(a["url"])
    await auth(ws, a["token"], "authKey")
    v = await request(ws, {"request": "echo", "data": "k"}, "the echo response")
    exact(v, {"request": "echo", "response": "k"}, "echo after auth by authKey")
    await ws.close()
    ws = await connect(a["url"])
    await heartbeat(ws, "heartBeat before auth")
    await serve(ws, "unauthenticated", check_push)
    await heartbeat(ws, "heartBeat after pushes the client must not get")
    await ws.close()


async def flow_auth_bad(a):
    for how, msg in [("bad token", {"request": "auth", "data": {"token": a["bad_token"]}}),
                     ("bad authKey", {"request": "auth", "data": {"authKey": a["bad_token"]}}),
                     ("no data", {"request": "auth"})]:
        ws = await connect(a["url"])
        await send(ws, msg)
        code, reason, _ = await expect_close(ws, 4003, None, f"the close ({how})")
        check(reason != "", f"close 4003 without a reason ({how})")
        out("refused", how=how, reason=reason)


async def flow_before_auth(a):
    for msg in [{"request": "echo", "data": 1}, {"request": "join-room", "data": "r"},
                {"request": "bogus"}]:
        ws = await connect(a["url"])
        await send(ws, msg)
        code, reason, _ = await expect_close(ws, 4003, "Authentication required",
                                             f"the close after {json.dumps(msg)} before auth")
        out("refused", request=msg["request"])


async def flow_timeout(a):
    await auth_timeout(a["url"], lambda ws: heartbeat(ws, "heartBeat before auth"))


async def flow_session(a):
    ws = await connect(a["url"])
    await auth(ws, a["token"])
    data = {"a": [1, 2, {"b": None}], "s": "é"}
    v = await request(ws, {"request": "echo", "data": data}, "the echo response")
    exact(v, {"request": "echo", "response": data}, "echo")
    v = await request(ws, {"request": "time"}, "the time response")
    keys(v, ["request", "response"], "time")
    check(v["request"] == "time" and isinstance(v["response"], int)
          and abs(v["response"] - time.time() * 1000) < 60_000,
          f"time: the server clock in ms: {json.dumps(v)}")
    v = await request(ws, {"request": "whoami"}, "the whoami response")
    keys(v, ["request", "response"], "whoami")
    check(v["request"] == "whoami" and isinstance(v["response"], str) and v["response"],
          f"whoami: the client id: {json.dumps(v)}")
    my_id = v["response"]
    v = await request(ws, {"request": "stats"}, "the stats response")
    keys(v, ["request", "response"], "stats")
    check(v["request"] == "stats" and isinstance(v["response"], dict)
          and "status" in v["response"], f"stats: the /health object: {json.dumps(v)}")
    room = a["room"]
    v = await request(ws, {"request": "join-room", "data": room}, "the join-room response")
    exact(v, {"request": "join-room", "response": room}, "join-room")
    if a.get("members"):
        v = await request(ws, {"request": "members", "data": room}, "the members response")
        keys(v, ["request", "response"], "members")
        keys(v["response"], ["room", "members", "users"], "members response")
        exact(v["response"]["room"], room, "members: room")
        check(my_id in v["response"]["members"] and a["user"] in v["response"]["users"],
              f"members: this client and its user are listed: {json.dumps(v)}")
        out("members", response=v["response"])
    await serve(ws, "joined", check_push, id=my_id)
    v = await request(ws, {"request": "leave-room", "data": room}, "the leave-room response")
    exact(v, {"request": "leave-room", "response": room}, "leave-room")
    await serve(ws, "left", check_push)
    v = await request(ws, {"request": "bogus", "data": 1}, "the error")
    keys(v, ["request", "data"], "an unknown request")
    check(v["request"] == "error", f"an unknown request: {json.dumps(v)}")
    keys(v["data"], ["code", "message", "request"], "an unknown request's error")
    exact([v["data"]["code"], v["data"]["request"]], ["unknown_event", "bogus"],
          "an unknown request's error: code and request")
    check(isinstance(v["data"]["message"], str), f"message must be a string: {json.dumps(v)}")
    await heartbeat(ws, "heartBeat at the end")
    await ws.close()


async def flow_member(a):
    ws = await connect(a["url"], deflate=a.get("deflate", True))
    await auth(ws, a["token"])
    v = await request(ws, {"request": "whoami"}, "the whoami response")
    my_id = v.get("response")
    for room in a["rooms"]:
        v = await request(ws, {"request": "join-room", "data": room}, "the join-room response")
        exact(v, {"request": "join-room", "response": room}, "join-room")
    await serve(ws, "ready", check_push, id=my_id, extension=extension(ws))
    await heartbeat(ws, "heartBeat at the end")
    await ws.close()


async def flow_silent(a):
    def ok(v):
        exact(v, SUCCESS, "auth (raw client)")
    await silent(a["url"], {"request": "auth", "data": {"token": a["token"]}}, ok, a["wait_s"])


if __name__ == "__main__":
    run({"auth": flow_auth, "auth-bad": flow_auth_bad, "before-auth": flow_before_auth,
         "timeout": flow_timeout, "session": flow_session, "member": flow_member,
         "silent": flow_silent})
