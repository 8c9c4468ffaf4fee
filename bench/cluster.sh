#!/usr/bin/env bash
# The cost of a cluster: 1000 subscribers in 10 rooms of 100 (--rooms), 64-byte messages, one
# publisher per room, at several offered rates, against
#   single        one node, no Redis (the baseline)
#   single-redis  one node with --redis: every room message also goes to Redis, nobody else reads it
#   pair          two nodes through Redis: members dealt over both nodes (loadgen --cluster), the
#                 publisher on node a, so about half of the deliveries cross a -> Redis -> b
# and then what one Redis core sustains for SPUBLISH alone (redis-benchmark).
#
#   bench/cluster.sh [--short] [--runs N] [--rates "100000 250000 ..."] [--duration 10s]
#                    [--rooms 10] [--room-size N] [--configs "single single-redis pair"]
#                    [--no-redis-bench]
#
# --room-size 2 with --rooms 100: every message crosses from node a to node b in a pair (the
# publisher is member 0, on a; the receiver member 1, on b): the added latency of the hop.
# Rates are offered deliveries/s (publishes/s x (room size - 1) receivers). --short: one small
# rate for a few seconds, one run (a smoke check). With --runs N every figure is the median of N runs
# (rounds are interleaved: every configuration once per round).
#
# CPUs: every server-side process (the nodes and Redis) shares SERVER_CPUS (default 0) and
# the load generator gets LOAD_CPUS (default 1), so each configuration gets the same
# hardware and the cluster's overhead shows as CPU and latency. Override both on a bigger box.
#
# Needs: release builds (`cargo build --release -p shardcast -p shardcast-loadgen`),
# redis-server, redis-cli and redis-benchmark 7 (sharded pub/sub), curl, python3. Reports and
# logs go to target/cluster/. Everything started here is ended here (by PID).
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0; RUNS=1; RATES="100000 250000 500000 1000000"; DURATION=10s; WARMUP=1s
CONFIGS="single single-redis pair"; REDIS_BENCH=1; ROOMS=10; ROOM_SIZE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=1 ;;
    --runs) RUNS="$2"; shift ;;
    --rates) RATES="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --configs) CONFIGS="$2"; shift ;;
    --rooms) ROOMS="$2"; shift ;;
    --room-size) ROOM_SIZE="$2"; shift ;;
    --no-redis-bench) REDIS_BENCH=0 ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SHORT" = 1 ]; then RATES="20000"; DURATION=3s; RUNS=1; fi

BIN="${CARGO_TARGET_DIR:-target}/release"
OUT="target/cluster"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
SUBSCRIBERS=1000
ROOM_SIZE="${ROOM_SIZE:-$(( SUBSCRIBERS / ROOMS ))}"
[ "$ROOM_SIZE" -ge 2 ] || { echo "rooms of at least 2 (--rooms at most $(( SUBSCRIBERS / 2 )))" >&2; exit 2; }
mkdir -p "$OUT"
for b in shardcast shardcast-loadgen; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run cargo build --release -p shardcast -p shardcast-loadgen" >&2; exit 2; }
done
for t in redis-server redis-cli redis-benchmark curl python3 taskset; do
  command -v "$t" >/dev/null || { echo "$t is needed" >&2; exit 2; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Every process started here, ended on exit (by PID): PIDS, stop_all.
source bench/lib.sh

wait_until() { # wait_until SECONDS WHAT COMMAND...: poll COMMAND until it succeeds or time is up
  local deadline=$(( $(date +%s) + $1 )) what="$2"; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -gt "$deadline" ]; then echo "timed out waiting for $what" >&2; return 1; fi
    sleep 0.05
  done
}

REDIS_PORT=""; REDIS_PID=""
start_redis() { # start_redis LOG
  REDIS_PORT=$(free_port)
  taskset -c "$SERVER_CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --daemonize no --logfile "$1" &
  REDIS_PID=$!; PIDS+=("$REDIS_PID")
  wait_until 10 "redis-server on $REDIS_PORT" sh -c "redis-cli -p $REDIS_PORT ping | grep -q PONG"
}

NODE_PORTS=(); NODE_PIDS=()
start_node() { # start_node ID LOG [--redis URL]: a one-shard node on a free port
  local id="$1" log="$2"; shift 2
  local port; port=$(free_port)
  taskset -c "$SERVER_CPUS" "$BIN/shardcast" --host 127.0.0.1 --port "$port" --tcp-port 0 \
    --shards 1 "$@" >"$log" 2>&1 &
  local pid=$!; PIDS+=("$pid")
  NODE_PORTS+=("$port"); NODE_PIDS+=("$pid")
  wait_until 10 "node $id to listen ($log)" grep -q "listening" "$log" \
    || { cat "$log" >&2; exit 1; }
  if [ $# -gt 0 ]; then
    wait_until 10 "node $id to connect to Redis" \
      sh -c "curl -sf http://127.0.0.1:$port/metrics | grep -q '^shardcast_cluster_connected 1'" \
      || { cat "$log" >&2; exit 1; }
  fi
}

redis_cpu() { # Redis' own CPU seconds (user + system, all its threads), microsecond precision
  redis-cli -p "$REDIS_PORT" info cpu | tr -d '\r' | awk -F: '$1=="used_cpu_user"||$1=="used_cpu_sys"{s+=$2} END {printf "%.6f\n", s}'
}
redis_commands() { redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | awk -F: '$1=="total_commands_processed"{print $2}'; }
redis_spublish() { # SPUBLISH calls so far
  redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[:=,]' '$1=="cmdstat_spublish"{print $3} END {}' | grep . || echo 0
}
node_metric() { # node_metric PORT NAME: sum of the samples of a metric (0 if absent)
  curl -sf "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1==n || index($1, n"{")==1 {s+=$2} END {print s+0}'
}

RESULTS="$OUT/results.tsv"
printf 'round\tconfig\trate\treport\tredis_cpu_s\tredis_cmds\tredis_spublish\tpublished\treceived\tdropped\n' >"$RESULTS"

run_config() { # run_config ROUND CONFIG
  local round="$1" config="$2"
  NODE_PORTS=(); NODE_PIDS=(); REDIS_PORT=""; REDIS_PID=""
  case "$config" in
    single) start_node a "$OUT/$config-a.log" ;;
    single-redis)
      start_redis "$OUT/$config-redis.log"
      start_node a "$OUT/$config-a.log" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id a ;;
    pair)
      start_redis "$OUT/$config-redis.log"
      start_node a "$OUT/$config-a.log" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id a
      start_node b "$OUT/$config-b.log" --redis "redis://127.0.0.1:$REDIS_PORT" --node-id b ;;
    *) echo "unknown configuration $config" >&2; exit 2 ;;
  esac
  local urls=() pids=() p
  for p in "${NODE_PORTS[@]}"; do urls+=(--url "ws://127.0.0.1:$p"); done
  for p in "${NODE_PIDS[@]}" $REDIS_PID; do pids+=(--server-pid "$p"); done
  local cluster=(); [ "$config" = pair ] && cluster=(--cluster)
  for rate in $RATES; do
    local pubs; pubs=$(python3 -c "print($rate / ($ROOM_SIZE - 1))")
    local json="$OUT/r$round-$config-$rate.json"
    local cpu0=0 cmds0=0 spub0=0 pub0=0 recv0=0 drop0=0
    if [ -n "$REDIS_PID" ]; then
      cpu0=$(redis_cpu); cmds0=$(redis_commands); spub0=$(redis_spublish)
      for p in "${NODE_PORTS[@]}"; do
        pub0=$(( pub0 + $(node_metric "$p" shardcast_cluster_published_total) ))
        recv0=$(( recv0 + $(node_metric "$p" shardcast_cluster_received_total) ))
        drop0=$(( drop0 + $(node_metric "$p" shardcast_cluster_dropped_total) ))
      done
    fi
    echo "== round $round, $config, $rate deliveries/s offered ($pubs publishes/s)" >&2
    taskset -c "$LOAD_CPUS" "$BIN/shardcast-loadgen" fanout "${urls[@]}" "${cluster[@]}" \
      --rooms "$ROOMS" --room-size "$ROOM_SIZE" --publishers 1 --rate "$pubs" -s 64 \
      --duration "$DURATION" --warmup "$WARMUP" "${pids[@]}" --no-progress \
      --label "$config-$rate" --json "$json" >"$OUT/r$round-$config-$rate.txt" 2>&1 \
      || { cat "$OUT/r$round-$config-$rate.txt" >&2; exit 1; }
    local cpu=0 cmds=0 spub=0 pub=0 recv=0 drop=0
    if [ -n "$REDIS_PID" ]; then
      cpu=$(python3 -c "print(round($(redis_cpu) - $cpu0, 3))")
      cmds=$(( $(redis_commands) - cmds0 )); spub=$(( $(redis_spublish) - spub0 ))
      for p in "${NODE_PORTS[@]}"; do
        pub=$(( pub + $(node_metric "$p" shardcast_cluster_published_total) ))
        recv=$(( recv + $(node_metric "$p" shardcast_cluster_received_total) ))
        drop=$(( drop + $(node_metric "$p" shardcast_cluster_dropped_total) ))
      done
      pub=$(( pub - pub0 )); recv=$(( recv - recv0 )); drop=$(( drop - drop0 ))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$config" "$rate" "$json" \
      "$cpu" "$cmds" "$spub" "$pub" "$recv" "$drop" >>"$RESULTS"
  done
  stop_all
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg.txt"
for round in $(seq 1 "$RUNS"); do
  for config in $CONFIGS; do run_config "$round" "$config"; done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loadavg.txt"

# The table: medians over the rounds.
python3 - "$RESULTS" "$DURATION" "$WARMUP" <<'EOF'
import csv, json, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
def secs(s):
    s = s.strip()
    return float(s[:-2]) / 1e3 if s.endswith("ms") else float(s.rstrip("s"))
sending = secs(sys.argv[2]) + secs(sys.argv[3])  # publishers send during warm-up + window
groups = {}
for r in rows:
    groups.setdefault((r["config"], int(r["rate"])), []).append(r)
med = lambda xs: statistics.median(xs) if xs else float("nan")
print()
print(f"{'config':<13} {'offered/s':>10} {'delivered/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'lost':>7} "
      f"{'server CPU-s':>12} {'Redis CPU-s':>11} {'SPUBLISH/s':>10} {'Redis cmds':>10} {'published':>9} {'received':>9} {'dropped':>7}  runs")
for (config, rate), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    reps = [json.load(open(r["report"])) for r in rs]
    res = [x["results"] for x in reps]
    sat = any(x["loadgen"].get("saturated") for x in res)
    print(f"{config:<13} {rate:>10} "
          f"{med([x['throughput']['received_per_s'] for x in res]):>12.0f} "
          f"{med([x['latency']['p50_us'] for x in res]) / 1e3:>8.2f} "
          f"{med([x['latency']['p99_us'] for x in res]) / 1e3:>8.2f} "
          f"{med([x['messages']['lost'] for x in res]):>7.0f} "
          f"{med([x['server']['cpu_seconds'] for x in res]):>12.2f} "
          f"{med([float(r['redis_cpu_s']) for r in rs]):>11.2f} "
          f"{med([int(r['redis_spublish']) / sending for r in rs]):>10.0f} "
          f"{med([int(r['redis_cmds']) for r in rs]):>10.0f} "
          f"{med([int(r['published']) for r in rs]):>9.0f} "
          f"{med([int(r['received']) for r in rs]):>9.0f} "
          f"{med([int(r['dropped']) for r in rs]):>7.0f}  {len(rs)}"
          + ("  loadgen SATURATED" if sat else ""))
print("server CPU-s: the nodes and Redis together over the measured window. Redis CPU-s, Redis cmds (every")
print("command, presence writes of the set-up included), published / received / dropped (the nodes' cluster")
print("counters, summed) cover the whole load generator run; SPUBLISH/s is divided by warm-up + window.")
EOF

# What one Redis core sustains: SPUBLISH of a ~100-byte envelope (a 64-byte message),
# pipelined, with k = 0, 1, 3, 9 subscribers on the channel (redis-cli SSUBSCRIBE clients
# standing in for k subscribed nodes: every message is also written to each of them).
if [ "$REDIS_BENCH" = 1 ]; then
  N=500000; [ "$SHORT" = 1 ] && N=50000
  start_redis "$OUT/bench-redis.log"
  ENVELOPE='{"node":"a","event":"lg","data":"LG00000000000000000000000000000000000000000000000000000000000000"}'
  echo
  echo "redis-benchmark: $N SPUBLISH, 8 clients, pipeline 32, Redis on CPU $SERVER_CPUS, benchmark and subscribers on CPU $LOAD_CPUS"
  subscribers=0
  for k in 0 1 3 9; do
    while [ "$subscribers" -lt "$k" ]; do
      taskset -c "$LOAD_CPUS" redis-cli -p "$REDIS_PORT" SSUBSCRIBE shardcast:room:bench >/dev/null &
      PIDS+=("$!"); subscribers=$(( subscribers + 1 ))
    done
    wait_until 10 "$k subscribers" sh -c \
      "redis-cli -p $REDIS_PORT PUBSUB SHARDNUMSUB shardcast:room:bench | tail -1 | grep -qx $k"
    cpu0=$(redis_cpu)
    out=$(taskset -c "$LOAD_CPUS" redis-benchmark -p "$REDIS_PORT" -c 8 -P 32 -n "$N" -q \
      SPUBLISH shardcast:room:bench "$ENVELOPE" | tr '\r' '\n' | grep -v '^$' | tail -1 | sed 's/.*}: //')
    python3 -c "c = $(redis_cpu) - $cpu0; print(f'  {$k} subscribers: {c*1e6/$N:.2f} us of Redis CPU per SPUBLISH = {$N/c/1e6:.2f} M per Redis CPU-second   ({\"$out\"})')"
  done
  stop_all
fi
