#!/usr/bin/env bash
# The allocator of the shardcast binary, measured: RSS after a burst (does freed memory go back
# to the system?), throughput (does the allocator cost speed?) and RSS per idle connection, for
# the system allocator (glibc malloc), jemalloc and mimalloc built from the same source (Cargo
# features of the root package).
#
#   bench/memory-after-burst.sh [ROUNDS] [VARIANT...]
#
# VARIANT: system, jemalloc, mimalloc, or mimalloc+purge0 (the mimalloc build run with
# MIMALLOC_PURGE_DELAY=0); default: all four, 3 rounds.
#
# 1. Builds target/alloc/shardcast-{system,jemalloc,mimalloc} (release; SKIP_BUILD=1 reuses them)
#    and the load generator.
# 2. Memory, ROUNDS rounds, the variants taking turns within each round
#    (bench/memory_after_burst.py): one shard pinned to CPU 0, the clients on CPU 1. Phase 1:
#    30 clients that never read (4 KiB receive buffer) join a room and one publisher sends
#    64-byte messages to it as fast as the server reads them for 10 s (the server cuts the
#    stalled clients: slow consumer or output budget). Phase 2: 30 new stalled clients, and
#    100 000 messages of 16 KiB (1.6 GB) as fast as they go (at most 5 s). Then every client is
#    closed. RSS: start, peak (VmHWM), end of phase 1, when no connection is left ("gone"),
#    and 1 / 5 / 15 / 30 s later.
# 3. Speed, ROUNDS rounds, the same turns, server on CPU 0 and load generator on CPU 1, 64-byte
#    messages, 5 s after 1 s of warm-up (the commands of bench/compare-peers.sh): echo against
#    `--bench-endpoints` /echo, 32 connections x 64 in flight (closed loop), and broadcast on
#    /broadcast, 1 publisher -> 20 receivers at 25 000 msgs/s (a frame shared by 20 queues);
#    and RSS per idle connection: 10 000 connections opened at 4 000/s and held 3 s.
# Reports go to target/alloc/; the summary prints medians and ranges (min-max) per variant.
# Needs 2 cores, python3 (standard library only), taskset. Processes started here are ended
# here. Traffic goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${1:-3}"; shift || true
ALLOCATORS=("$@")
[ ${#ALLOCATORS[@]} -eq 0 ] && ALLOCATORS=(system jemalloc mimalloc mimalloc+purge0)
TARGET="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET/alloc"
SERVER_CPU=0
LOAD_CPU=1
mkdir -p "$OUT"

features() { # the cargo flags that build allocator $1
  case "$1" in
    system)   echo "--no-default-features" ;;
    jemalloc) echo "--no-default-features --features jemalloc" ;;
    mimalloc) echo "--no-default-features --features mimalloc" ;;
    *) echo "unknown allocator $1" >&2; exit 2 ;;
  esac
}
# A variant is an allocator build run with options in its environment: VARIANT = BUILD[+OPTS].
build_of() { echo "${1%%+*}"; }
env_of() { # the environment of variant $1
  case "$1" in
    # mimalloc returns freed memory after purge_delay (10 ms), but only when the thread that
    # owns it calls into the allocator again: 0 purges at once, when the memory is freed.
    mimalloc+purge0) echo "MIMALLOC_PURGE_DELAY=0" ;;
    *+*) echo "unknown variant $1" >&2; exit 2 ;;
    *) ;;
  esac
}

BUILDS=()
for a in "${ALLOCATORS[@]}"; do
  env_of "$a" >/dev/null && features "${a%%+*}" >/dev/null || exit 2
  b="${a%%+*}"
  [[ " ${BUILDS[*]} " == *" $b "* ]] || BUILDS+=("$b")
done

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  for b in "${BUILDS[@]}"; do
    # shellcheck disable=SC2046
    cargo build --release -p shardcast $(features "$b")
    cp "$TARGET/release/shardcast" "$OUT/shardcast-$b"
  done
  # Last, so that target/release/shardcast is the default build again.
  cargo build --release -p shardcast -p shardcast-loadgen
fi
for b in "${BUILDS[@]}"; do
  [ -x "$OUT/shardcast-$b" ] || { echo "missing $OUT/shardcast-$b (run without SKIP_BUILD)" >&2; exit 2; }
done
LOADGEN="$TARGET/release/shardcast-loadgen"

for round in $(seq 1 "$ROUNDS"); do
  for a in "${ALLOCATORS[@]}"; do
    echo "== memory  round $round/$ROUNDS  $a"
    # shellcheck disable=SC2046
    env $(env_of "$a") python3 bench/memory_after_burst.py "$OUT/shardcast-$(build_of "$a")" --label "$a" \
      --server-cpu $SERVER_CPU --client-cpu $LOAD_CPU \
      --phase 64:10 --phase 16384:5:100000 --after 1,5,15,30 >"$OUT/memory-$a-$round.json"
  done
done

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SERVER_PID=""
}
trap stop_server EXIT

for round in $(seq 1 "$ROUNDS"); do
  for scenario in echo broadcast hold; do
    for a in "${ALLOCATORS[@]}"; do
      log="$OUT/$scenario-$a-$round.log"
      : >"$log"
      # shellcheck disable=SC2046
      env $(env_of "$a") taskset -c $SERVER_CPU "$OUT/shardcast-$(build_of "$a")" --host 127.0.0.1 --port 0 --tcp-port 0 \
        --shards 1 --bench-endpoints >"$log" 2>&1 &
      SERVER_PID=$!
      deadline=$(( $(date +%s) + 10 ))
      until grep -q "shardcast listening" "$log"; do
        if [ "$(date +%s)" -gt "$deadline" ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
          echo "$a did not start:" >&2; cat "$log" >&2; exit 1
        fi
        sleep 0.05
      done
      port=$(grep -o 'ws=127.0.0.1:[0-9]*' "$log" | head -1 | cut -d: -f2)
      echo "== $scenario  round $round/$ROUNDS  $a (pid $SERVER_PID, port $port)"
      lg=(taskset -c $LOAD_CPU "$LOADGEN")
      common=(-s 64 --target raw --duration 5s --warmup 1s --server-pid "$SERVER_PID"
              --json "$OUT/$scenario-$a-$round.json" --label "$a" --no-progress)
      case "$scenario" in
        # Closed loop, 32 connections x 64 in flight: throughput at saturation.
        echo)      "${lg[@]}" echo --url "ws://127.0.0.1:$port/echo" -c 32 -D 64 "${common[@]}" ;;
        # 1 publisher, 20 receivers, 25 000 msgs/s: 500 000 deliveries/s, frames shared.
        broadcast) "${lg[@]}" broadcast --url "ws://127.0.0.1:$port" -c 21 --rate 25000 "${common[@]}" ;;
        # 10 000 idle connections opened at 4 000/s and held 3 s: RSS per connection.
        hold)      "${lg[@]}" hold --url "ws://127.0.0.1:$port" -c 10000 --connect-rate 4000 \
                     --hold 3s --server-pid "$SERVER_PID" --json "$OUT/$scenario-$a-$round.json" \
                     --label "$a" --no-progress ;;
      esac | grep -E "^(throughput|latency|connections|server)" || true
      stop_server
    done
  done
done

python3 - "$OUT" "$ROUNDS" "${ALLOCATORS[@]}" <<'EOF'
import json, statistics, sys
out, rounds, allocators = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(kind, a):
    rs = []
    for r in range(1, rounds + 1):
        try: rs.append(json.load(open(f"{out}/{kind}-{a}-{r}.json")))
        except FileNotFoundError: pass
    return rs
def cell(xs, unit=1e6, fmt="{:.0f}"):
    if not xs: return "-"
    m = statistics.median(xs)
    return f"{fmt.format(m / unit)} ({fmt.format(min(xs) / unit)}-{fmt.format(max(xs) / unit)})"
points = ["start", "peak", "phase1_end", "gone", "+1s", "+5s", "+15s", "+30s"]
print(f"\nRSS in MB, medians of {rounds} round(s) (min-max)")
print(f"{'allocator':16} " + " ".join(f"{p:>16}" for p in points))
for a in allocators:
    rs = load("memory", a)
    for r in rs: r["rss"]["phase1_end"] = r["phases"][0]["rss_at_end"]
    print(f"{a:16} " + " ".join(f"{cell([r['rss'][p] for r in rs if p in r['rss']]):>16}" for p in points))
print(f"\nhold, 10 000 idle connections: medians of {rounds} round(s) (min-max)")
print(f"{'allocator':16} {'established':>12} {'RSS before MB':>16} {'RSS loaded MB':>16} {'B per connection':>22}")
for a in allocators:
    rs = [x["results"] for x in load("hold", a)]
    print(f"{a:16} {cell([x['connections']['established'] for x in rs], 1):>12} "
          f"{cell([x['server']['rss_before_bytes'] for x in rs]):>16} "
          f"{cell([x['server']['rss_loaded_bytes'] for x in rs]):>16} "
          f"{cell([x['server']['rss_per_connection_bytes'] for x in rs], 1):>22}")
for scenario, title in [("echo", "echo, 32 connections x 64 in flight (closed loop)"),
                        ("broadcast", "broadcast, 1 -> 20 receivers, 25 000 msgs/s asked")]:
    print(f"\n{title}, 64 B: medians of {rounds} round(s) (min-max)")
    print(f"{'allocator':16} {'received/s (k)':>22} {'per server CPU-s (k)':>22} "
          f"{'server CPU %':>14} {'p99 ms':>18}")
    for a in allocators:
        rs = [x["results"] for x in load(scenario, a)]
        # received_per_s: echoed messages (one per round trip), or deliveries.
        print(f"{a:16} {cell([x['throughput']['received_per_s'] for x in rs], 1e3):>22} "
              f"{cell([x['server']['messages_per_cpu_second'] for x in rs], 1e3):>22} "
              f"{cell([x['server']['cpu_percent'] for x in rs], 1):>14} "
              f"{cell([x['latency']['p99_us'] for x in rs], 1e3, '{:.2f}'):>18}")
EOF
