// The Node `ws` library with the behaviour of `shardcast --bench-endpoints`: /echo sends every
// message back, /broadcast sends every message to every other client on that path.
// Usage: node ws.mjs PORT
import { WebSocketServer } from 'ws';

const port = Number(process.argv[2] ?? 9002);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, maxPayload: 16 * 1024 * 1024 });
const broadcast = new Set();
wss.on('connection', (ws, req) => {
  if (req.url === '/broadcast') {
    broadcast.add(ws);
    ws.on('close', () => broadcast.delete(ws));
    ws.on('message', (data, isBinary) => {
      for (const peer of broadcast) if (peer !== ws) peer.send(data, { binary: isBinary });
    });
  } else {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
});
wss.on('listening', () => console.log(`ws listening on 127.0.0.1:${port}`));
