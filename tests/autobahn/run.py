#!/usr/bin/env python3
"""Autobahn TestSuite (via the PyPI package `kosoku`) against shardcast's raw `/echo` path.

Starts `shardcast serve --bench-endpoints` on a free port, runs every case (or those
given with --cases), writes the report under --outdir (kept out of git), compares each
case's verdict with tests/autobahn/expected-results.json, stops the server by PID and
exits non-zero if any case is not OK / NON-STRICT / INFORMATIONAL or differs from the
expected verdicts. A case's verdict is the one from its only run: a case that fails once
is a failure (it is run again alone afterwards, but only to print how it fares then).

Time budgets: every case gives the server a wall-clock budget, after which kosoku drops
the connection and the case fails. Most are 1 s for a few milliseconds of work; 6.x allow
0.5 s, and 12.x/13.x (1000 compressed messages of up to 128 KiB each) 30 s (kosoku cuts
the cases' own 60-480 s to 30 s). kosoku runs the Python code of every case in this one
process, and that code, not the server, is where 12.x/13.x spend their time: cases run
side by side share one core's worth of Python, so each takes longer while the run is only
about a fifth shorter (12.5.x: 27 s two at a time, 33 s one at a time). So the cheap groups run side by side (--parallelism), then the time-budgeted
groups 6, 12 and 13 one at a time (--timed-parallelism). Measured on 2 cores against the
debug binary while other builds ran: two at a time, 12.x cases took up to 21 s of their
30 s (run: 217 s); one at a time, at most 7.6 s (run: 240 s; 167 s on a quieter machine).

Known defect of kosoku 0.1.0: every case of groups 12 and 13 ERRORs whatever the server
does, because kosoku hands the old case code (`case12_x_x.py`, `onMessage`) a `str` where
that code hashes bytes. We wrap `onMessage` of every class in `Case12_X_X` and
`Case13_X_X` to encode a `str` message (latin-1 when binary, UTF-8 when text) first.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import kosoku
import kosoku.cases  # puts the case modules on sys.path
from kosoku import _report

import case12_x_x  # noqa: E402  (the module kosoku loads the 12.x/13.x classes from)

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
HERE = Path(__file__).resolve().parent
# The groups whose budget is tight for the work they do (see the module doc).
TIMED = ["6.*", "12.*", "13.*"]


def patch_kosoku_case12() -> None:
    def wrap(orig):
        def on_message(self, msg, binary):
            if isinstance(msg, str):
                msg = msg.encode("latin-1" if binary else "utf-8")
            return orig(self, msg, binary)

        return on_message

    for cls in list(case12_x_x.Case12_X_X) + list(case12_x_x.Case13_X_X):
        if not getattr(cls.onMessage, "_shardcast_wrapped", False):
            wrapped = wrap(cls.onMessage)
            wrapped._shardcast_wrapped = True
            cls.onMessage = wrapped


def start_server(binary: str, shards: int) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [binary, "serve", "--host", "127.0.0.1", "--port", "0", "--tcp-port", "0",
         "--shards", str(shards), "--bench-endpoints",
         # Section 9 sends messages of up to 16 MiB; the default limit is stelar's 10 MiB.
         "--max-frame-size", str(64 << 20), "--max-message-size", str(64 << 20)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode} before listening")
            continue
        m = re.search(r"ws=([0-9.]+):(\d+)", line)
        if m:
            # Keep draining the server's output so it never blocks on a full pipe.
            def drain(stream=proc.stdout):
                for _ in stream:
                    pass
            import threading
            threading.Thread(target=drain, daemon=True).start()
            return proc, int(m.group(2))
    proc.kill()
    raise SystemExit("server did not print its ports within 30 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_cases(url: str, cases, exclude, parallelism: int):
    try:
        return await kosoku.run_fuzzingclient(url, cases, exclude, concurrency=parallelism)
    except kosoku.FailureError as e:  # results of a run with failures (all of them)
        return e.results


def case_key(case_id: str) -> list[int]:
    return [int(x) for x in case_id.split(".")]


def passed(r) -> bool:
    return r.behavior.value in PASSING and r.behavior_close.value in PASSING


def run_phases(url: str, args) -> list:
    """The selection in two phases: all but TIMED side by side, then the rest (TIMED, less
    whatever the user excluded) at --timed-parallelism. Each case runs once."""
    exclude = args.exclude or []
    results = []
    phases = [("side by side", TIMED, args.parallelism),
              ("time-budgeted", None, args.timed_parallelism)]
    for name, skip, parallelism in phases:
        # The second phase runs what the first did not: everything selected, less the cases
        # already run (by id), so no case runs twice and none is left out.
        skip = skip if skip is not None else [r.case_id for r in results]
        t = time.monotonic()
        got = asyncio.run(run_cases(url, args.cases, skip + exclude, parallelism))
        took = time.monotonic() - t
        slowest = sorted(got, key=lambda r: r.duration, reverse=True)[:3]
        print(f"phase {name} (parallelism {parallelism}): {len(got)} cases in {took:.0f}s"
              + ("; slowest " + ", ".join(f"{r.case_id} {r.duration / 1000:.1f}s" for r in slowest)
                 if slowest else ""), flush=True)
        results += got
    results.sort(key=lambda r: case_key(r.case_id))
    return results


def diagnose(url: str, failed: list) -> None:
    """Runs failed cases again, alone, and prints how they fare: diagnosis only (a case that
    passes now is still a failure; it says the failure may depend on timing or load)."""
    ids = [r.case_id for r in failed]
    print(f"diagnosis: running {len(ids)} failed case(s) again, alone (the first verdict stands)")
    again = {r.case_id: r for r in asyncio.run(run_cases(url, ids, None, 1))}
    for r in failed:
        a = again.get(r.case_id)
        now = f"{a.behavior.value}/{a.behavior_close.value} in {a.duration / 1000:.1f}s" if a else "not run"
        print(f"  {r.case_id}: {r.behavior.value}/{r.behavior_close.value} in {r.duration / 1000:.1f}s "
              f"({r.result}; {r.result_close}); alone: {now}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True, help="path to the shardcast binary")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--cases", action="append", help="case id or glob (repeatable); default all")
    ap.add_argument("--exclude", action="append")
    ap.add_argument("--parallelism", type=int, default=3,
                    help="cases at once, for every group but 6, 12 and 13")
    ap.add_argument("--timed-parallelism", type=int, default=1,
                    help="cases at once for the time-budgeted groups 6, 12 and 13 (run last)")
    ap.add_argument("--no-diagnosis", action="store_true",
                    help="do not run failed cases again (alone) to print how they fare")
    ap.add_argument("--outdir", default="target/autobahn")
    ap.add_argument("--expected", default=str(HERE / "expected-results.json"))
    ap.add_argument("--update-expected", action="store_true",
                    help="write this run's verdicts as the new expected results")
    args = ap.parse_args()

    patch_kosoku_case12()
    proc, port = start_server(args.server, args.shards)
    t0 = time.monotonic()
    url = f"ws://127.0.0.1:{port}/echo"
    try:
        results = run_phases(url, args)
        failed = [r for r in results if not passed(r)]
        if failed and not args.no_diagnosis:
            diagnose(url, failed)
    finally:
        stop_server(proc)
    elapsed = time.monotonic() - t0

    _report.write_reports(results, args.outdir)
    verdicts = {r.case_id: {"behavior": r.behavior.value, "behaviorClose": r.behavior_close.value}
                for r in results}
    counts: dict[str, int] = {}
    bad = []
    for r in results:
        b, c = r.behavior.value, r.behavior_close.value
        counts[b] = counts.get(b, 0) + 1
        if not passed(r):
            bad.append(f"{r.case_id}: {b} / close {c}: {r.result} {r.result_close}")

    print(f"autobahn: {len(results)} cases in {elapsed:.0f}s: " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"report: {args.outdir}/index.html")

    diffs = []
    expected_path = Path(args.expected)
    if args.update_expected:
        expected_path.write_text(json.dumps(verdicts, indent=2, sort_keys=True) + "\n")
        print(f"wrote {expected_path}")
    elif expected_path.exists() and not args.cases and not args.exclude:
        expected = json.loads(expected_path.read_text())
        for case_id in sorted(set(expected) | set(verdicts), key=case_key):
            if expected.get(case_id) != verdicts.get(case_id):
                diffs.append(f"{case_id}: expected {expected.get(case_id)}, got {verdicts.get(case_id)}")
    for line in bad:
        print("FAILED", line)
    for line in diffs:
        print("CHANGED", line)
    return 1 if bad or diffs else 0


if __name__ == "__main__":
    sys.exit(main())
