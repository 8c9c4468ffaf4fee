#!/usr/bin/env bash
# Runs every check shardcast has, on a fresh Debian machine or a dev box:
#   formatting, clippy (warnings are errors), the architecture invariants,
#   `cargo test --workspace` (unit, property and integration tests against real server
#   processes), the Autobahn conformance run (PyPI `kosoku`) and interop tests with
#   third-party clients (Python `websockets`), then a release build and a ~30 s peer
#   comparison (bench/compare-peers.sh --short: nothing lost, no errors, no fan-out cliff;
#   against native uWebSockets too when ../shared/peers/uws-peer is there).
# Installs what it needs: Python packages go into a venv under target/.
# Prints a summary; exits non-zero if anything failed.
set -uo pipefail
cd "$(dirname "$0")"

VENV="target/venv"
PY_PACKAGES=("kosoku==0.1.0" "websockets==17.4")
declare -a RESULTS=()
FAILED=0
START_ALL=$(date +%s)

step() { # step NAME CMD...
  local name="$1"; shift
  local t0=$(date +%s)
  echo
  echo "==> $name"
  if "$@"; then
    RESULTS+=("PASS  $name ($(( $(date +%s) - t0 ))s)")
  else
    RESULTS+=("FAIL  $name ($(( $(date +%s) - t0 ))s)")
    FAILED=1
  fi
}

ensure_python() {
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || { apt-get update -qq && apt-get install -y -qq python3-venv && python3 -m venv "$VENV"; } || return 1
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
}

ensure_system_tools() {
  # capsh: the start-up test drops CAP_IPC_LOCK to check the server under an 8 MiB memlock limit.
  # redis-server (and redis-cli): tests/cluster.rs runs nodes against a real Redis; without it
  # those tests fail (they never skip).
  local missing=()
  command -v capsh >/dev/null 2>&1 || missing+=(libcap2-bin)
  { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || missing+=(redis-server)
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
}

# Code lines only (comments may say what a layer does *not* do).
code_grep() { # code_grep PATTERN DIR
  grep -rnE "$1" "$2" | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'
}

architecture_invariants() {
  local bad=0
  # protocol/ is sans-IO: no sockets, no executor, no clock reads, no threads.
  if code_grep 'glommio|std::net|tokio|Instant::now|SystemTime::now|std::thread' src/protocol; then
    echo "architecture invariant broken: src/protocol must not do I/O, spawn or read clocks"; bad=1
  fi
  # shards/ knows nothing of WebSocket or stelar (or of the server crate).
  if code_grep '[Ww]eb[Ss]ocket|[Ss]telar|shardcast::' shards/src; then
    echo "architecture invariant broken: shards/ must not know about WebSocket or stelar"; bad=1
  fi
  # loadgen reuses protocol/ only, never app/ or conn/ or hub/.
  if code_grep 'shardcast::(app|conn|hub|relay|server)' loadgen/src; then
    echo "architecture invariant broken: loadgen must only use shardcast::protocol"; bad=1
  fi
  return $bad
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy (deny warnings)" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "architecture invariants" architecture_invariants
step "system tools (capsh, redis-server)" ensure_system_tools
step "python venv ($VENV: ${PY_PACKAGES[*]})" ensure_python
export SHARDCAST_TEST_PYTHON="$PWD/$VENV/bin/python"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
step "cargo build --workspace (binaries the tests start)" cargo build --workspace --bins --quiet
step "cargo test --workspace" cargo test --workspace --quiet
autobahn() {
  "$VENV/bin/python" tests/autobahn/run.py --server "$TARGET_DIR/debug/shardcast" --outdir target/autobahn
}
step "Autobahn TestSuite (kosoku, all 517 cases, /echo)" autobahn

step "cargo build --release -p shardcast -p shardcast-loadgen" \
  cargo build --release -p shardcast -p shardcast-loadgen --quiet
# The native uWebSockets peer, when this checkout sits beside shared/peers/ (bench/compare-peers.sh).
UWS_BESIDE="$(dirname "$PWD")/shared/peers/uws-peer"
if [ -z "${UWS_PEER:-}" ] && [ -x "$UWS_BESIDE" ]; then export UWS_PEER="$UWS_BESIDE"; fi
peer_comparison() {
  # Under the bench lock, as every measurement on a shared machine (PERF.md, "Method").
  if command -v flock >/dev/null 2>&1; then
    flock /tmp/bench.lock bench/compare-peers.sh --short
  else
    bench/compare-peers.sh --short
  fi
}
step "peer comparison, short (bench/compare-peers.sh --short: shardcast${UWS_PEER:+, uws-native})" peer_comparison

echo
echo "==================== summary ===================="
for r in "${RESULTS[@]}"; do echo "$r"; done
echo "total: $(( $(date +%s) - START_ALL ))s"
if [ $FAILED -ne 0 ]; then echo "RESULT: FAILED"; exit 1; fi
echo "RESULT: all passed"
