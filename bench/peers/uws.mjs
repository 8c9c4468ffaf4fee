// uWebSockets.js (v20, via the npm package uws-pack) with the behaviour of
// `shardcast --bench-endpoints`: /echo sends every message back, /broadcast sends every
// message to every other client on that path. No compression, 16 MiB messages.
// Usage: node uws.mjs PORT
import { App, DISABLED } from 'uws-pack';

const port = Number(process.argv[2] ?? 9001);
const common = { compression: DISABLED, maxPayloadLength: 16 * 1024 * 1024, idleTimeout: 0, maxBackpressure: 64 * 1024 * 1024 };
App()
  .ws('/echo', { ...common, message: (ws, msg, isBinary) => { ws.send(msg, isBinary); } })
  .ws('/broadcast', {
    ...common,
    open: (ws) => { ws.subscribe('all'); },
    // ws.publish reaches every subscriber but the sender.
    message: (ws, msg, isBinary) => { ws.publish('all', msg, isBinary); },
  })
  .listen('127.0.0.1', port, (token) => {
    if (!token) { console.error(`uws: cannot listen on ${port}`); process.exit(1); }
    console.log(`uws listening on 127.0.0.1:${port}`);
  });
