//! The plan: every connection of the run, its group, target and role, computed the same
//! way in every process from the command line, so worker processes (`--procs`) agree on
//! who is in which room and who publishes, and each instantiates only its own share.
//!
//! Connection `i` belongs to process `i % procs`, and within it to shard
//! `(i / procs) % shards`. Publishers' first sends are spread over one send interval
//! (`phase_ns`) so that a thousand publishers at 1 msg/s do not all fire in the same
//! millisecond.

use std::sync::Arc;

/// Where a publisher sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishTo {
    /// `publish` to this room.
    Room(Arc<str>),
    /// `broadcast` to everyone.
    Broadcast,
}

/// A connection that sends measured messages on a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Nanoseconds between sends; 0 = closed loop (send when a reply frees the window).
    pub interval_ns: u64,
    /// Offset of the first send after the start, ns.
    pub phase_ns: u64,
    /// Most messages this connection sends (`--messages` share; `u64::MAX` = unbounded).
    pub limit: u64,
    /// Closed loop: messages in flight at once.
    pub window: u32,
    /// Receivers each message should reach (1 for echo/ack).
    pub audience: u64,
}

/// What a connection does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Request/response: relay `echo` (or raw echo), or the `echo` ACK when `ack`.
    Request {
        /// Use the ACK mechanism.
        ack: bool,
        /// The schedule.
        sender: Sender,
    },
    /// A room member (fan-out, rooms) or broadcast participant: joins `rooms`, receives
    /// deliveries, and publishes if `publish` is set.
    Member {
        /// Rooms to join (and have confirmed) before the start.
        rooms: Vec<Arc<str>>,
        /// Publishing, if this member publishes.
        publish: Option<(PublishTo, Sender)>,
    },
    /// Connects and stays idle, answering pings (hold).
    Idle,
    /// Opens and closes connections in a loop (connect storm): one storm worker.
    Storm {
        /// Nanoseconds between attempts for this worker; 0 = back to back.
        interval_ns: u64,
        /// Offset of the first attempt.
        phase_ns: u64,
        /// Most attempts.
        limit: u64,
    },
}

impl Role {
    /// The sender schedule, if the role sends measured messages.
    pub fn sender(&self) -> Option<&Sender> {
        match self {
            Role::Request { sender, .. } => Some(sender),
            Role::Member {
                publish: Some((_, s)),
                ..
            } => Some(s),
            _ => None,
        }
    }
}

/// One connection of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnPlan {
    /// Global index (also its publisher id in stamps).
    pub id: u32,
    /// Group (part of a mixed run; 0 otherwise).
    pub group: usize,
    /// Index into the target URL list.
    pub target: usize,
    /// What it does.
    pub role: Role,
}

/// A group of connections running one scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// Name (the scenario, or the mixed part's name).
    pub name: String,
    /// Scenario kind.
    pub scenario: String,
    /// Parameters, for the report.
    pub parameters: std::collections::BTreeMap<String, serde_json::Value>,
    /// Open-loop total rate asked for, msgs/s.
    pub intended_rate: Option<f64>,
    /// Requests/publishes use the raw WebSocket dialect's default path `/broadcast`.
    pub raw_path: &'static str,
}

/// The whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Groups.
    pub groups: Vec<GroupPlan>,
    /// Every connection.
    pub conns: Vec<ConnPlan>,
}

impl Plan {
    /// The connections process `proc_index` of `procs` runs on shard `shard` of `shards`.
    pub fn share(
        &self,
        proc_index: usize,
        procs: usize,
        shard: usize,
        shards: usize,
    ) -> Vec<ConnPlan> {
        let procs = procs.max(1);
        let shards = shards.max(1);
        self.conns
            .iter()
            .filter(|c| {
                let i = c.id as usize;
                i % procs == proc_index && (i / procs) % shards == shard
            })
            .cloned()
            .collect()
    }

    /// Connections in the plan.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether the plan has no connections.
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}

/// `1e9 / rate` ns, 0 for no rate.
pub fn interval_ns(rate_per_s: f64) -> u64 {
    if rate_per_s > 0.0 && rate_per_s.is_finite() {
        (1e9 / rate_per_s).max(1.0) as u64
    } else {
        0
    }
}

/// Splits `total` (u64::MAX = unbounded) over `n` senders: sender `i`'s share.
pub fn share_of(total: u64, n: u64, i: u64) -> u64 {
    if total == u64::MAX || n == 0 {
        return u64::MAX;
    }
    total / n + u64::from(i < total % n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: u32) -> Plan {
        Plan {
            groups: vec![],
            conns: (0..n)
                .map(|id| ConnPlan {
                    id,
                    group: 0,
                    target: 0,
                    role: Role::Idle,
                })
                .collect(),
        }
    }

    #[test]
    fn shares_partition_the_plan() {
        let p = plan(103);
        let mut seen = vec![0u32; 103];
        for proc_i in 0..3 {
            for shard in 0..2 {
                for c in p.share(proc_i, 3, shard, 2) {
                    seen[c.id as usize] += 1;
                }
            }
        }
        assert!(seen.iter().all(|&n| n == 1));
        // Balanced within one.
        let sizes: Vec<usize> = (0..3).map(|i| p.share(i, 3, 0, 1).len()).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
    }

    #[test]
    fn message_shares_sum_to_total() {
        for total in [0u64, 1, 7, 100, 1001] {
            let sum: u64 = (0..7).map(|i| share_of(total, 7, i)).sum();
            assert_eq!(sum, total);
        }
        assert_eq!(share_of(u64::MAX, 3, 0), u64::MAX);
        assert_eq!(interval_ns(1000.0), 1_000_000);
        assert_eq!(interval_ns(0.0), 0);
    }
}
