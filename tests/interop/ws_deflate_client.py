"""A third-party client (Python `websockets`) with permessage-deflate, driven by tests/interop.rs.

Usage: ws_deflate_client.py URL ROOM COUNT
Joins ROOM, prints READY, then for COUNT lines read from stdin publishes each line's JSON
as data to ROOM; meanwhile prints every message it receives as one JSON line. Exits after
receiving COUNT messages from others ("chat" events) and printing the negotiated extension.
"""
import asyncio
import json
import sys

import websockets


async def main() -> None:
    url, room, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    async with websockets.connect(url, compression="deflate", max_size=None) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        print(json.dumps({"extension": ext}), flush=True)
        await ws.send(json.dumps({"event": "join-room", "data": room}))
        confirm = json.loads(await ws.recv())
        print(json.dumps({"confirm": confirm}), flush=True)
        print("READY", flush=True)
        loop = asyncio.get_running_loop()

        async def publish() -> None:
            for _ in range(count):
                line = await loop.run_in_executor(None, sys.stdin.readline)
                data = json.loads(line)
                await ws.send(json.dumps({"event": "publish",
                                          "data": {"room": room, "event": "chat", "data": data}}))

        sender = asyncio.create_task(publish())
        got = 0
        while got < count:
            msg = json.loads(await ws.recv())
            print(json.dumps({"received": msg}), flush=True)
            if msg.get("event") == "chat":
                got += 1
        await sender


asyncio.run(main())
