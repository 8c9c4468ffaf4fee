#!/usr/bin/env python3
"""The summary of a bench/compare-peers.sh run, and the pass/fail rule of its capacity search.

    compare_peers_summary.py summary RUN_DIR [--check] [--baseline uws-native]
    compare_peers_summary.py verdict REPORT.json [--rc N] [--alive 0|1] [--p99-ms 50]

`summary` reads RUN_DIR/runs.tsv (one line per load generator run, written by the harness) and
the shardcast-loadgen reports it names, prints one table per kind of scenario with the median of
the rounds for each server, and writes RUN_DIR/summary.json. Ratios are against the baseline
server (native uWebSockets) of the same scenario, medians against medians:
- per server CPU-second: messages the load generator received (round trips, deliveries) per
  second of the server's CPU time in the measured window; a ratio > 1 means fewer CPU cycles
  per message than the baseline;
- idle share: 100 % minus the server's CPU % at a fixed open-loop load: the headroom left;
- bytes per connection (idle-N): server VmRSS growth from one warm-up connection to N open,
  over N; a ratio < 1 means less memory than the baseline;
- capacity: the highest offered rate that passed `verdict`; the limit names what was at
  (about) 100 % CPU at the first rate that failed.
`CPU wait s/lg` is the share of the run the server / the load generator spent runnable but
waiting for its CPU (schedstat): other processes on the machine held it back, so the figures of
that run (latency and capacity above all) are less reliable.

`--check` (the harness's --short mode) exits 1 when shardcast lost messages, saw errors or
failed connections, died, or delivered < 90 % of the offered deliveries in a fanout scenario,
or when any server's run did not produce a report. Other servers' losses are printed as notes.

`verdict` prints `pass (...)` or `fail: reasons (...)` on one line for one run, exit code 0 or
1: nothing lost, no errors, no failed connection, the load generator sent at (≥ 95 % of) the
offered rate, p99 latency within the bound.
"""

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

SUBJECT = "shardcast"
CHECK_FANOUT_SHARE = 0.90
SATURATED_CPU = 90.0


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def judge(report, rc=0, alive=True, p99_ms=50.0):
    """(passed, reasons, figures) for one open-loop run."""
    reasons = []
    if rc != 0:
        reasons.append(f"load generator exit code {rc}")
    if not alive:
        reasons.append("the server died")
    if report is None:
        reasons.append("no report")
        return False, reasons, {}
    r = report["results"]
    m, c, t = r["messages"], r["connections"], r["throughput"]
    if c["failed"]:
        reasons.append(f"{c['failed']} connections failed")
    if r["errors"]:
        reasons.append("errors " + ",".join(f"{k}={v}" for k, v in sorted(r["errors"].items())))
    if m["lost"]:
        reasons.append(f"lost {m['lost']} of {m['expected']}")
    intended = t.get("intended_per_s")
    if intended and t["sent_per_s"] < 0.95 * intended:
        reasons.append(f"the load generator sent {si(t['sent_per_s'])}/s of {si(intended)}/s")
    if not m["received_measured"]:
        reasons.append("nothing received")
    p99 = r["latency"]["p99_us"] / 1e3
    if p99 > p99_ms:
        reasons.append(f"p99 {p99:.1f} ms > {p99_ms:g} ms")
    server = r.get("server") or {}
    figures = {
        "p99_ms": p99,
        "server_cpu_percent": server.get("cpu_percent", math.nan),
        "loadgen_cpu_percent": r["loadgen"]["cpu_percent_of_shards"],
        "loadgen_saturated": r["loadgen"]["saturated"],
    }
    return not reasons, reasons, figures


def verdict_line(passed, reasons, fig):
    tail = ""
    if fig:
        tail = (f" (p99 {fig['p99_ms']:.1f} ms, server CPU {fig['server_cpu_percent']:.0f} %, "
                f"loadgen CPU {fig['loadgen_cpu_percent']:.0f} %)")
    return ("pass" if passed else "fail: " + "; ".join(reasons)) + tail


def si(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return f"{v:.3g}"


def med(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else None


def kind_of(name):
    if name.startswith("capacity-"):
        return "capacity"
    if name.startswith("echo-"):
        return "echo-open" if "@" in name else "echo"
    if name.startswith("fanout-"):
        return "fanout"
    if name.startswith("idle-"):
        return "idle"
    return "unknown"


def num(row, key):
    v = row.get(key, "")
    try:
        return float(v)
    except ValueError:
        return None


def cpu_waits(row):
    """The share of the run the server and the load generator spent waiting for their CPUs."""
    wall = num(row, "wall_s")
    share = lambda k: 100 * num(row, k) / wall if wall and num(row, k) is not None else None
    return {"cpu_wait_percent": share("runq_wait_s"),
            "loadgen_cpu_wait_percent": share("loadgen_runq_wait_s")}


def limit_of(step):
    """What held back a failing capacity step: the side at (about) 100 % of its CPU; failing
    that, the side whose CPU use plus CPU wait (other processes on its CPU) came to 90 %."""
    if step["loadgen_saturated"] or step["loadgen_cpu_percent"] >= SATURATED_CPU:
        return "load generator"
    if step["server_cpu_percent"] >= SATURATED_CPU:
        return "server"
    server = step["server_cpu_percent"] + (step.get("cpu_wait_percent") or 0)
    loadgen = step["loadgen_cpu_percent"] + (step.get("loadgen_cpu_wait_percent") or 0)
    if max(server, loadgen) >= SATURATED_CPU:
        who = "server" if server >= loadgen else "load generator"
        return f"{who} (its CPU shared with other processes)"
    return "neither at 90 % CPU (loss or latency came first)"


def run_figures(kind, row, report):
    """The figures of one load generator run (message and idle scenarios)."""
    f = {
        "round": int(row["round"]),
        "report": row["report"],
        "rc": int(row["rc"] or 0),
        "server_alive": row["server_alive"] == "1",
        **cpu_waits(row),
    }
    if report is None:
        return f
    r = report["results"]
    m, t, c = r["messages"], r["throughput"], r["connections"]
    server = r.get("server") or {}
    f.update({
        "lost": m["lost"],
        "errors": sum(r["errors"].values()),
        "error_kinds": r["errors"],
        "failed_connections": c["failed"],
        "established": c["established"],
        "server_cpu_percent": server.get("cpu_percent"),
        "loadgen_cpu_percent": r["loadgen"]["cpu_percent_of_shards"],
        "loadgen_saturated": r["loadgen"]["saturated"],
    })
    if kind == "idle":
        rss0, rss1 = num(row, "rss_before_kb"), num(row, "rss_after_kb")
        mem0, mem1 = num(row, "tcp_mem_before"), num(row, "tcp_mem_after")
        slab0, slab1 = num(row, "slab_before_kb"), num(row, "slab_after_kb")
        n = c["established"]
        f.update({
            "connections": n,
            "rss_before_bytes": rss0 * 1024 if rss0 is not None else None,
            "rss_after_bytes": rss1 * 1024 if rss1 is not None else None,
            "bytes_per_connection": (rss1 - rss0) * 1024 / n if n and rss0 is not None and rss1 else None,
            # Pages of TCP buffers on the whole host (both ends of every loopback connection,
            # and anything else running): 4 KiB each.
            "tcp_buffer_bytes_per_connection": (mem1 - mem0) * 4096 / n if n and mem0 is not None and mem1 is not None else None,
            # Unreclaimable slab on the whole host (socket structures of both ends, and
            # anything else the kernel allocated meanwhile).
            "kernel_slab_bytes_per_connection": (slab1 - slab0) * 1024 / n if n and slab0 is not None and slab1 else None,
            "tcp_sockets_added": (num(row, "tcp_inuse_after") or 0) - (num(row, "tcp_inuse_before") or 0),
        })
        return f
    lat = r["latency"]
    f.update({
        "received_per_s": t["received_per_s"],
        "per_server_cpu_s": server.get("messages_per_cpu_second"),
        "p50_ms": lat["p50_us"] / 1e3,
        "p99_ms": lat["p99_us"] / 1e3,
    })
    if kind == "echo-open":
        f["offered_per_s"] = t.get("intended_per_s")
        cpu = server.get("cpu_percent")
        f["idle_share_percent"] = max(0.0, 100.0 - cpu) if cpu is not None else None
    if kind == "fanout":
        audience = m["expected"] / m["sent"] if m["sent"] else report["parameters"].get("connections", 1) - 1
        offered = (t.get("intended_per_s") or 0) * audience
        f["offered_per_s"] = offered
        f["delivered_share"] = t["received_per_s"] / offered if offered else None
    return f


def capacity_figures(steps, p99_ms):
    """Capacity of one search (the runs.tsv lines of one server in one round): the highest rate
    any run passed at (the harness runs a rate again after a failure on latency alone), and the
    lowest rate above it where every run failed, with what limited that run."""
    out = {"round": int(steps[0]["round"]), "steps": []}
    best, first_fail = None, None
    for row in steps:
        rate = float(row["rate"])
        report = load(row["report"])
        passed, reasons, fig = judge(report, int(row["rc"] or 0), row["server_alive"] == "1", p99_ms)
        fig.update(cpu_waits(row))
        out["steps"].append({"offered_per_s": rate, "passed": passed, "reasons": reasons, **fig})
        if passed and (best is None or rate > best[0]):
            best = (rate, fig)
    above = [s for s in out["steps"] if not s["passed"] and (best is None or s["offered_per_s"] > best[0])]
    if above:
        # The lowest rate where every run failed; of its runs, the last (the confirmation).
        lowest = min(s["offered_per_s"] for s in above)
        first_fail = [s for s in above if s["offered_per_s"] == lowest][-1]
    out["capacity_per_s"] = best[0] if best else 0.0
    if best is None:
        # Nothing passed: the capacity is below the lowest rate tried, not zero.
        out["below_per_s"] = min(s["offered_per_s"] for s in out["steps"])
    out["server_cpu_percent_at_capacity"] = best[1]["server_cpu_percent"] if best else None
    out["first_failing_per_s"] = first_fail["offered_per_s"] if first_fail else None
    out["first_failure"] = "; ".join(first_fail["reasons"]) if first_fail else None
    if first_fail is None:
        out["limit"] = "not reached (the search ran out of steps or time)"
    elif "server_cpu_percent" not in first_fail:
        out["limit"] = "unknown (no report)"
    else:
        out["limit"] = limit_of(first_fail)
    if first_fail:
        out["server_cpu_percent_at_failure"] = first_fail["server_cpu_percent"]
        out["loadgen_cpu_percent_at_failure"] = first_fail["loadgen_cpu_percent"]
    return out


# What each kind of scenario shows, and its headline figure for the ratio.
COLUMNS = {
    "echo": [("round trips/s", "received_per_s", si), ("per server CPU-s", "per_server_cpu_s", si),
             ("server CPU", "server_cpu_percent", lambda v: f"{v:.0f} %"),
             ("p50 ms", "p50_ms", lambda v: f"{v:.2f}"), ("p99 ms", "p99_ms", lambda v: f"{v:.2f}"),
             ("loadgen CPU", "loadgen_cpu_percent", lambda v: f"{v:.0f} %")],
    "echo-open": [("offered/s", "offered_per_s", si), ("round trips/s", "received_per_s", si),
                  ("server CPU", "server_cpu_percent", lambda v: f"{v:.0f} %"),
                  ("idle share", "idle_share_percent", lambda v: f"{v:.0f} %"),
                  ("per server CPU-s", "per_server_cpu_s", si), ("p99 ms", "p99_ms", lambda v: f"{v:.2f}")],
    "fanout": [("offered/s", "offered_per_s", si), ("delivered/s", "received_per_s", si),
               ("delivered", "delivered_share", lambda v: f"{100 * v:.0f} %"),
               ("per server CPU-s", "per_server_cpu_s", si),
               ("server CPU", "server_cpu_percent", lambda v: f"{v:.0f} %"),
               ("p50 ms", "p50_ms", lambda v: f"{v:.2f}"), ("p99 ms", "p99_ms", lambda v: f"{v:.2f}")],
    "idle": [("connections", "connections", lambda v: f"{v:.0f}"),
             ("RSS before", "rss_before_bytes", lambda v: si(v) + "B"),
             ("RSS after", "rss_after_bytes", lambda v: si(v) + "B"),
             ("bytes/conn", "bytes_per_connection", lambda v: f"{v:.0f}"),
             ("host TCP buffers/conn", "tcp_buffer_bytes_per_connection", lambda v: f"{v:.0f}"),
             ("host slab/conn", "kernel_slab_bytes_per_connection", lambda v: f"{v:.0f}")],
    "capacity": [("capacity/s", "capacity_per_s", si),
                 ("server CPU there", "server_cpu_percent_at_capacity", lambda v: f"{v:.0f} %"),
                 ("first failing/s", "first_failing_per_s", si),
                 ("server CPU there", "server_cpu_percent_at_failure", lambda v: f"{v:.0f} %"),
                 ("loadgen CPU there", "loadgen_cpu_percent_at_failure", lambda v: f"{v:.0f} %")],
}
HEADLINE = {"echo": "per_server_cpu_s", "echo-open": "per_server_cpu_s", "fanout": "per_server_cpu_s",
            "idle": "bytes_per_connection", "capacity": "capacity_per_s"}
HEADLINE_NOTE = {
    "echo": "per server CPU-s, higher is better",
    "echo-open": "per server CPU-s at the same load, higher is better (idle share beside it)",
    "fanout": "deliveries per server CPU-s, higher is better",
    "idle": "bytes per connection, lower is better",
    "capacity": "capacity, higher is better",
}


def summarise(run_dir, check, baseline):
    run_dir = Path(run_dir)
    meta = {}
    meta_path = run_dir / "meta.tsv"
    if meta_path.exists():
        for line in meta_path.read_text().splitlines():
            k, _, v = line.partition("\t")
            meta[k] = v
    p99_ms = float(meta.get("p99_ms", 50))
    with open(run_dir / "runs.tsv") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    scenarios, peers = [], []
    for row in rows:
        if row["scenario"] not in scenarios:
            scenarios.append(row["scenario"])
        if row["peer"] not in peers:
            peers.append(row["peer"])
    failures, notes, out = [], [], []
    for sc in scenarios:
        kind = kind_of(sc)
        entry = {"scenario": sc, "kind": kind, "headline": HEADLINE_NOTE.get(kind), "peers": {}}
        for peer in peers:
            mine = [r for r in rows if r["scenario"] == sc and r["peer"] == peer]
            if not mine:
                continue
            if kind == "capacity":
                by_round = {}
                for r in mine:
                    by_round.setdefault(r["round"], []).append(r)
                runs = [capacity_figures(v, p99_ms) for _, v in sorted(by_round.items())]
                limits = [x["limit"] for x in runs]
                median = {k: med([x.get(k) for x in runs]) for k in
                          ("capacity_per_s", "server_cpu_percent_at_capacity", "first_failing_per_s",
                           "server_cpu_percent_at_failure", "loadgen_cpu_percent_at_failure")}
                median["limit"] = max(set(limits), key=limits.count)
                below = [x["below_per_s"] for x in runs if "below_per_s" in x]
                if len(below) * 2 > len(runs):  # most rounds found no passing rate
                    median["below_per_s"] = max(below)
                for k in ("cpu_wait_percent", "loadgen_cpu_wait_percent"):
                    median[k] = med([st.get(k) for x in runs for st in x["steps"]])
            else:
                runs = [run_figures(kind, r, load(r["report"])) for r in mine]
                keys = {k for x in runs for k, v in x.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                median = {k: med([x.get(k) for x in runs]) for k in sorted(keys - {"round", "rc"})}
                median["lost_total"] = sum(x.get("lost") or 0 for x in runs)
                median["errors_total"] = sum(x.get("errors") or 0 for x in runs)
                median["loadgen_saturated_runs"] = sum(1 for x in runs if x.get("loadgen_saturated"))
                for x in runs:
                    problems = []
                    if x["rc"] != 0 or "lost" not in x:
                        problems.append(f"no report (load generator exit code {x['rc']})")
                    if not x["server_alive"]:
                        problems.append("the server died")
                    if x.get("lost"):
                        problems.append(f"lost {x['lost']}")
                    if x.get("errors"):
                        problems.append(f"errors {x['error_kinds']}")
                    if x.get("failed_connections"):
                        problems.append(f"{x['failed_connections']} connections failed")
                    share = x.get("delivered_share")
                    if kind == "fanout" and share is not None and share < CHECK_FANOUT_SHARE:
                        problems.append(f"delivered {100 * share:.0f} % of the offered deliveries (< {100 * CHECK_FANOUT_SHARE:.0f} %)")
                    if not problems:
                        continue
                    what = f"{sc} {peer} round {x['round']}: " + "; ".join(problems)
                    if peer == SUBJECT or problems[0].startswith("no report"):
                        failures.append(what)
                    else:
                        notes.append(what)
            entry["peers"][peer] = {"rounds": len(runs), "median": median, "runs": runs}
        for v in entry["peers"].values():
            if "below_per_s" in v["median"]:
                v["median"]["capacity_per_s"] = None  # unknown, below the lowest rate tried
        base = entry["peers"].get(baseline, {}).get("median", {}).get(HEADLINE.get(kind))
        entry["vs_" + baseline] = {
            p: (v["median"].get(HEADLINE.get(kind)) / base
                if base and v["median"].get(HEADLINE.get(kind)) is not None else None)
            for p, v in entry["peers"].items() if p != baseline}
        out.append(entry)

    print_tables(out, peers, baseline, meta)
    summary = {
        "schema": "shardcast.compare-peers.summary/v1",
        "generated_unix": int(time.time()),
        "run_dir": str(run_dir),
        "meta": meta,
        "baseline": baseline,
        "peers": peers,
        "scenarios": out,
        "check": {"asked": check, "passed": not failures, "failures": failures, "notes": notes},
    }
    with open(run_dir / "summary.json", "w") as f:
        json.dump(summary, f, indent=1)
    if notes:
        print("\nnotes (other servers; not failures):")
        for n in notes:
            print("  " + n)
    if failures:
        print("\nproblems:")
        for x in failures:
            print("  " + x)
    if check:
        print("\ncheck: " + ("PASSED" if not failures else "FAILED"))
        return 0 if not failures else 1
    return 0


def print_tables(entries, peers, baseline, meta):
    rounds = meta.get("rounds", "?")
    print(f"\nmedians of {rounds} round(s); started {meta.get('started', '?')}, load average "
          f"{meta.get('loadavg_before', '?')} before, {meta.get('loadavg_after', '?')} after")
    for kind in ("echo", "echo-open", "fanout", "idle", "capacity"):
        mine = [e for e in entries if e["kind"] == kind]
        if not mine:
            continue
        cols = COLUMNS[kind]
        extra = ["lost", "CPU wait s/lg"] if kind not in ("capacity", "idle") else ["CPU wait s/lg"]
        if kind == "capacity":
            extra += ["limit"]
        head = ["scenario", "server"] + [c[0] for c in cols] + extra + [f"vs {baseline}"]
        print(f"\n{HEADLINE_NOTE[kind]}:")
        lines = [head]
        for e in mine:
            for peer in peers:
                if peer not in e["peers"]:
                    continue
                m = e["peers"][peer]["median"]
                row = [e["scenario"], peer]
                for _, key, fmt in cols:
                    v = m.get(key)
                    if key == "capacity_per_s" and "below_per_s" in m:
                        row.append("< " + si(m["below_per_s"]))  # no rate passed
                    else:
                        row.append(fmt(v) if v is not None else "-")
                if kind not in ("capacity", "idle"):
                    row.append(str(m.get("lost_total", "-")))
                w, lw = m.get("cpu_wait_percent"), m.get("loadgen_cpu_wait_percent")
                row.append(f"{w:.0f}/{lw:.0f} %" if w is not None and lw is not None else "-")
                if kind == "capacity":
                    row.append(m.get("limit", "-"))
                ratio = e.get("vs_" + baseline, {}).get(peer)
                row.append(f"{ratio:.2f}x" if ratio is not None else "")
                lines.append(row)
        widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
        for r in lines:
            print("  ".join(c.ljust(w) if i < 2 or i == len(r) - 2 and kind == "capacity" else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths))).rstrip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary")
    s.add_argument("run_dir")
    s.add_argument("--check", action="store_true")
    s.add_argument("--baseline", default="uws-native")
    v = sub.add_parser("verdict")
    v.add_argument("report")
    v.add_argument("--rc", type=int, default=0)
    v.add_argument("--alive", type=int, default=1)
    v.add_argument("--p99-ms", type=float, default=50.0)
    a = ap.parse_args()
    if a.cmd == "verdict":
        passed, reasons, fig = judge(load(a.report), a.rc, bool(a.alive), a.p99_ms)
        print(verdict_line(passed, reasons, fig))
        return 0 if passed else 1
    return summarise(a.run_dir, a.check, a.baseline)


if __name__ == "__main__":
    sys.exit(main())
