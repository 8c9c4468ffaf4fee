//! `compare A.json B.json …`: reports side by side, each against the first (the baseline),
//! with ratios, and regressions beyond `--threshold` percent marked; the exit code is 1
//! when any report regressed, so CI can gate on it.
//!
//! Direction matters: throughput falling, latency or memory rising, and loss or errors
//! appearing are regressions; the opposite are improvements (marked `+`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::CompareArgs;
use crate::report::{dur_us, si, Report};

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (throughput).
    Higher,
    /// Smaller is better (latency, loss).
    Lower,
}

/// One compared figure.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Row name.
    pub name: &'static str,
    /// Direction.
    pub better: Better,
    /// Unit kind for printing.
    pub unit: Unit,
    /// Reads the figure (None when absent).
    pub get: fn(&Report) -> Option<f64>,
}

/// How to print a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Per second.
    Rate,
    /// Microseconds.
    Micros,
    /// A count.
    Count,
    /// Bytes.
    Bytes,
}

fn nonzero(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

/// The figures compared, in order.
pub const METRICS: &[Metric] = &[
    Metric {
        name: "received/s",
        better: Better::Higher,
        unit: Unit::Rate,
        get: |r| nonzero(r.results.throughput.received_per_s),
    },
    Metric {
        name: "sent/s",
        better: Better::Higher,
        unit: Unit::Rate,
        get: |r| nonzero(r.results.throughput.sent_per_s),
    },
    Metric {
        name: "latency p50",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.p50_us),
    },
    Metric {
        name: "latency p90",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.p90_us),
    },
    Metric {
        name: "latency p99",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.p99_us),
    },
    Metric {
        name: "latency p99.9",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.p99_9_us),
    },
    Metric {
        name: "latency p99.99",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.p99_99_us),
    },
    Metric {
        name: "latency max",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| lat(r, |l| l.max_us),
    },
    Metric {
        name: "handshakes/s",
        better: Better::Higher,
        unit: Unit::Rate,
        get: |r| nonzero(r.results.throughput.handshakes_per_s),
    },
    Metric {
        name: "handshake p99",
        better: Better::Lower,
        unit: Unit::Micros,
        get: |r| (r.results.handshake.count > 0).then_some(r.results.handshake.p99_us),
    },
    Metric {
        name: "lost",
        better: Better::Lower,
        unit: Unit::Count,
        get: |r| Some(r.results.messages.lost as f64),
    },
    Metric {
        name: "errors",
        better: Better::Lower,
        unit: Unit::Count,
        get: |r| Some(r.results.errors.values().sum::<u64>() as f64),
    },
    Metric {
        name: "msgs/server CPU-s",
        better: Better::Higher,
        unit: Unit::Rate,
        get: |r| {
            r.results
                .server
                .as_ref()
                .and_then(|s| nonzero(s.messages_per_cpu_second))
        },
    },
    Metric {
        name: "server RSS/conn",
        better: Better::Lower,
        unit: Unit::Bytes,
        get: |r| {
            r.results
                .server
                .as_ref()
                .and_then(|s| s.rss_per_connection_bytes)
        },
    },
    Metric {
        name: "loadgen RSS/conn",
        better: Better::Lower,
        unit: Unit::Bytes,
        get: |r| r.results.loadgen.rss_per_connection_bytes,
    },
];

fn lat(r: &Report, f: fn(&crate::report::LatencySummary) -> f64) -> Option<f64> {
    (r.results.latency.count > 0).then(|| f(&r.results.latency))
}

fn show(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate => format!("{}/s", si(v)),
        Unit::Micros => dur_us(v),
        Unit::Count => si(v),
        Unit::Bytes => format!("{}B", si(v)),
    }
}

/// The verdict on one figure against its baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the threshold.
    Same,
    /// Better beyond the threshold.
    Improved,
    /// Worse beyond the threshold.
    Regressed,
}

/// Judges `value` against `base` for a metric with `threshold` (fraction, e.g. 0.05).
pub fn judge(m: &Metric, base: f64, value: f64, threshold: f64) -> Verdict {
    if m.unit == Unit::Count {
        // Counts (loss, errors): any appearance matters, a small wobble around zero doesn't.
        let worse = value > base * (1.0 + threshold) && value - base >= 1.0;
        let better = value < base * (1.0 - threshold) && base - value >= 1.0;
        return match (worse, better) {
            (true, _) => Verdict::Regressed,
            (_, true) => Verdict::Improved,
            _ => Verdict::Same,
        };
    }
    if base <= 0.0 {
        return Verdict::Same;
    }
    let ratio = value / base;
    let (worse, better) = match m.better {
        Better::Higher => (ratio < 1.0 - threshold, ratio > 1.0 + threshold),
        Better::Lower => (ratio > 1.0 + threshold, ratio < 1.0 - threshold),
    };
    match (worse, better) {
        (true, _) => Verdict::Regressed,
        (_, true) => Verdict::Improved,
        _ => Verdict::Same,
    }
}

/// The side-by-side table and the regressions found.
pub fn compare(reports: &[(String, Report)], threshold_pct: f64) -> (String, Vec<String>) {
    let t = threshold_pct / 100.0;
    let mut out = String::new();
    let mut regressions = Vec::new();
    let Some((_, base)) = reports.first() else {
        return (out, regressions);
    };
    let col = 26;
    for (name, r) in reports {
        let _ = writeln!(out, "{name}: {} ({})", r.label, r.scenario);
    }
    let _ = write!(out, "{:<20}", "");
    for (name, _) in reports {
        let short: String = name.chars().take(col - 2).collect();
        let _ = write!(out, "{short:<col$}");
    }
    out.push('\n');
    let scenarios: Vec<&str> = reports.iter().map(|(_, r)| r.scenario.as_str()).collect();
    for m in METRICS {
        let values: Vec<Option<f64>> = reports.iter().map(|(_, r)| (m.get)(r)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "{:<20}", m.name);
        let b = values[0];
        for (i, v) in values.iter().enumerate() {
            let cell = match (i, v, b) {
                (_, None, _) => "-".to_string(),
                (0, Some(v), _) => show(*v, m.unit),
                (_, Some(v), Some(b)) => {
                    let verdict = judge(m, b, *v, t);
                    let mark = match verdict {
                        Verdict::Same => "",
                        Verdict::Improved => " +",
                        Verdict::Regressed => " REGRESSED",
                    };
                    if verdict == Verdict::Regressed {
                        regressions.push(format!(
                            "{}: {} {} → {}",
                            reports[i].0,
                            m.name,
                            show(b, m.unit),
                            show(*v, m.unit)
                        ));
                    }
                    if b > 0.0 {
                        format!("{} ({:.2}x){mark}", show(*v, m.unit), v / b)
                    } else {
                        format!("{}{mark}", show(*v, m.unit))
                    }
                }
                (_, Some(v), None) => show(*v, m.unit),
            };
            let _ = write!(out, "{cell:<col$}");
        }
        out.push('\n');
    }
    if scenarios.iter().any(|s| *s != scenarios[0]) {
        let _ = writeln!(
            out,
            "note: the reports are of different scenarios ({})",
            scenarios.join(", ")
        );
    }
    let saturated: Vec<&str> = reports
        .iter()
        .filter(|(_, r)| r.results.loadgen.saturated)
        .map(|(n, _)| n.as_str())
        .collect();
    if !saturated.is_empty() {
        let _ = writeln!(
            out,
            "note: the load generator was saturated in {}",
            saturated.join(", ")
        );
    }
    let _ = base;
    (out, regressions)
}

/// Runs `compare`.
pub fn run(args: &CompareArgs) -> anyhow::Result<ExitCode> {
    let mut reports = Vec::new();
    for p in &args.reports {
        reports.push((short_name(p), Report::load(p)?));
    }
    let (table, regressions) = compare(&reports, args.threshold);
    print!("{table}");
    if regressions.is_empty() {
        println!("no regression beyond {}%", args.threshold);
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "{} regression(s) beyond {}%:",
            regressions.len(),
            args.threshold
        );
        for r in &regressions {
            println!("  {r}");
        }
        Ok(ExitCode::from(1))
    }
}

fn short_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str) -> &'static Metric {
        METRICS.iter().find(|m| m.name == name).unwrap()
    }

    #[test]
    fn directions() {
        let thr = m("received/s");
        assert_eq!(judge(thr, 100.0, 90.0, 0.05), Verdict::Regressed);
        assert_eq!(judge(thr, 100.0, 97.0, 0.05), Verdict::Same);
        assert_eq!(judge(thr, 100.0, 120.0, 0.05), Verdict::Improved);
        let p99 = m("latency p99");
        assert_eq!(judge(p99, 100.0, 120.0, 0.05), Verdict::Regressed);
        assert_eq!(judge(p99, 100.0, 80.0, 0.05), Verdict::Improved);
        let lost = m("lost");
        assert_eq!(judge(lost, 0.0, 1.0, 0.05), Verdict::Regressed);
        assert_eq!(judge(lost, 0.0, 0.0, 0.05), Verdict::Same);
        assert_eq!(judge(lost, 5.0, 0.0, 0.05), Verdict::Improved);
    }

    #[test]
    fn table_and_regressions() {
        let a = crate::report::tests_support::sample_report(100_000.0, 50.0);
        let b = crate::report::tests_support::sample_report(80_000.0, 50.0);
        let c = crate::report::tests_support::sample_report(100_000.0, 49.0);
        let (t, regs) = compare(
            &[("a".into(), a.clone()), ("b".into(), b), ("c".into(), c)],
            5.0,
        );
        assert!(t.contains("received/s"), "{t}");
        assert!(t.contains("REGRESSED"), "{t}");
        assert_eq!(regs.len(), 2, "{regs:?}"); // b: received/s and sent/s
        let (_, none) = compare(&[("a".into(), a.clone()), ("a2".into(), a)], 5.0);
        assert!(none.is_empty());
    }
}
