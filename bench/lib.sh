# shellcheck shell=bash
# Shared by the bench scripts (source it): every process a script starts goes into PIDS and is
# ended on exit, by PID.
PIDS=()
stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# stop_pid PID: end one process started here (TERM, then KILL after 10 s), reap it, and drop
# it from PIDS so that nothing here signals its number again (the kernel may reuse it). Only a
# child this shell still sees running is signalled: one that already exited is only reaped.
stop_pid() {
  local pid="$1" p kept=() deadline=$((SECONDS + 10))
  if jobs -pr | grep -qx "$pid"; then
    kill "$pid" 2>/dev/null || true
    while jobs -pr | grep -qx "$pid"; do
      if [ "$SECONDS" -ge "$deadline" ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
      sleep 0.05
    done
  fi
  wait "$pid" 2>/dev/null || true
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || kept+=("$p"); done
  PIDS=("${kept[@]+"${kept[@]}"}")
}

# runq_wait PID: seconds the process has spent runnable but waiting for a CPU (all its threads,
# /proc/PID/task/*/schedstat): how much other processes on its CPU held it back. Shell builtins
# only (no process started), so that polling it costs the measured CPUs next to nothing.
runq_wait() {
  local f wait ns=0
  for f in /proc/"$1"/task/*/schedstat; do
    read -r _ wait _ 2>/dev/null <"$f" && ns=$(( ns + wait ))
  done
  printf '%d.%03d\n' $(( ns / 1000000000 )) $(( ns % 1000000000 / 1000000 ))
}
