#!/usr/bin/env bash
# Fan-out to each dialect's clients, same run, against stelar (PERF.md "Dialects"):
# 1000 receivers in 10 rooms of 100 (one stelar publisher per room, 99 receivers speaking the
# dialect), 64-byte messages, at two publish rates (one the server sustains with room to spare,
# one near its limit), for stelar, stellarstack, ignis and stonyx alternated within each round.
#
#   bench/dialects.sh [--short] [--rounds 3] [--rates "300 10000"] [--duration 5s]
#                     [--dialects "stelar stellarstack ignis stonyx"]
#   bench/dialects.sh --table-only [target/dialects/results.tsv ...]
#
# Rates are publishes/s in all (deliveries/s = rate x 99). --short: one round, one rate, 2 s
# (a smoke check). One server runs for the whole script: `shardcast --shards 1` pinned to
# SERVER_CPUS (default 0) with a path per dialect (/ws/stellarstack, /ws/ignis, /ws/stonyx) and
# a JWT secret; the load generator runs on LOAD_CPUS (default 1) and mints one token per
# receiver. Each run's server CPU time comes from /proc/PID/stat read at the start and end of
# the measured window (the load generator's --server-pid), so "deliveries per server
# CPU-second" = deliveries received in the window / server CPU-seconds in the window.
#
# Needs release builds (`cargo build --release -p shardcast -p shardcast-loadgen`) and
# python3. Reports go to target/dialects/; the table (medians over the rounds, [min-max]) is
# printed at the end and written to target/dialects/table.txt (--table-only: print it again from
# the last run's reports, or from several runs' results.tsv pooled). Only runs where the server
# waited for its CPU less than 5 % of the time count (a shared machine: see PERF.md).
# Everything started here is ended here, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT=0; TABLE_ONLY=0; ROUNDS=3; RATES="300 10000"; DURATION=5s; WARMUP=1s
DIALECTS="stelar stellarstack ignis stonyx"
while [ $# -gt 0 ]; do
  case "$1" in
    --short) SHORT=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --rates) RATES="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --dialects) DIALECTS="$2"; shift ;;
    --table-only) TABLE_ONLY=1; shift; break ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SHORT" = 1 ]; then ROUNDS=1; RATES="300"; DURATION=2s; fi

BIN="${CARGO_TARGET_DIR:-target}/release"
OUT="target/dialects"
SERVER_CPUS="${SERVER_CPUS:-0}"
LOAD_CPUS="${LOAD_CPUS:-1}"
ROOMS=10; ROOM_SIZE=100
SECRET="bench-dialects-secret-0123456789abcdef"
mkdir -p "$OUT"
for b in shardcast shardcast-loadgen; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run cargo build --release -p shardcast -p shardcast-loadgen" >&2; exit 2; }
done
for t in python3 taskset; do
  command -v "$t" >/dev/null || { echo "$t is needed" >&2; exit 2; }
done

RESULTS="$OUT/results.tsv"
table() { # table [RESULTS.tsv ...]: the table from these runs (default: this run's)
  [ $# -gt 0 ] || set -- "$RESULTS"
  python3 - "$ROOM_SIZE" "$@" <<'EOF' | tee "$OUT/table.txt"
import csv, json, math, statistics, sys
receivers = int(sys.argv[1]) - 1
# A run is "quiet" when the server waited for its CPU (other processes on it) less than 5 % of
# the run: on a shared machine, a starved server batches more per write and spends less CPU
# per delivery, so only runs under the same conditions compare. A dialect's ratio against
# stelar is taken within one round, and only when both runs of that round were quiet.
QUIET = 0.05
runs = {}  # (source, round, rate, dialect) -> results
for src, path in enumerate(sys.argv[2:]):
    for r in csv.DictReader(open(path), delimiter="\t"):
        res = json.load(open(r["report"]))["results"]
        wait, wall = r.get("runq_wait_s"), r.get("wall_s")
        res["wait_share"] = float(wait) / float(wall) if wait and wall else math.nan
        runs[(src, r["round"], int(r["rate"]), r["dialect"])] = res
quiet = lambda x: x["wait_share"] < QUIET
order = []
for (_, _, rate, d) in runs:
    if (rate, d) not in order:
        order.append((rate, d))
med = statistics.median
def rng(xs, f):
    return f"{f(med(xs))} [{f(min(xs))}-{f(max(xs))}]" if xs else "-"
k_ = lambda v: f"{v / 1e3:.0f}k" if v < 1e6 else f"{v / 1e6:.2f}M"
ms = lambda v: f"{v / 1e3:.2f}"
pct = lambda v: f"{v:.0f} %"
print()
print("| publishes/s (deliveries/s) | dialect | quiet runs | lost | bytes/delivery | deliveries per server CPU-s | vs stelar, same round | server CPU | p50 ms | p99 ms | loadgen CPU |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for rate, d in sorted(order, key=lambda k: (k[0], order.index(k))):
    mine = {k: v for k, v in runs.items() if k[2] == rate and k[3] == d}
    res = [x for x in mine.values() if quiet(x)]
    ratios = [x["server"]["messages_per_cpu_second"]
              / runs[(s, rd, rate, "stelar")]["server"]["messages_per_cpu_second"]
              for (s, rd, _, _), x in mine.items()
              if quiet(x) and (s, rd, rate, "stelar") in runs and quiet(runs[(s, rd, rate, "stelar")])]
    sat = any(x["loadgen"]["saturated"] for x in res)
    print(f"| {rate} ({rate * receivers}) | {d} | {len(res)} of {len(mine)} "
          f"| {max(x['messages']['lost'] for x in mine.values())} "
          f"| {med([x['throughput']['bytes_received_per_s'] / x['throughput']['received_per_s'] for x in mine.values()]):.0f} "
          f"| {rng([x['server']['messages_per_cpu_second'] for x in res], k_)} "
          f"| {rng(ratios, lambda v: f'{v:.2f}x')} "
          f"| {rng([x['server']['cpu_percent'] for x in res], pct)} "
          f"| {rng([x['latency']['p50_us'] for x in res], ms)} "
          f"| {rng([x['latency']['p99_us'] for x in res], ms)} "
          f"| {rng([x['loadgen']['cpu_percent_of_shards'] for x in res], pct)}{' SATURATED' if sat else ''} |")
print()
print("Quiet runs only (the server waited for its CPU < 5 % of the run, /proc/PID/task/*/schedstat); figures are")
print("medians [min-max] over them. lost: the largest over all runs. vs stelar: deliveries per server CPU-second")
print("over stelar's in the same round, both quiet. server CPU: % of its core over the measured window.")
print("bytes/delivery: what the receivers read per delivery (frame header included), all runs.")
contended = [k for k, x in runs.items() if not quiet(x)]
if contended:
    shares = sorted(runs[k]["wait_share"] * 100 for k in contended)
    print(f"{len(contended)} of {len(runs)} runs left out as contended (server run-queue wait "
          f"{shares[0]:.0f}-{shares[-1]:.0f} % of the run).")
EOF
}
if [ "$TABLE_ONLY" = 1 ]; then table "$@"; exit 0; fi

# Every process started here, ended on exit (by PID): PIDS, stop_all; runq_wait PID.
source bench/lib.sh

LOG="$OUT/server.log"
taskset -c "$SERVER_CPUS" "$BIN/shardcast" --host 127.0.0.1 --port 0 --tcp-port 0 --shards 1 \
  --dialect /ws/stellarstack=stellarstack --dialect /ws/ignis=ignis --dialect /ws/stonyx=stonyx \
  --jwt-secret "$SECRET" >"$LOG" 2>&1 &
SERVER=$!; PIDS+=("$SERVER")
deadline=$(( $(date +%s) + 15 ))
until grep -q "listening" "$LOG"; do
  if [ "$(date +%s)" -gt "$deadline" ] || ! kill -0 "$SERVER" 2>/dev/null; then
    echo "the server did not start:" >&2; cat "$LOG" >&2; exit 1
  fi
  sleep 0.05
done
WS=$(grep -o 'ws=[^ ]*' "$LOG" | head -1 | cut -d= -f2)
echo "server pid $SERVER on ws://$WS (CPU $SERVER_CPUS); load generator on CPU $LOAD_CPUS" >&2

path_of() {
  case "$1" in
    stelar) echo "/" ;;
    *) echo "/ws/$1" ;;
  esac
}

printf 'round\tdialect\trate\treport\twall_s\trunq_wait_s\n' >"$RESULTS"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee "$OUT/loadavg.txt"
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    for dialect in $DIALECTS; do
      json="$OUT/r$round-$dialect-$rate.json"
      wait0=$(runq_wait "$SERVER"); t0=$(date +%s.%N)
      echo "== round $round, $dialect, $rate publishes/s ($(( rate * (ROOM_SIZE - 1) )) deliveries/s)" >&2
      taskset -c "$LOAD_CPUS" "$BIN/shardcast-loadgen" fanout \
        --url "ws://$WS$(path_of "$dialect")" --dialect "$dialect" --jwt-secret "$SECRET" \
        --rooms "$ROOMS" --room-size "$ROOM_SIZE" --publishers 1 --rate "$rate" -s 64 \
        --duration "$DURATION" --warmup "$WARMUP" --server-pid "$SERVER" --no-progress \
        --label "$dialect-$rate" --json "$json" >"$OUT/r$round-$dialect-$rate.txt" 2>&1 \
        || { cat "$OUT/r$round-$dialect-$rate.txt" >&2; exit 1; }
      wall=$(python3 -c "print(round($(date +%s.%N) - $t0, 3))")
      waited=$(python3 -c "print(round($(runq_wait "$SERVER") - $wait0, 3))")
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$dialect" "$rate" "$json" "$wall" "$waited" >>"$RESULTS"
    done
  done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/loadavg.txt"
table
