#!/usr/bin/env bash
# Side by side: shardcast (`--bench-endpoints`, one shard) against uWebSockets.js and the Node
# `ws` library, each serving the same raw /echo and /broadcast paths (bench/peers/*.mjs), each
# on CPU 0, driven by the same shardcast-loadgen commands on CPU 1. Rounds are interleaved
# (every server once per round) so that a noisy neighbour hurts all of them alike.
#
#   bench/compare-peers.sh [ROUNDS] [SCENARIO...]     (defaults: 3 rounds, every scenario)
#
# Needs: release builds (`cargo build --release -p shardcast -p shardcast-loadgen`), Node.js
# with npm (the peers are installed into bench/peers/node_modules from package-lock.json),
# python3 for the summary, and 2 cores. Reports go to target/peers/; the summary prints the
# median of the rounds for each scenario and server. Processes started here are ended here.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-3}"; shift || true
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -eq 0 ] && SCENARIOS=(echo-pipelined echo-thin broadcast-thick broadcast-thin)
BIN="${CARGO_TARGET_DIR:-target}/release"
OUT="target/peers"
SERVER_CPU=0
LOAD_CPU=1
mkdir -p "$OUT"

for b in shardcast shardcast-loadgen; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run cargo build --release -p shardcast -p shardcast-loadgen" >&2; exit 2; }
done
command -v node >/dev/null || { echo "Node.js is needed for the peers (apt-get install nodejs npm)" >&2; exit 2; }
[ -d bench/peers/node_modules/uws-pack ] && [ -d bench/peers/node_modules/ws ] \
  || (cd bench/peers && npm ci --no-audit --no-fund)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=""
}
trap stop_server EXIT

start_server() { # start_server NAME PORT
  local name="$1" port="$2" log="$OUT/$1.log"
  case "$name" in
    shardcast) taskset -c $SERVER_CPU "$BIN/shardcast" --host 127.0.0.1 --port "$port" --tcp-port 0 \
                 --shards 1 --bench-endpoints >"$log" 2>&1 & ;;
    uws)       taskset -c $SERVER_CPU node bench/peers/uws.mjs "$port" >"$log" 2>&1 & ;;
    node-ws)   taskset -c $SERVER_CPU node bench/peers/ws.mjs "$port" >"$log" 2>&1 & ;;
  esac
  SERVER_PID=$!
  local deadline=$(( $(date +%s) + 10 ))
  until grep -q "listening" "$log"; do
    if [ "$(date +%s)" -gt "$deadline" ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "$name did not start:" >&2; cat "$log" >&2; exit 1
    fi
    sleep 0.05
  done
}

run_scenario() { # run_scenario SCENARIO PORT JSON LABEL
  local lg=(taskset -c $LOAD_CPU "$BIN/shardcast-loadgen")
  local common=(--target raw --duration 5s --warmup 1s --server-pid "$SERVER_PID" --json "$3" --label "$4" --no-progress)
  case "$1" in
    # Closed loop, 32 connections x 64 in flight, 64-byte messages: throughput at saturation.
    echo-pipelined)  "${lg[@]}" echo --url "ws://127.0.0.1:$2/echo" -c 32 -D 64 -s 64 "${common[@]}" ;;
    # 1000 connections, one message in flight each: one read and one write per message.
    echo-thin)       "${lg[@]}" echo --url "ws://127.0.0.1:$2/echo" -c 1000 -D 1 -s 64 "${common[@]}" ;;
    # 1 publisher, 20 receivers, 25 000 msgs/s: 500 000 deliveries/s, several per write.
    broadcast-thick) "${lg[@]}" broadcast --url "ws://127.0.0.1:$2" -c 21 --rate 25000 -s 64 "${common[@]}" ;;
    # 1 publisher, 999 receivers, 100 msgs/s: 99 900 deliveries/s, one write each.
    broadcast-thin)  "${lg[@]}" broadcast --url "ws://127.0.0.1:$2" -c 1000 --rate 100 -s 64 "${common[@]}" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

SERVERS=(shardcast uws node-ws)
for round in $(seq 1 "$ROUNDS"); do
  for scenario in "${SCENARIOS[@]}"; do
    for server in "${SERVERS[@]}"; do
      port=$(free_port)
      start_server "$server" "$port"
      echo "== round $round/$ROUNDS  $scenario  $server (pid $SERVER_PID, port $port)"
      run_scenario "$scenario" "$port" "$OUT/$scenario-$server-$round.json" "$server" \
        | grep -E "^(throughput|latency|messages|server|loadgen)" || true
      stop_server
    done
  done
done

python3 - "$OUT" "$ROUNDS" "${SCENARIOS[@]}" <<'EOF'
import json, statistics, sys
out, rounds, scenarios = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
servers = ["shardcast", "uws", "node-ws"]
def med(xs): return statistics.median(xs) if xs else float("nan")
print(f"\nmedians of {rounds} round(s); per server CPU-s = messages received by the load generator "
      "per second of the server's CPU time")
print(f"{'scenario':17} {'server':10} {'received/s':>12} {'per server CPU-s':>17} {'server CPU':>10} "
      f"{'p50 ms':>8} {'p99 ms':>8} {'lost':>6}  vs shardcast (per CPU-s)")
for sc in scenarios:
    base = None
    for sv in servers:
        rs = []
        for r in range(1, rounds + 1):
            try: rs.append(json.load(open(f"{out}/{sc}-{sv}-{r}.json"))["results"])
            except FileNotFoundError: pass
        if not rs: continue
        rx = med([x["throughput"]["received_per_s"] for x in rs])
        eff = med([x["server"]["messages_per_cpu_second"] for x in rs])
        cpu = med([x["server"]["cpu_percent"] for x in rs])
        p50 = med([x["latency"]["p50_us"] for x in rs]) / 1000
        p99 = med([x["latency"]["p99_us"] for x in rs]) / 1000
        lost = sum(x["messages"]["lost"] for x in rs)
        if sv == "shardcast": base = eff
        ratio = f"{base / eff:.2f}x" if base and eff and sv != "shardcast" else ""
        print(f"{sc:17} {sv:10} {rx:12,.0f} {eff:17,.0f} {cpu:9.0f}% {p50:8.2f} {p99:8.2f} {lost:6}  {ratio}")
EOF
