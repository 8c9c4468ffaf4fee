//! Scenarios: from their parameters to the plan's connections and roles.
//!
//! | scenario | connections | roles |
//! |---|---|---|
//! | `echo` / `ack` | C | each a requester: D in flight (closed loop) or R/C per second (open loop) |
//! | `fanout` | K × N | K rooms of N members; the first P of each room publish, R/(K·P) per second each |
//! | `rooms` | K × M | every member publishes to its room, R/(K·M) per second each |
//! | `broadcast` | C | all receive; the first P broadcast, R/P per second each |
//! | `connect` | W workers | each opens and closes connections back to back, or R/W per second |
//! | `hold` | C | idle |
//!
//! Rooms are placed whole on one target (room `k` on target `k mod targets`): separate
//! servers do not share rooms. Broadcast audiences count only the connections on the same
//! target. With `--cluster` the targets are nodes of one cluster that share rooms and
//! broadcasts: member `m` of every room goes to target `m mod targets` (so the first
//! publishers of each room are on the first targets) and a broadcast reaches every other
//! connection of the part. A `mixed` run is several of these side by side, as parts of one plan.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;

use crate::plan::{interval_ns, share_of, ConnPlan, GroupPlan, Plan, PublishTo, Role, Sender};

/// A scenario and its parameters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "scenario", rename_all = "lowercase", deny_unknown_fields)]
pub enum Spec {
    /// Relay `echo` round trips (raw: echo server).
    Echo {
        /// Connections.
        #[serde(default = "d_connections_small")]
        connections: u32,
        /// In flight per connection.
        #[serde(default = "d_one")]
        depth: u32,
        /// Open-loop total rate.
        #[serde(default)]
        rate: Option<f64>,
    },
    /// ACK round trips.
    Ack {
        /// Connections.
        #[serde(default = "d_connections_small")]
        connections: u32,
        /// In flight per connection.
        #[serde(default = "d_one")]
        depth: u32,
        /// Open-loop total rate.
        #[serde(default)]
        rate: Option<f64>,
    },
    /// Room fan-out.
    Fanout {
        /// Rooms.
        #[serde(default = "d_one")]
        rooms: u32,
        /// Members per room.
        #[serde(default = "d_room_size")]
        room_size: u32,
        /// Publishers per room.
        #[serde(default = "d_one")]
        publishers: u32,
        /// Total publishes per second.
        #[serde(default = "d_fanout_rate")]
        rate: f64,
    },
    /// Many chatty rooms.
    Rooms {
        /// Rooms.
        #[serde(default = "d_rooms")]
        rooms: u32,
        /// Members per room.
        #[serde(default = "d_members")]
        members: u32,
        /// Total messages per second.
        #[serde(default)]
        rate: Option<f64>,
    },
    /// Broadcast to everyone.
    Broadcast {
        /// Connections.
        #[serde(default = "d_connections")]
        connections: u32,
        /// Publishers.
        #[serde(default = "d_one")]
        publishers: u32,
        /// Total broadcasts per second.
        #[serde(default = "d_broadcast_rate")]
        rate: f64,
    },
    /// Connection storm.
    Connect {
        /// Workers (handshakes in progress at once).
        #[serde(default = "d_concurrency")]
        concurrency: u32,
        /// Open-loop attempts per second.
        #[serde(default)]
        rate: Option<f64>,
    },
    /// Idle connections.
    Hold {
        /// Connections.
        #[serde(default = "d_connections_hold")]
        connections: u32,
    },
}

fn d_one() -> u32 {
    1
}
fn d_connections_small() -> u32 {
    10
}
fn d_connections() -> u32 {
    100
}
fn d_connections_hold() -> u32 {
    1000
}
fn d_room_size() -> u32 {
    100
}
fn d_rooms() -> u32 {
    100
}
fn d_members() -> u32 {
    10
}
fn d_concurrency() -> u32 {
    32
}
fn d_fanout_rate() -> f64 {
    1000.0
}
fn d_broadcast_rate() -> f64 {
    100.0
}

/// Why a plan could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    /// Raw servers have no rooms or ACKs.
    #[error("scenario {0} needs --target shardcast (raw WebSocket servers have no rooms or ACKs)")]
    NeedsShardcast(&'static str),
    /// Inconsistent parameters.
    #[error("{0}")]
    Invalid(String),
    /// The mix file.
    #[error("mix file {path}: {message}")]
    Mix {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Most connections one plan may hold.
pub const MAX_CONNECTIONS: u64 = 10_000_000;

impl Spec {
    /// The scenario's name.
    pub fn name(&self) -> &'static str {
        match self {
            Spec::Echo { .. } => "echo",
            Spec::Ack { .. } => "ack",
            Spec::Fanout { .. } => "fanout",
            Spec::Rooms { .. } => "rooms",
            Spec::Broadcast { .. } => "broadcast",
            Spec::Connect { .. } => "connect",
            Spec::Hold { .. } => "hold",
        }
    }

    /// Connections (or storm workers) it uses.
    pub fn connections(&self) -> u64 {
        match *self {
            Spec::Echo { connections, .. } | Spec::Ack { connections, .. } => {
                u64::from(connections)
            }
            Spec::Fanout {
                rooms, room_size, ..
            } => u64::from(rooms) * u64::from(room_size),
            Spec::Rooms { rooms, members, .. } => u64::from(rooms) * u64::from(members),
            Spec::Broadcast { connections, .. } | Spec::Hold { connections } => {
                u64::from(connections)
            }
            Spec::Connect { concurrency, .. } => u64::from(concurrency),
        }
    }

    /// The same scenario resized to about `n` connections (mixed weights).
    pub fn resized(&self, n: u64) -> Spec {
        let n32 = n.clamp(1, u64::from(u32::MAX)) as u32;
        match self.clone() {
            Spec::Echo { depth, rate, .. } => Spec::Echo {
                connections: n32,
                depth,
                rate,
            },
            Spec::Ack { depth, rate, .. } => Spec::Ack {
                connections: n32,
                depth,
                rate,
            },
            Spec::Fanout {
                room_size,
                publishers,
                rate,
                ..
            } => Spec::Fanout {
                rooms: (n32 / room_size).max(1),
                room_size,
                publishers,
                rate,
            },
            Spec::Rooms { members, rate, .. } => Spec::Rooms {
                rooms: (n32 / members).max(1),
                members,
                rate,
            },
            Spec::Broadcast {
                publishers, rate, ..
            } => Spec::Broadcast {
                connections: n32.max(2),
                publishers,
                rate,
            },
            Spec::Connect { rate, .. } => Spec::Connect {
                concurrency: n32,
                rate,
            },
            Spec::Hold { .. } => Spec::Hold { connections: n32 },
        }
    }

    /// The open-loop total rate, if any.
    pub fn intended_rate(&self) -> Option<f64> {
        match *self {
            Spec::Echo { rate, .. } | Spec::Ack { rate, .. } | Spec::Connect { rate, .. } => rate,
            Spec::Fanout { rate, .. } | Spec::Broadcast { rate, .. } => Some(rate),
            Spec::Rooms {
                rooms,
                members,
                rate,
            } => Some(rate.unwrap_or(f64::from(rooms) * f64::from(members))),
            Spec::Hold { .. } => None,
        }
    }

    /// Parameters for the report.
    pub fn parameters(&self) -> BTreeMap<String, serde_json::Value> {
        let v = match self {
            Spec::Echo {
                connections,
                depth,
                rate,
            }
            | Spec::Ack {
                connections,
                depth,
                rate,
            } => {
                json!({"connections": connections, "depth": depth, "rate": rate})
            }
            Spec::Fanout {
                rooms,
                room_size,
                publishers,
                rate,
            } => {
                json!({"rooms": rooms, "room_size": room_size, "publishers": publishers, "rate": rate})
            }
            Spec::Rooms {
                rooms,
                members,
                rate,
            } => {
                json!({"rooms": rooms, "members": members, "rate": self.intended_rate().or(*rate)})
            }
            Spec::Broadcast {
                connections,
                publishers,
                rate,
            } => {
                json!({"connections": connections, "publishers": publishers, "rate": rate})
            }
            Spec::Connect { concurrency, rate } => {
                json!({"concurrency": concurrency, "rate": rate})
            }
            Spec::Hold { connections } => json!({"connections": connections}),
        };
        match v {
            serde_json::Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
            _ => BTreeMap::new(),
        }
    }

    fn check(&self, raw: bool) -> Result<(), SpecError> {
        match self {
            Spec::Ack { .. } | Spec::Fanout { .. } | Spec::Rooms { .. } if raw => {
                return Err(SpecError::NeedsShardcast(self.name()));
            }
            Spec::Fanout {
                room_size,
                publishers,
                ..
            } if publishers > room_size => {
                return Err(SpecError::Invalid(format!(
                    "--publishers ({publishers}) cannot exceed --room-size ({room_size})"
                )));
            }
            Spec::Broadcast {
                connections,
                publishers,
                ..
            } if publishers > connections => {
                return Err(SpecError::Invalid(format!(
                    "--publishers ({publishers}) cannot exceed --connections ({connections})"
                )));
            }
            _ => {}
        }
        if self.connections() > MAX_CONNECTIONS {
            return Err(SpecError::Invalid(format!(
                "{} connections is more than this tool plans for ({MAX_CONNECTIONS})",
                self.connections()
            )));
        }
        Ok(())
    }
}

/// Options that shape every part of a plan.
#[derive(Debug, Clone, Copy)]
pub struct PlanOptions {
    /// Target URLs.
    pub targets: usize,
    /// `--messages` total, split over each part's senders.
    pub messages: Option<u64>,
    /// Raw WebSocket targets.
    pub raw: bool,
    /// The targets are nodes of one cluster: rooms and broadcasts span them, and a room's
    /// members are dealt round-robin over the targets.
    pub cluster: bool,
}

/// Builds the plan for named parts.
pub fn build_plan(parts: &[(String, Spec)], opts: PlanOptions) -> Result<Plan, SpecError> {
    let targets = opts.targets.max(1);
    let total: u64 = parts.iter().map(|(_, s)| s.connections()).sum();
    if total > MAX_CONNECTIONS {
        return Err(SpecError::Invalid(format!(
            "{total} connections is more than {MAX_CONNECTIONS}"
        )));
    }
    let mut conns: Vec<ConnPlan> = Vec::with_capacity(total as usize);
    let mut groups = Vec::new();
    for (g, (name, spec)) in parts.iter().enumerate() {
        spec.check(opts.raw)?;
        let limit_total = opts.messages.unwrap_or(u64::MAX);
        let base = conns.len() as u32;
        let next = |conns: &Vec<ConnPlan>| conns.len() as u32;
        // Room `k`'s member `m`: the room's one target, or dealt round-robin in a cluster.
        let member_target = |k: u32, m: u32| {
            if opts.cluster {
                m as usize % targets
            } else {
                k as usize % targets
            }
        };
        let raw_path = match spec {
            Spec::Broadcast { .. } => "/broadcast",
            _ => "/echo",
        };
        match *spec {
            Spec::Echo {
                connections,
                depth,
                rate,
            }
            | Spec::Ack {
                connections,
                depth,
                rate,
            } => {
                let ack = matches!(spec, Spec::Ack { .. });
                let n = u64::from(connections);
                let per = rate.map(|r| r / n as f64);
                let iv = per.map_or(0, interval_ns);
                for i in 0..n {
                    let id = next(&conns);
                    conns.push(ConnPlan {
                        id,
                        group: g,
                        target: id as usize % targets,
                        role: Role::Request {
                            ack,
                            sender: Sender {
                                interval_ns: iv,
                                phase_ns: if iv > 0 { iv * i / n } else { 0 },
                                limit: share_of(limit_total, n, i),
                                window: depth,
                                audience: 1,
                            },
                        },
                    });
                }
            }
            Spec::Fanout {
                rooms,
                room_size,
                publishers,
                rate,
            } => {
                let pubs_total = u64::from(rooms) * u64::from(publishers);
                let iv = interval_ns(rate / pubs_total as f64);
                let mut p = 0u64;
                for k in 0..rooms {
                    let room: Arc<str> = Arc::from(format!("lg-{g}-{k}"));
                    for m in 0..room_size {
                        let target = member_target(k, m);
                        let publish = (m < publishers).then(|| {
                            let s = Sender {
                                interval_ns: iv,
                                phase_ns: iv * p / pubs_total,
                                limit: share_of(limit_total, pubs_total, p),
                                window: 1,
                                audience: u64::from(room_size) - 1,
                            };
                            p += 1;
                            (PublishTo::Room(room.clone()), s)
                        });
                        conns.push(ConnPlan {
                            id: next(&conns),
                            group: g,
                            target,
                            role: Role::Member {
                                rooms: vec![room.clone()],
                                publish,
                            },
                        });
                    }
                }
            }
            Spec::Rooms {
                rooms,
                members,
                rate,
            } => {
                let n = u64::from(rooms) * u64::from(members);
                let rate = rate.unwrap_or(n as f64);
                let iv = interval_ns(rate / n as f64);
                let mut p = 0u64;
                for k in 0..rooms {
                    let room: Arc<str> = Arc::from(format!("lg-{g}-{k}"));
                    for m in 0..members {
                        let target = member_target(k, m);
                        let s = Sender {
                            interval_ns: iv,
                            phase_ns: iv * p / n,
                            limit: share_of(limit_total, n, p),
                            window: 1,
                            audience: u64::from(members) - 1,
                        };
                        p += 1;
                        conns.push(ConnPlan {
                            id: next(&conns),
                            group: g,
                            target,
                            role: Role::Member {
                                rooms: vec![room.clone()],
                                publish: Some((PublishTo::Room(room.clone()), s)),
                            },
                        });
                    }
                }
            }
            Spec::Broadcast {
                connections,
                publishers,
                rate,
            } => {
                let n = u64::from(connections);
                let iv = interval_ns(rate / f64::from(publishers));
                // Audience: the other connections of this part on the same target (in a
                // cluster: all of them).
                let on_target = |t: usize| {
                    (0..n)
                        .filter(|i| opts.cluster || (base as u64 + i) as usize % targets == t)
                        .count() as u64
                };
                for i in 0..n {
                    let id = next(&conns);
                    let target = id as usize % targets;
                    let publish = (i < u64::from(publishers)).then(|| {
                        (
                            PublishTo::Broadcast,
                            Sender {
                                interval_ns: iv,
                                phase_ns: iv * i / u64::from(publishers),
                                limit: share_of(limit_total, u64::from(publishers), i),
                                window: 1,
                                audience: on_target(target).saturating_sub(1),
                            },
                        )
                    });
                    conns.push(ConnPlan {
                        id,
                        group: g,
                        target,
                        role: Role::Member {
                            rooms: Vec::new(),
                            publish,
                        },
                    });
                }
            }
            Spec::Connect { concurrency, rate } => {
                let n = u64::from(concurrency);
                let iv = rate.map_or(0, |r| interval_ns(r / n as f64));
                for i in 0..n {
                    let id = next(&conns);
                    conns.push(ConnPlan {
                        id,
                        group: g,
                        target: id as usize % targets,
                        role: Role::Storm {
                            interval_ns: iv,
                            phase_ns: if iv > 0 { iv * i / n } else { 0 },
                            limit: share_of(limit_total, n, i),
                        },
                    });
                }
            }
            Spec::Hold { connections } => {
                for _ in 0..connections {
                    let id = next(&conns);
                    conns.push(ConnPlan {
                        id,
                        group: g,
                        target: id as usize % targets,
                        role: Role::Idle,
                    });
                }
            }
        }
        groups.push(GroupPlan {
            name: name.clone(),
            scenario: spec.name().to_string(),
            parameters: spec.parameters(),
            intended_rate: spec.intended_rate(),
            raw_path,
        });
    }
    Ok(Plan { groups, conns })
}

/// A mix file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixFile {
    /// Total connections shared out by weight (parts without a weight keep their own size).
    #[serde(default)]
    pub connections: Option<u64>,
    /// The parts.
    #[serde(rename = "part")]
    pub parts: Vec<MixPart>,
}

/// One part of a mix.
#[derive(Debug, Clone, Deserialize)]
pub struct MixPart {
    /// Name in the report [default: scenario-index].
    #[serde(default)]
    pub name: Option<String>,
    /// Share of `connections`.
    #[serde(default)]
    pub weight: Option<f64>,
    /// The scenario and its parameters.
    #[serde(flatten)]
    pub spec: Spec,
}

/// Reads a mix file into named parts.
pub fn load_mix(path: &Path) -> Result<Vec<(String, Spec)>, SpecError> {
    let shown = path.display().to_string();
    let err = |message: String| SpecError::Mix {
        path: shown.clone(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_mix(&text).map_err(|e| match e {
        SpecError::Mix { message, .. } => err(message),
        other => other,
    })
}

/// Parses mix TOML into named parts.
pub fn parse_mix(text: &str) -> Result<Vec<(String, Spec)>, SpecError> {
    let err = |message: String| SpecError::Mix {
        path: String::new(),
        message,
    };
    let mix: MixFile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
    if mix.parts.is_empty() {
        return Err(err("no [[part]] tables".into()));
    }
    let weight_sum: f64 = mix.parts.iter().filter_map(|p| p.weight).sum();
    let mut out = Vec::new();
    for (i, p) in mix.parts.iter().enumerate() {
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-{i}", p.spec.name()));
        let spec = match (p.weight, mix.connections) {
            (Some(w), Some(total)) if w > 0.0 && weight_sum > 0.0 => p
                .spec
                .resized(((total as f64) * w / weight_sum).round() as u64),
            (Some(w), _) if !(w > 0.0 && w.is_finite()) => {
                return Err(err(format!("part {name}: weight must be > 0")))
            }
            (Some(_), None) => {
                return Err(err(format!(
                    "part {name}: weight needs a top-level `connections`"
                )))
            }
            _ => p.spec.clone(),
        };
        out.push((name, spec));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> PlanOptions {
        PlanOptions {
            targets: 1,
            messages: None,
            raw: false,
            cluster: false,
        }
    }

    #[test]
    fn fanout_plan() {
        let p = build_plan(
            &[(
                "f".into(),
                Spec::Fanout {
                    rooms: 3,
                    room_size: 10,
                    publishers: 2,
                    rate: 600.0,
                },
            )],
            opts(),
        )
        .unwrap();
        assert_eq!(p.len(), 30);
        let pubs: Vec<_> = p.conns.iter().filter_map(|c| c.role.sender()).collect();
        assert_eq!(pubs.len(), 6);
        // 600/s over 6 publishers = 100/s each.
        assert!(pubs
            .iter()
            .all(|s| s.interval_ns == 10_000_000 && s.audience == 9));
        let phases: Vec<u64> = pubs.iter().map(|s| s.phase_ns).collect();
        assert!(phases.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn messages_split_and_echo_roles() {
        let p = build_plan(
            &[(
                "e".into(),
                Spec::Echo {
                    connections: 3,
                    depth: 4,
                    rate: None,
                },
            )],
            PlanOptions {
                targets: 2,
                messages: Some(10),
                raw: false,
                cluster: false,
            },
        )
        .unwrap();
        let limits: u64 = p.conns.iter().map(|c| c.role.sender().unwrap().limit).sum();
        assert_eq!(limits, 10);
        assert_eq!(p.conns[1].target, 1);
        assert!(matches!(p.conns[0].role, Role::Request { ack: false, .. }));
    }

    #[test]
    fn broadcast_audience_counts_same_target_only() {
        let p = build_plan(
            &[(
                "b".into(),
                Spec::Broadcast {
                    connections: 10,
                    publishers: 1,
                    rate: 10.0,
                },
            )],
            PlanOptions {
                targets: 2,
                messages: None,
                raw: true,
                cluster: false,
            },
        )
        .unwrap();
        assert_eq!(p.conns[0].role.sender().unwrap().audience, 4);
        assert_eq!(p.groups[0].raw_path, "/broadcast");
    }

    #[test]
    fn cluster_spreads_room_members_and_broadcast_audience_over_targets() {
        let fanout = Spec::Fanout {
            rooms: 2,
            room_size: 5,
            publishers: 1,
            rate: 10.0,
        };
        let separate = build_plan(
            &[("f".into(), fanout.clone())],
            PlanOptions {
                targets: 2,
                ..opts()
            },
        )
        .unwrap();
        // Separate servers: each room whole on one target.
        let targets: Vec<usize> = separate.conns.iter().map(|c| c.target).collect();
        assert_eq!(targets, [0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let cluster = PlanOptions {
            targets: 2,
            cluster: true,
            ..opts()
        };
        let p = build_plan(&[("f".into(), fanout)], cluster).unwrap();
        // A cluster: members dealt round-robin, every publisher (member 0) on the first target,
        // and each publish still reaches the whole room.
        let targets: Vec<usize> = p.conns.iter().map(|c| c.target).collect();
        assert_eq!(targets, [0, 1, 0, 1, 0, 0, 1, 0, 1, 0]);
        let pubs: Vec<_> = p
            .conns
            .iter()
            .filter(|c| c.role.sender().is_some())
            .collect();
        assert_eq!(pubs.len(), 2);
        assert!(pubs
            .iter()
            .all(|c| c.target == 0 && c.role.sender().unwrap().audience == 4));
        let rooms = Spec::Rooms {
            rooms: 1,
            members: 3,
            rate: None,
        };
        let p = build_plan(&[("r".into(), rooms)], cluster).unwrap();
        let targets: Vec<usize> = p.conns.iter().map(|c| c.target).collect();
        assert_eq!(targets, [0, 1, 0]);
        let broadcast = Spec::Broadcast {
            connections: 10,
            publishers: 1,
            rate: 10.0,
        };
        let p = build_plan(&[("b".into(), broadcast)], cluster).unwrap();
        assert_eq!(p.conns[0].role.sender().unwrap().audience, 9);
        assert_eq!(p.conns[1].target, 1);
    }

    #[test]
    fn raw_refuses_rooms_and_acks() {
        for s in [
            Spec::Ack {
                connections: 1,
                depth: 1,
                rate: None,
            },
            Spec::Fanout {
                rooms: 1,
                room_size: 2,
                publishers: 1,
                rate: 1.0,
            },
        ] {
            assert!(matches!(
                build_plan(
                    &[("x".into(), s)],
                    PlanOptions {
                        targets: 1,
                        messages: None,
                        raw: true,
                        cluster: false,
                    }
                ),
                Err(SpecError::NeedsShardcast(_))
            ));
        }
        assert!(matches!(
            build_plan(
                &[(
                    "x".into(),
                    Spec::Fanout {
                        rooms: 1,
                        room_size: 2,
                        publishers: 3,
                        rate: 1.0
                    }
                )],
                opts()
            ),
            Err(SpecError::Invalid(_))
        ));
    }

    #[test]
    fn mix_weights() {
        let parts = parse_mix(
            r#"
            connections = 100
            [[part]]
            name = "chat"
            scenario = "rooms"
            members = 5
            weight = 3
            [[part]]
            scenario = "echo"
            weight = 1
            depth = 2
            [[part]]
            scenario = "hold"
            connections = 7
            "#,
        )
        .unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].0, "chat");
        assert_eq!(parts[0].1.connections(), 75);
        assert_eq!(
            parts[1].1,
            Spec::Echo {
                connections: 25,
                depth: 2,
                rate: None
            }
        );
        assert_eq!(parts[2].1.connections(), 7);
        let plan = build_plan(&parts, opts()).unwrap();
        assert_eq!(plan.len(), 107);
        assert_eq!(plan.groups.len(), 3);
        assert!(parse_mix("[[part]]\nscenario = \"warp\"\n").is_err());
        assert!(parse_mix("connections = 5\n").is_err());
        assert!(parse_mix("[[part]]\nscenario = \"echo\"\nweight = 1\n").is_err());
    }
}
