//! What one shard records for one group of connections: HDR histograms of latency and
//! handshake time, message and byte counts, faults by kind, sequence totals and a
//! per-second timeline.
//!
//! **Windows.** The run starts at `t0` (the "go" instant shared by every shard and worker
//! process). Messages whose (intended) send time falls in `[measure_start, measure_end)`
//! are *measured*: they feed the latency histogram and the throughput figures. Earlier ones
//! are warm-up; later ones (sent during the drain) only count for loss. The timeline covers
//! everything, per second since `t0`, by receive time.
//!
//! **Latency** is `receive time − stamp time` in nanoseconds; the stamp time is the
//! intended send time in open-loop runs (coordinated omission corrected).
//!
//! [`RecorderData`] is the serialisable form (histograms as base64 HdrHistogram V2), used
//! to carry a worker process's results to its parent and merged there; the report is built
//! from merged data (`report.rs`).

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::fault::{Fault, FaultCounts};
use crate::seq::SeqTotals;

/// Largest latency recorded exactly (ns); larger values are clamped to it (and still counted).
pub const MAX_LATENCY_NS: u64 = 600_000_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// A latency histogram in ns, 1 ns to 10 min, 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    // Bounds and precision are constants within the crate's documented range.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable_histogram()))
}

/// Per-second histograms need less precision (2 digits: 1 % buckets) and a tenth of the memory.
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 2).unwrap_or_else(|_| unreachable_histogram())
}

#[cold]
fn unreachable_histogram() -> Histogram<u64> {
    // new(1) with auto-resize cannot fail: 1 is a valid precision.
    let mut h = Histogram::new(1).unwrap_or_else(|_| std::process::abort());
    h.auto(true);
    h
}

#[inline]
fn record(h: &mut Histogram<u64>, v: u64) {
    let _ = h.record(v.clamp(1, MAX_LATENCY_NS));
}

/// The time frame of a run, in ns on `CLOCK_MONOTONIC`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The "go" instant.
    pub t0: u64,
    /// End of warm-up.
    pub measure_start: u64,
    /// End of the measured window (senders stop here).
    pub measure_end: u64,
}

impl Window {
    /// Whether a message sent at `sent_ns` is measured.
    #[inline]
    pub fn measured(&self, sent_ns: u64) -> bool {
        sent_ns >= self.measure_start && sent_ns < self.measure_end
    }

    /// Measured window length in seconds.
    pub fn seconds(&self) -> f64 {
        self.measure_end.saturating_sub(self.measure_start) as f64 / NS_PER_S as f64
    }

    /// Second index since `t0`.
    #[inline]
    pub fn second(&self, t: u64) -> usize {
        (t.saturating_sub(self.t0) / NS_PER_S) as usize
    }
}

/// Counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Messages sent (all).
    pub sent: u64,
    /// Messages sent in the measured window.
    pub sent_measured: u64,
    /// Stamped messages received (all, duplicates included).
    pub received: u64,
    /// Received messages that were sent in the measured window.
    pub received_measured: u64,
    /// Deliveries the plan expects for what was sent (sent × audience).
    pub expected: u64,
    /// Bytes written to sockets.
    pub bytes_sent: u64,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Connection attempts.
    pub connect_attempts: u64,
    /// Connections that completed their handshake.
    pub connected: u64,
    /// Connections that completed setup (joins confirmed) and took part.
    pub ready: u64,
    /// Most connections open at once (per shard; summed across shards, an upper bound).
    pub peak_open: u64,
    /// Requests still unanswered when the drain ended (echo/ack), counted lost.
    pub unanswered: u64,
}

impl Counts {
    fn merge(&mut self, o: &Counts) {
        self.sent += o.sent;
        self.sent_measured += o.sent_measured;
        self.received += o.received;
        self.received_measured += o.received_measured;
        self.expected += o.expected;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.connect_attempts += o.connect_attempts;
        self.connected += o.connected;
        self.ready += o.ready;
        self.peak_open += o.peak_open;
        self.unanswered += o.unanswered;
    }
}

/// One second of the timeline.
#[derive(Debug, Clone)]
pub struct Second {
    /// Messages sent during this second.
    pub sent: u64,
    /// Messages received during this second.
    pub received: u64,
    /// Handshakes completed during this second.
    pub handshakes: u64,
    /// Faults during this second.
    pub faults: u64,
    /// Latency of messages received during this second (2 significant digits); created on
    /// the first message of the second.
    pub latency: Option<Box<Histogram<u64>>>,
}

impl Second {
    fn new() -> Second {
        Second {
            sent: 0,
            received: 0,
            handshakes: 0,
            faults: 0,
            latency: None,
        }
    }

    /// Number of latency samples.
    pub fn samples(&self) -> u64 {
        self.latency.as_ref().map_or(0, |h| h.len())
    }

    /// The latency at quantile `q` (ns), 0 without samples.
    pub fn quantile(&self, q: f64) -> u64 {
        self.latency.as_ref().map_or(0, |h| h.value_at_quantile(q))
    }
}

/// Most seconds a timeline keeps (a day); later events are folded into the last second.
const MAX_SECONDS: usize = 86_400;

/// One shard's record of one group.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The run's time frame.
    pub window: Window,
    /// Latency of measured messages (ns).
    pub latency: Histogram<u64>,
    /// Handshake time (TCP connect to upgrade done / CONNECT received), ns.
    pub handshake: Histogram<u64>,
    /// Counters.
    pub counts: Counts,
    /// Faults by kind.
    pub faults: FaultCounts,
    /// Sequence totals (added when a connection ends).
    pub seq: SeqTotals,
    /// Per-second timeline since `t0`.
    pub timeline: Vec<Second>,
}

impl Recorder {
    /// An empty record for `window`.
    pub fn new(window: Window) -> Recorder {
        Recorder {
            window,
            latency: latency_histogram(),
            handshake: latency_histogram(),
            counts: Counts::default(),
            faults: FaultCounts::default(),
            seq: SeqTotals::default(),
            timeline: Vec::new(),
        }
    }

    #[inline]
    fn second(&mut self, t: u64) -> &mut Second {
        let i = self.window.second(t).min(MAX_SECONDS - 1);
        if self.timeline.len() <= i {
            self.timeline.resize_with(i + 1, Second::new);
        }
        &mut self.timeline[i]
    }

    /// A message went out; `audience` receivers should get it.
    #[inline]
    pub fn sent(&mut self, sent_ns: u64, now: u64, audience: u64) {
        self.counts.sent += 1;
        self.counts.expected += audience;
        if self.window.measured(sent_ns) {
            self.counts.sent_measured += 1;
        }
        self.second(now).sent += 1;
    }

    /// A stamped message arrived at `now`.
    #[inline]
    pub fn received(&mut self, sent_ns: u64, now: u64) {
        let lat = now.saturating_sub(sent_ns);
        self.counts.received += 1;
        if self.window.measured(sent_ns) {
            self.counts.received_measured += 1;
            record(&mut self.latency, lat);
        }
        let s = self.second(now);
        s.received += 1;
        record(
            s.latency
                .get_or_insert_with(|| Box::new(second_histogram())),
            lat,
        );
    }

    /// A handshake completed at `now` after `took` ns.
    pub fn handshake(&mut self, took: u64, now: u64) {
        record(&mut self.handshake, took);
        self.counts.connected += 1;
        self.second(now).handshakes += 1;
    }

    /// A fault at `now`.
    pub fn fault(&mut self, f: Fault, now: u64) {
        self.faults.add(f);
        self.second(now).faults += 1;
    }

    /// Adds another shard's record of the same group (same window).
    pub fn merge(&mut self, o: &Recorder) {
        // A shard whose senders finished early (`--messages`) ends its window early: the
        // run's window ends with the last one.
        self.window.measure_end = self.window.measure_end.max(o.window.measure_end);
        let _ = self.latency.add(&o.latency);
        let _ = self.handshake.add(&o.handshake);
        self.counts.merge(&o.counts);
        self.faults.merge(&o.faults);
        self.seq.merge(&o.seq);
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize_with(o.timeline.len(), Second::new);
        }
        for (a, b) in self.timeline.iter_mut().zip(o.timeline.iter()) {
            a.sent += b.sent;
            a.received += b.received;
            a.handshakes += b.handshakes;
            a.faults += b.faults;
            if let Some(bl) = &b.latency {
                match &mut a.latency {
                    Some(al) => {
                        let _ = al.add(bl.as_ref());
                    }
                    None => a.latency = Some(bl.clone()),
                }
            }
        }
    }

    /// The serialisable form.
    pub fn to_data(&self) -> RecorderData {
        RecorderData {
            window: self.window,
            latency: encode_histogram(&self.latency),
            handshake: encode_histogram(&self.handshake),
            counts: self.counts,
            faults: self.faults.to_map(),
            seq: self.seq,
            timeline: self
                .timeline
                .iter()
                .map(|s| SecondData {
                    sent: s.sent,
                    received: s.received,
                    handshakes: s.handshakes,
                    faults: s.faults,
                    latency: s.latency.as_ref().map(|h| encode_histogram(h)),
                })
                .collect(),
        }
    }

    /// Rebuilds a record from its serialised form.
    pub fn from_data(d: &RecorderData) -> Result<Recorder, HistogramError> {
        Ok(Recorder {
            window: d.window,
            latency: decode_histogram(&d.latency)?,
            handshake: decode_histogram(&d.handshake)?,
            counts: d.counts,
            faults: FaultCounts::from_map(&d.faults),
            seq: d.seq,
            timeline: d
                .timeline
                .iter()
                .map(|s| {
                    Ok(Second {
                        sent: s.sent,
                        received: s.received,
                        handshakes: s.handshakes,
                        faults: s.faults,
                        latency: match &s.latency {
                            Some(h) => Some(Box::new(decode_histogram(h)?)),
                            None => None,
                        },
                    })
                })
                .collect::<Result<_, HistogramError>>()?,
        })
    }
}

/// A histogram that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramError {
    /// Not base64.
    #[error("histogram is not valid base64")]
    Base64,
    /// Not an HdrHistogram V2 encoding.
    #[error("histogram is not a valid HdrHistogram V2 encoding")]
    Hdr,
}

/// A histogram as base64 of its HdrHistogram V2 encoding (the format other HdrHistogram
/// tools read).
pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Serialising into a Vec cannot fail for a valid histogram.
    let _ = V2Serializer::new().serialize(h, &mut buf);
    base64::engine::general_purpose::STANDARD.encode(buf)
}

/// The inverse of [`encode_histogram`].
pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, HistogramError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|_| HistogramError::Base64)?;
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|_| HistogramError::Hdr)
}

/// Serialisable [`Second`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondData {
    /// Messages sent.
    pub sent: u64,
    /// Messages received.
    pub received: u64,
    /// Handshakes completed.
    pub handshakes: u64,
    /// Faults.
    pub faults: u64,
    /// Latency histogram (base64 V2), absent when nothing was received.
    pub latency: Option<String>,
}

/// Serialisable [`Recorder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecorderData {
    /// Time frame.
    pub window: Window,
    /// Latency histogram (base64 V2).
    pub latency: String,
    /// Handshake histogram (base64 V2).
    pub handshake: String,
    /// Counters.
    pub counts: Counts,
    /// Faults by label.
    pub faults: std::collections::BTreeMap<String, u64>,
    /// Sequence totals.
    pub seq: SeqTotals,
    /// Timeline.
    pub timeline: Vec<SecondData>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> Window {
        Window {
            t0: 10 * NS_PER_S,
            measure_start: 11 * NS_PER_S,
            measure_end: 13 * NS_PER_S,
        }
    }

    #[test]
    fn warmup_excluded_from_latency_but_in_timeline() {
        let mut r = Recorder::new(window());
        r.sent(10 * NS_PER_S + 5, 10 * NS_PER_S + 5, 1);
        r.received(10 * NS_PER_S + 5, 10 * NS_PER_S + 1_000);
        r.sent(11 * NS_PER_S, 11 * NS_PER_S, 3);
        r.received(11 * NS_PER_S, 11 * NS_PER_S + 50_000);
        assert_eq!(r.counts.sent, 2);
        assert_eq!(r.counts.sent_measured, 1);
        assert_eq!(r.counts.expected, 4);
        assert_eq!(r.counts.received, 2);
        assert_eq!(r.counts.received_measured, 1);
        assert_eq!(r.latency.len(), 1);
        assert!(r.latency.max() >= 49_900 && r.latency.max() <= 50_100);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[0].received, 1);
        assert_eq!(r.timeline[1].samples(), 1);
        assert_eq!(r.timeline[0].samples(), 1);
    }

    #[test]
    fn merge_and_data_round_trip() {
        let mut a = Recorder::new(window());
        let mut b = Recorder::new(window());
        for i in 0..100u64 {
            a.received(11 * NS_PER_S, 11 * NS_PER_S + i * 1000);
            b.received(12 * NS_PER_S, 12 * NS_PER_S + 5 * NS_PER_S / 10);
        }
        a.fault(Fault::Reset, 11 * NS_PER_S);
        b.handshake(123_000, 10 * NS_PER_S);
        a.merge(&b);
        assert_eq!(a.latency.len(), 200);
        assert_eq!(a.timeline.len(), 3);
        assert_eq!(a.faults.total(), 1);
        let d = a.to_data();
        let json = serde_json::to_string(&d).unwrap();
        let back: RecorderData = serde_json::from_str(&json).unwrap();
        let r = Recorder::from_data(&back).unwrap();
        assert_eq!(r.latency, a.latency);
        assert_eq!(r.handshake.len(), 1);
        assert_eq!(r.to_data(), d);
        assert!(matches!(
            decode_histogram("!!"),
            Err(HistogramError::Base64)
        ));
        assert!(matches!(decode_histogram("AAAA"), Err(HistogramError::Hdr)));
    }

    #[test]
    fn huge_latency_is_clamped_not_dropped() {
        let mut r = Recorder::new(window());
        r.received(11 * NS_PER_S, 11 * NS_PER_S + 700 * NS_PER_S);
        assert_eq!(r.latency.len(), 1);
        assert_eq!(
            r.latency.max(),
            r.latency.highest_equivalent(MAX_LATENCY_NS)
        );
        assert_eq!(r.timeline.len(), 702);
    }
}
