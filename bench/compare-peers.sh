#!/usr/bin/env bash
# Side by side: shardcast (`--bench-endpoints`, one shard) against native uWebSockets (the C++
# library, $UWS_PEER) and optionally the Node peers (bench/peers/*.mjs), all serving the same
# raw /echo and /broadcast paths. Each server runs alone on SERVER_CPU (default 0), started
# fresh for every scenario run; the same shardcast-loadgen commands run on LOAD_CPU (default 1).
# Rounds are interleaved (every scenario and server once per round) so that a noisy neighbour
# hurts all of them alike. 64-byte messages.
#
#   bench/compare-peers.sh [ROUNDS] [SCENARIO...]   (default: 3 rounds, the full list below)
#   bench/compare-peers.sh --short                  (or SHORT=1: ~30 s, a pass/fail check)
#
# Scenarios (names are parsed: 10k = 10 000, 1m = 1 000 000):
#   echo-CxD         C connections x D in flight, closed loop: round trips per server CPU-s
#   echo-CxD@RATE    the same connections, open loop at RATE round trips/s: the server's idle
#                    share (100 % - its CPU %) at a fixed load
#   fanout-RATE      1 publisher + FANOUT_SUBS (1000) subscribers on /broadcast, RATE
#                    deliveries/s offered (publishes/s = RATE / subscribers)
#   idle-N           N idle connections: server VmRSS after one warm-up connection and with all
#                    N open, bytes per connection; beside it, host-wide kernel figures (both ends
#                    of every connection): TCP buffer pages (/proc/net/sockstat) and
#                    unreclaimable slab (/proc/meminfo SUnreclaim: socket structures)
#   capacity-echo    the highest open-loop echo rate (100 connections), and
#   capacity-fanout  the highest fan-out rate, with nothing lost and p99 <= P99_MS (50): double,
#                    then bisect, at most CAP_STEPS (8) runs and CAP_BUDGET_S (120) s per server;
#                    a rate that failed on latency alone gets a second run
# Full list: echo-100x16 echo-100x16@200k echo-1000x1 fanout-1m fanout-4m idle-10k
#            capacity-echo capacity-fanout
# --short: echo-100x16 echo-100x16@200k fanout-1m idle-2k, one round, 2 s windows; exits 1 if
#   shardcast lost anything, saw errors or delivered < 90 % of fanout-1m, or a peer could not
#   be run at all (peers' own losses are reported, not failed on).
#
# Servers: PEERS (space- or comma-separated) from shardcast, uws-native, uws-js, node-ws.
#   Default: shardcast, plus uws-native when UWS_PEER is an executable (e.g.
#   UWS_PEER=../shared/peers/uws-peer). The Node peers (uWebSockets.js, `ws`) run only when
#   PEERS names them; they need Node.js and npm (installed from bench/peers/package-lock.json).
#   shardcast-base: another shardcast build, SHARDCAST_BASE=path/to/shardcast (e.g. one built
#   from an earlier commit into its own target dir), run with the same flags: a change
#   measured alone, against its baseline, in the same rounds.
# Other settings (environment): DURATION (5s; short 2s), WARMUP (1s; short 0.5s), HOLD (3s;
#   short 1s) for idle-N, CAP_DURATION (3s), SERVER_CPU, LOAD_CPU, FANOUT_SUBS, P99_MS,
#   CAP_STEPS, CAP_BUDGET_S, OUT (target/peers).
#
# Needs release builds (`cargo build --release -p shardcast -p shardcast-loadgen`), python3,
# taskset and 2 cores. Each invocation writes to OUT/<date-time>[-short]/ (the five newest
# -short ones are kept): one loadgen report (JSON and table) per run, runs.tsv (one line per
# run: the CPU wait of server and load generator from schedstat, VmRSS, sockstat and slab
# readings, capacity verdicts) and the summary (bench/compare_peers_summary.py: medians of the
# rounds, ratios against uws-native), summary.json also copied to OUT/summary.json. On a
# shared machine run it under the bench lock: `flock /tmp/bench.lock bench/compare-peers.sh`.
# Every process started here is ended here, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

SHORT="${SHORT:-0}"
ARGS=()
for a in "$@"; do
  case "$a" in
    --short) SHORT=1 ;;
    -h|--help) sed -n '2,47p' "$0"; exit 0 ;;
    -*) echo "unknown option $a (see --help)" >&2; exit 2 ;;
    *) ARGS+=("$a") ;;
  esac
done
set -- "${ARGS[@]+"${ARGS[@]}"}"
ROUNDS=3
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then ROUNDS="$1"; shift; fi
SCENARIOS=("$@")
if [ "$SHORT" = 1 ]; then
  ROUNDS=1
  [ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(echo-100x16 echo-100x16@200k fanout-1m idle-2k)
  DURATION="${DURATION:-2s}"; WARMUP="${WARMUP:-0.5s}"; HOLD="${HOLD:-1s}"
else
  [ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(echo-100x16 echo-100x16@200k echo-1000x1 fanout-1m
                                            fanout-4m idle-10k capacity-echo capacity-fanout)
  DURATION="${DURATION:-5s}"; WARMUP="${WARMUP:-1s}"; HOLD="${HOLD:-3s}"
fi
CAP_DURATION="${CAP_DURATION:-3s}"
SERVER_CPU="${SERVER_CPU:-0}"
LOAD_CPU="${LOAD_CPU:-1}"
FANOUT_SUBS="${FANOUT_SUBS:-1000}"
P99_MS="${P99_MS:-50}"
CAP_STEPS="${CAP_STEPS:-8}"
CAP_BUDGET_S="${CAP_BUDGET_S:-120}"
SIZE=64
BIN="${CARGO_TARGET_DIR:-target}/release"
OUT="${OUT:-target/peers}"
SUMMARY=bench/compare_peers_summary.py

for b in shardcast shardcast-loadgen; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run cargo build --release -p shardcast -p shardcast-loadgen" >&2; exit 2; }
done
for t in python3 taskset awk; do
  command -v "$t" >/dev/null || { echo "$t is needed" >&2; exit 2; }
done

# --- servers -------------------------------------------------------------------------------

if [ -n "${PEERS:-}" ]; then
  read -ra PEER_LIST <<<"${PEERS//,/ }"
else
  PEER_LIST=(shardcast)
  [ -n "${UWS_PEER:-}" ] && [ -x "$UWS_PEER" ] && PEER_LIST+=(uws-native)
fi
NEED_NODE=0
for p in "${PEER_LIST[@]}"; do
  case "$p" in
    shardcast) ;;
    uws-native)
      if [ -z "${UWS_PEER:-}" ] || [ ! -x "$UWS_PEER" ]; then
        echo "uws-native needs UWS_PEER=path/to/uws-peer (an executable)" >&2; exit 2
      fi ;;
    shardcast-base)
      if [ -z "${SHARDCAST_BASE:-}" ] || [ ! -x "$SHARDCAST_BASE" ]; then
        echo "shardcast-base needs SHARDCAST_BASE=path/to/shardcast (an executable)" >&2; exit 2
      fi ;;
    uws-js|node-ws) NEED_NODE=1 ;;
    *) echo "unknown peer $p (shardcast, shardcast-base, uws-native, uws-js, node-ws)" >&2; exit 2 ;;
  esac
done
if [ "$NEED_NODE" = 1 ]; then
  command -v node >/dev/null || { echo "Node.js is needed for uws-js and node-ws (apt-get install nodejs npm)" >&2; exit 2; }
  if [ ! -d bench/peers/node_modules/uws-pack ] || [ ! -d bench/peers/node_modules/ws ]; then
    (cd bench/peers && npm ci --no-audit --no-fund)
  fi
fi

# --- scenarios -----------------------------------------------------------------------------

count() { # count 10k → 10000, 1.5m → 1500000, 200000 → 200000; fails on anything else
  awk -v s="$1" 'BEGIN {
    m = 1; u = tolower(substr(s, length(s)))
    if (u == "k") { m = 1e3; s = substr(s, 1, length(s) - 1) }
    else if (u == "m") { m = 1e6; s = substr(s, 1, length(s) - 1) }
    if (s !~ /^[0-9]+(\.[0-9]+)?$/) exit 1
    printf "%d\n", s * m }'
}

# The open-file limit caps one process: the server holds idle-N alone, so N stays 100 below it
# (the server itself holds 16 descriptors besides its connections).
# Every process started here gets the hard limit as its soft one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n); [ "$NOFILE" = unlimited ] && NOFILE=1048576
positive() { local n; n=$(count "$1") && [ "$n" -gt 0 ]; }
check_scenario() { # check_scenario NAME: exits 2 unless the harness knows how to run NAME
  local s="$1" n
  case "$s" in
    echo-*x*@*) [[ "$s" =~ ^echo-([1-9][0-9]*)x([1-9][0-9]*)@([0-9.]+[kKmM]?)$ ]] && positive "${BASH_REMATCH[3]}" ;;
    echo-*x*) [[ "$s" =~ ^echo-([1-9][0-9]*)x([1-9][0-9]*)$ ]] ;;
    fanout-*) positive "${s#fanout-}" ;;
    idle-*)
      positive "${s#idle-}" || { echo "bad scenario $s" >&2; exit 2; }
      n=$(count "${s#idle-}")
      [ "$n" -le $(( NOFILE - 100 )) ] \
        || { echo "$s: a server process may hold at most $(( NOFILE - 100 )) connections here (open files capped at $NOFILE)" >&2; exit 2; } ;;
    capacity-echo|capacity-fanout) ;;
    *) false ;;
  esac || { echo "unknown scenario $s (see --help)" >&2; exit 2; }
}
for s in "${SCENARIOS[@]}"; do check_scenario "$s"; done

# --- processes -----------------------------------------------------------------------------

# Every process started here, ended on exit (by PID): PIDS, stop_all, stop_pid; runq_wait PID.
source bench/lib.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

SERVER=""; PORT=""
start_server() { # start_server PEER LOG: PEER on a free port, pinned; sets SERVER and PORT
  local peer="$1" log="$2" deadline
  for _ in 1 2 3; do
    PORT=$(free_port)
    case "$peer" in
      # The connection cap set to the open-file limit less 50 (the default keeps a reserve of
      # 64 + 1/64 of it, 376 here, for files an application opens): idle-N goes to N = limit − 100.
      shardcast|shardcast-base)
                  local bin="$BIN/shardcast"; [ "$peer" = shardcast ] || bin="$SHARDCAST_BASE"
                  taskset -c "$SERVER_CPU" "$bin" --host 127.0.0.1 --port "$PORT" \
                    --tcp-port 0 --shards 1 --bench-endpoints \
                    --max-connections $(( NOFILE - 50 )) >"$log" 2>&1 & ;;
      uws-native) taskset -c "$SERVER_CPU" "$UWS_PEER" "$PORT" >"$log" 2>&1 & ;;
      uws-js)     taskset -c "$SERVER_CPU" node bench/peers/uws.mjs "$PORT" >"$log" 2>&1 & ;;
      node-ws)    taskset -c "$SERVER_CPU" node bench/peers/ws.mjs "$PORT" >"$log" 2>&1 & ;;
    esac
    SERVER=$!; PIDS+=("$SERVER")
    deadline=$(( SECONDS + 10 ))
    until grep -q "listening" "$log" 2>/dev/null; do
      if [ "$SECONDS" -gt "$deadline" ] || ! kill -0 "$SERVER" 2>/dev/null; then break; fi
      sleep 0.05
    done
    grep -q "listening" "$log" 2>/dev/null && kill -0 "$SERVER" 2>/dev/null && return 0
    stop_pid "$SERVER"   # the port was taken between free_port and bind, or worse: try again
  done
  echo "$peer did not start:" >&2; cat "$log" >&2; exit 1
}
stop_server() { stop_pid "$SERVER"; SERVER=""; }

# memory_readings: READINGS=(server VmRSS kB, TCP sockets in use, TCP buffer pages, unreclaimable
# slab kB), from /proc/PID/status, /proc/net/sockstat and /proc/meminfo, with shell builtins only.
READINGS=()
memory_readings() {
  local k v f i rss=0 inuse=0 mem=0 slab=0
  while read -r k v _; do [ "$k" = VmRSS: ] && rss=$v; done 2>/dev/null <"/proc/$SERVER/status"
  while read -ra f; do   # TCP: inuse N orphan N tw N alloc N mem PAGES
    [ "${f[0]}" = TCP: ] || continue
    for (( i = 1; i + 1 < ${#f[@]}; i += 2 )); do
      case "${f[i]}" in inuse) inuse=${f[i+1]} ;; mem) mem=${f[i+1]} ;; esac
    done
  done </proc/net/sockstat
  while read -r k v _; do [ "$k" = SUnreclaim: ] && slab=$v; done </proc/meminfo
  READINGS=("$rss" "$inuse" "$mem" "$slab")
}
elapsed_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f\n", b - a}'; }

RUN="$OUT/$(date +%Y%m%d-%H%M%S)"; [ "$SHORT" = 1 ] && RUN="$RUN-short"
mkdir -p "$RUN"
RUNS="$RUN/runs.tsv"
printf 'round\tscenario\tpeer\tstep\trate\treport\trc\tserver_alive\twall_s\trunq_wait_s\tloadgen_runq_wait_s\trss_before_kb\trss_after_kb\ttcp_inuse_before\ttcp_inuse_after\ttcp_mem_before\ttcp_mem_after\tslab_before_kb\tslab_after_kb\tverdict\n' >"$RUNS"

# measure ROUND SCENARIO PEER STEP RATE JSON ARGS...: one run of `shardcast-loadgen ARGS` on
# LOAD_CPU against the current server (its table beside JSON), recorded as a line of runs.tsv:
# exit code, whether the server survived, and how long the server and the load generator waited
# for their CPUs (schedstat) during the run. With MEMORY=1 (idle-N) also the memory readings
# before the run and their largest values during it, sampled every 0.2 s (otherwise every
# 0.5 s, the load generator's CPU wait only). Sets RC and ALIVE (1: the server survived).
RC=0; ALIVE=1; MEMORY=0
measure() {
  local round="$1" scenario="$2" peer="$3" step="$4" rate="$5" json="$6"; shift 6
  local txt="${json%.json}.txt" wait0 t0 lg w lgwait=0 tick=0.5 i
  local before=("" "" "" "") peak=("" "" "" "")
  if [ "$MEMORY" = 1 ]; then memory_readings; before=("${READINGS[@]}"); peak=("${READINGS[@]}"); tick=0.2; fi
  wait0=$(runq_wait "$SERVER"); t0=$(date +%s.%N)
  taskset -c "$LOAD_CPU" "$BIN/shardcast-loadgen" "$@" --target raw -s "$SIZE" \
    --server-pid "$SERVER" --no-progress --label "$peer" --json "$json" >"$txt" 2>&1 &
  lg=$!; PIDS+=("$lg")
  # kill -0 also holds for a zombie, but the shell reaps its children as they exit.
  while kill -0 "$lg" 2>/dev/null; do
    w=$(runq_wait "$lg"); [ "$w" = 0.000 ] || lgwait=$w   # it only grows; 0 once the process is gone
    if [ "$MEMORY" = 1 ]; then
      memory_readings
      for i in 0 1 2 3; do [ "${READINGS[i]}" -le "${peak[i]}" ] || peak[i]=${READINGS[i]}; done
    fi
    sleep "$tick"
  done
  RC=0; wait "$lg" || RC=$?
  stop_pid "$lg"
  ALIVE=1; kill -0 "$SERVER" 2>/dev/null || ALIVE=0
  printf '%s\t' "$round" "$scenario" "$peer" "$step" "$rate" "$json" "$RC" "$ALIVE" \
    "$(elapsed_since "$t0")" \
    "$(awk -v a="$wait0" -v b="$(runq_wait "$SERVER")" 'BEGIN {printf "%.3f", b - a}')" "$lgwait" \
    "${before[0]}" "${peak[0]}" "${before[1]}" "${peak[1]}" "${before[2]}" "${peak[2]}" \
    "${before[3]}" "${peak[3]}" >>"$RUNS"
  echo >>"$RUNS"   # the verdict column stays empty here (run_capacity fills it in)
  grep -E "^(connections|throughput|latency|messages|errors|server|loadgen|WARNING)" "$txt" \
    | sed 's/^/   /' || true
  if [ "$MEMORY" = 1 ]; then
    echo "   server VmRSS ${before[0]} kB before → ${peak[0]} kB with the connections open;" \
         "host: TCP sockets ${before[1]} → ${peak[1]}, TCP buffer pages ${before[2]} → ${peak[2]}," \
         "unreclaimable slab ${before[3]} → ${peak[3]} kB"
  fi
  [ "$RC" = 0 ] || { echo "   load generator exit code $RC:"; tail -3 "$txt" | sed 's/^/   /'; }
  [ "$ALIVE" = 1 ] || echo "   the server died: see ${json%.json}.server.log"
}

# One run of a message scenario on a fresh server.
run_messages() { # run_messages ROUND SCENARIO PEER
  local round="$1" s="$2" peer="$3" base="$RUN/$2-$3-r$1"
  local args=() rate=""
  if [[ "$s" =~ ^echo-([0-9]+)x([0-9]+)(@(.+))?$ ]]; then
    args=(echo -c "${BASH_REMATCH[1]}" -D "${BASH_REMATCH[2]}")
    [ -z "${BASH_REMATCH[4]}" ] || { rate=$(count "${BASH_REMATCH[4]}"); args+=(--rate "$rate"); }
  else
    rate=$(count "${s#fanout-}")
    args=(broadcast -c $(( FANOUT_SUBS + 1 )) -P 1
          --rate "$(awk -v r="$rate" -v n="$FANOUT_SUBS" 'BEGIN {printf "%.3f", r / n}')")
  fi
  start_server "$peer" "$base.server.log"
  echo "== round $round/$ROUNDS  $s  $peer (pid $SERVER, port $PORT)"
  local url="ws://127.0.0.1:$PORT"; [ "${args[0]}" = echo ] && url="$url/echo"
  measure "$round" "$s" "$peer" 0 "$rate" "$base.json" "${args[@]}" --url "$url" \
    --duration "$DURATION" --warmup "$WARMUP"
  stop_server
}

# idle-N: one warm-up connection (a short echo run: the server's read and write paths have
# run once), then N idle connections held by ceil(N / (NOFILE - 1000)) load generator processes
# (one process's open files are capped too) while measure samples the memory readings.
run_idle() { # run_idle ROUND SCENARIO PEER
  local round="$1" s="$2" peer="$3" base="$RUN/$2-$3-r$1" n procs
  n=$(count "${s#idle-}")
  procs=$(( (n + NOFILE - 1001) / (NOFILE - 1000) ))
  start_server "$peer" "$base.server.log"
  echo "== round $round/$ROUNDS  $s  $peer (pid $SERVER, port $PORT)"
  taskset -c "$LOAD_CPU" "$BIN/shardcast-loadgen" echo -c 1 -D 1 --target raw \
    --url "ws://127.0.0.1:$PORT/echo" --duration 0.3s --warmup 0s --no-progress \
    >"$base.warmup.txt" 2>&1 || { echo "   the warm-up connection failed:"; tail -3 "$base.warmup.txt"; }
  sleep 0.2
  MEMORY=1
  measure "$round" "$s" "$peer" 0 "$n" "$base.json" hold -c "$n" --procs "$procs" \
    --url "ws://127.0.0.1:$PORT/echo" --hold "$HOLD" --connect-rate 5000
  MEMORY=0
  stop_server
}

# capacity-echo / capacity-fanout: open-loop runs at a rising offered rate on a fresh server
# each, doubling from a start rate until one fails (anything lost, an error, p99 > P99_MS: the
# summary script's `verdict`), halving if the first fails, then bisecting (geometric mean)
# until the bounds are within 10 %, CAP_STEPS runs or CAP_BUDGET_S seconds, whichever first.
# A rate that failed on latency alone is run once more before it counts as failed: on a shared
# machine one scheduling hiccup of a neighbour is enough to push a p99 past the bound.
run_capacity() { # run_capacity ROUND SCENARIO PEER
  local round="$1" s="$2" peer="$3" rate lo=0 hi=0 step=0 t0=$SECONDS json verdict args url
  local retried=0 latency_only='^fail: p99 [0-9.]+ ms > [0-9.]+ ms \('
  case "$s" in
    capacity-echo) rate=250000 ;;
    capacity-fanout) rate=500000 ;;
  esac
  while [ "$step" -lt "$CAP_STEPS" ] && [ $(( SECONDS - t0 )) -lt "$CAP_BUDGET_S" ]; do
    step=$(( step + 1 ))
    json="$RUN/$s-$peer-r$round-s$step.json"
    start_server "$peer" "${json%.json}.server.log"
    echo "== round $round/$ROUNDS  $s  $peer  step $step: $rate/s offered (pid $SERVER, port $PORT)"
    if [ "$s" = capacity-echo ]; then
      args=(echo -c 100 -D 16 --rate "$rate"); url="ws://127.0.0.1:$PORT/echo"
    else
      args=(broadcast -c $(( FANOUT_SUBS + 1 )) -P 1
            --rate "$(awk -v r="$rate" -v n="$FANOUT_SUBS" 'BEGIN {printf "%.3f", r / n}')")
      url="ws://127.0.0.1:$PORT"
    fi
    measure "$round" "$s" "$peer" "$step" "$rate" "$json" "${args[@]}" --url "$url" \
      --duration "$CAP_DURATION" --warmup 1s
    stop_server
    verdict=$(python3 "$SUMMARY" verdict --p99-ms "$P99_MS" --rc "$RC" --alive "$ALIVE" "$json" || true)
    echo "   verdict: $verdict"
    # The verdict goes on the line measure just wrote (the last one).
    awk -v v="$verdict" 'BEGIN {FS = OFS = "\t"} NR == n {$NF = v} {print}' n="$(wc -l <"$RUNS")" \
      "$RUNS" >"$RUNS.tmp" && mv "$RUNS.tmp" "$RUNS"
    if [[ "$verdict" == pass* ]]; then lo=$rate
    elif [ "$retried" != "$rate" ] && [[ "$verdict" =~ $latency_only ]]; then
      retried=$rate; echo "   latency alone: once more at $rate/s"; continue
    else hi=$rate
    fi
    if [ "$hi" = 0 ]; then rate=$(( rate * 2 ))
    elif [ "$lo" = 0 ]; then rate=$(( rate / 2 )); [ "$rate" -ge 1000 ] || break
    else
      awk -v l="$lo" -v h="$hi" 'BEGIN {exit !(h <= l * 1.1)}' && break
      # The geometric mean, to three significant digits.
      rate=$(awk -v l="$lo" -v h="$hi" 'BEGIN {g = sqrt(l * h); p = 10 ^ (int(log(g) / log(10)) - 2); printf "%d\n", int(g / p + 0.5) * p}')
    fi
  done
}

echo "servers: ${PEER_LIST[*]} on CPU $SERVER_CPU; load generator on CPU $LOAD_CPU; $ROUNDS round(s): ${SCENARIOS[*]}"
echo "reports: $RUN"
{
  printf 'started\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  printf 'loadavg_before\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'shardcast_commit\t%s\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  printf 'uws_peer\t%s\n' "${UWS_PEER:-}"
  printf 'short\t%s\nrounds\t%s\npeers\t%s\nscenarios\t%s\n' "$SHORT" "$ROUNDS" "${PEER_LIST[*]}" "${SCENARIOS[*]}"
  printf 'duration\t%s\nwarmup\t%s\nhold\t%s\ncap_duration\t%s\np99_ms\t%s\nfanout_subs\t%s\n' \
    "$DURATION" "$WARMUP" "$HOLD" "$CAP_DURATION" "$P99_MS" "$FANOUT_SUBS"
} >"$RUN/meta.tsv"

T0=$SECONDS
for round in $(seq 1 "$ROUNDS"); do
  for s in "${SCENARIOS[@]}"; do
    for peer in "${PEER_LIST[@]}"; do
      case "$s" in
        idle-*) run_idle "$round" "$s" "$peer" ;;
        capacity-*) run_capacity "$round" "$s" "$peer" ;;
        *) run_messages "$round" "$s" "$peer" ;;
      esac
    done
  done
done
printf 'loadavg_after\t%s\nseconds\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" $(( SECONDS - T0 )) >>"$RUN/meta.tsv"

# test.sh makes a --short run each time: keep the five newest (names sort by date and time).
if [ "$SHORT" = 1 ]; then
  shorts=("$OUT"/[0-9]*-short)
  [ ${#shorts[@]} -le 5 ] || rm -rf -- "${shorts[@]:0:${#shorts[@]}-5}"
fi

check=(); [ "$SHORT" = 1 ] && check=(--check)
rc=0
python3 "$SUMMARY" summary "$RUN" "${check[@]+"${check[@]}"}" || rc=$?
[ -f "$RUN/summary.json" ] && cp "$RUN/summary.json" "$OUT/summary.json"
echo "took $(( SECONDS - T0 )) s; reports in $RUN, summary in $OUT/summary.json"
exit "$rc"
