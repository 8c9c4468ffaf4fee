//! More than one node: rooms, broadcasts, clients and users shared through Redis (README
//! "Cluster"; issue 11).
//!
//! A node with `cluster.redis` set runs one more thread beside its shards, the *bridge*
//! (`bridge.rs`): a current-thread tokio runtime with two Redis connections (fred), one that
//! subscribes and one that publishes and keeps presence. Shards never wait for it:
//!
//! - **Out**: when a local client, the HTTP API or a handler publishes to a room, broadcasts,
//!   or sends to a user or to a client id of another node, the shard that did it delivers
//!   locally as before and hands the same `Arc<Outgoing>` to [`Cluster::forward`], a bounded
//!   queue (in bytes, `cluster.queue_bytes`) toward the bridge. The bridge encodes each message
//!   once into its envelope (`envelope.rs`) and SPUBLISHes the queue's batch in one pipeline.
//!   Nothing waits while Redis is away: messages for other nodes are dropped and counted.
//! - **In**: the bridge decodes each envelope once into one `Arc<Outgoing>` and hands it to the
//!   shards that need it over the mesh (`ShardMsg::Cluster`), which deliver it like a message
//!   from another shard. A node skips envelopes it published itself.
//! - **Interest**: the shards tell the bridge ([`Control`]) when a room gains its first or loses
//!   its last member on a shard (the same announcement other shards get) and when a user gains
//!   or loses its last connection on a shard; the bridge keeps, per room and user, the shards
//!   that care, SSUBSCRIBEs while any does and SUNSUBSCRIBEs after. A join is confirmed
//!   (`joined-room`) once the room's channel is subscribed — the bridge acknowledges the
//!   announcement like one more shard — so every later publish from any node reaches it.
//! - **Presence** (`presence.rs`): the bridge mirrors the node's room members in Redis under
//!   keys that expire, refreshed while the node lives; `GET /api/rooms`, `GET
//!   /api/rooms/{room}` and the relay's `members` ACK read them for the other nodes.
//!
//! **Architecture invariant:** the bridge is the only code that talks to Redis, and no shard
//! ever blocks on it; the shards and the bridge share only the queues and the counters here.

pub(crate) mod bridge;
pub(crate) mod envelope;
pub(crate) mod presence;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use crate::hub::id::ClientId;
use crate::hub::outgoing::{Body, Outgoing};

/// Where a message goes across nodes.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// A room's members.
    Room(Arc<str>),
    /// Every client.
    All,
    /// One client (of another node, when going out).
    Client(ClientId),
    /// Every connection of a user.
    User(Arc<str>),
}

/// What a shard tells the bridge. Never dropped: each is a change of state the bridge must
/// mirror (at most one per room or user change, so the queue is bounded by the shards' rooms
/// and users).
#[derive(Debug)]
pub(crate) enum Control {
    /// `room` gained its first member on `shard` (`epoch` is acknowledged back with
    /// `ShardMsg::InterestAck` once the room's channel is subscribed), or lost its last
    /// (`epoch` `None`).
    Room {
        /// Room.
        room: Arc<str>,
        /// Shard.
        shard: u16,
        /// `Some` = gained, with the announcement's epoch.
        epoch: Option<u64>,
    },
    /// A connection of `user` on `shard` came (`add`) or went.
    User {
        /// User id.
        user: Arc<str>,
        /// Shard.
        shard: u16,
        /// Came or went.
        add: bool,
    },
    /// A client joined (`add`) or left `room` (presence).
    Member {
        /// Room.
        room: Arc<str>,
        /// Client.
        client: ClientId,
        /// Its user, if any.
        user: Option<Arc<str>>,
        /// Joined or left.
        add: bool,
    },
    /// A question about the other nodes; answered with `ShardMsg::Reply { id, .. }` to `shard`.
    Query {
        /// Asking shard.
        shard: u16,
        /// Correlates the reply.
        id: u64,
        /// What is asked.
        query: Query,
    },
}

/// A question the bridge answers from Redis (presence of the other live nodes).
#[derive(Debug, Clone)]
pub(crate) enum Query {
    /// Rooms and their member counts on other nodes.
    Rooms,
    /// Members (client id, user id or "") of a room on other nodes.
    Members(Arc<str>),
    /// Connections of a user on other nodes.
    UserConnections(Arc<str>),
}

/// The bridge's answer.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Rooms with member counts.
    Rooms(Vec<(String, usize)>),
    /// Members: (client id, user id or "").
    Members(Vec<(String, String)>),
    /// A count.
    Count(usize),
    /// Redis could not be asked (away, or too slow): the answer covers this node only.
    Unavailable,
}

/// A message waiting for the bridge.
pub(crate) struct Outbound {
    pub(crate) target: Target,
    pub(crate) msg: Arc<Outgoing>,
    pub(crate) cost: usize,
}

/// Why a message for other nodes was not sent.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Lost {
    /// The queue toward Redis was at `cluster.queue_bytes`.
    QueueFull,
    /// Redis was not connected.
    RedisUnavailable,
    /// Redis answered the publish with an error, or the connection dropped under it.
    PublishFailed,
    /// An envelope from Redis could not be decoded.
    BadEnvelope,
    /// A shard's inbox stayed full: an envelope from Redis could not be handed over.
    InboxFull,
    /// The bridge fell behind reading what Redis sent (the receive buffer overflowed).
    Lagged,
}

impl Lost {
    /// All reasons, in the order of the counters.
    pub(crate) const ALL: [Lost; 6] = [
        Lost::QueueFull,
        Lost::RedisUnavailable,
        Lost::PublishFailed,
        Lost::BadEnvelope,
        Lost::InboxFull,
        Lost::Lagged,
    ];
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Lost::QueueFull => "queue_full",
            Lost::RedisUnavailable => "redis_unavailable",
            Lost::PublishFailed => "publish_failed",
            Lost::BadEnvelope => "bad_envelope",
            Lost::InboxFull => "inbox_full",
            Lost::Lagged => "lagged",
        }
    }
}

/// The bridge's counters (process-wide; read by `/metrics`).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) connected: AtomicBool,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    dropped: [AtomicU64; 6],
}

/// A copy of [`Stats`] for rendering.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StatsSnapshot {
    /// Whether both Redis connections are up.
    pub(crate) connected: bool,
    /// Channels and patterns subscribed.
    pub(crate) subscriptions: u64,
    /// Envelopes published.
    pub(crate) published: u64,
    /// Envelopes received and handed to the shards.
    pub(crate) received: u64,
    /// Reconnections after a loss.
    pub(crate) reconnects: u64,
    /// Dropped, by reason label.
    pub(crate) dropped: Vec<(&'static str, u64)>,
}

impl Stats {
    /// Counts `n` dropped for `why`.
    pub(crate) fn drop(&self, why: Lost, n: u64) {
        self.dropped[why as usize].fetch_add(n, Relaxed);
    }

    /// A copy.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connected: self.connected.load(Relaxed),
            subscriptions: self.subscriptions.load(Relaxed),
            published: self.published.load(Relaxed),
            received: self.received.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            dropped: Lost::ALL
                .iter()
                .map(|d| (d.label(), self.dropped[*d as usize].load(Relaxed)))
                .collect(),
        }
    }
}

/// The shards' handle on the bridge (one per process, shared by every hub).
pub(crate) struct Cluster {
    node_id: Arc<str>,
    tag: u16,
    out: tokio::sync::mpsc::Sender<Outbound>,
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    /// Bytes in `out` (each message's cost), bounded by `queue_bytes`.
    queued: AtomicUsize,
    queue_bytes: usize,
    pub(crate) stats: Stats,
}

/// The receiving ends, for the bridge.
pub(crate) struct Receivers {
    pub(crate) out: tokio::sync::mpsc::Receiver<Outbound>,
    pub(crate) control: tokio::sync::mpsc::UnboundedReceiver<Control>,
}

/// Fixed cost charged per queued message besides its content (the queue slot, the `Arc`).
const MESSAGE_OVERHEAD: usize = 128;

impl Cluster {
    /// A handle for node `node_id`, and the bridge's ends of its queues.
    pub(crate) fn new(node_id: &str, queue_bytes: usize) -> (Arc<Cluster>, Receivers) {
        // The count bound only backs up the byte bound (every message costs at least
        // MESSAGE_OVERHEAD bytes).
        let slots = (queue_bytes / MESSAGE_OVERHEAD).clamp(1024, 1 << 20);
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(slots);
        let (control_tx, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            node_id: node_id.into(),
            tag: node_tag(node_id),
            out: out_tx,
            control: control_tx,
            queued: AtomicUsize::new(0),
            queue_bytes,
            stats: Stats::default(),
        });
        (
            cluster,
            Receivers {
                out: out_rx,
                control: control_rx,
            },
        )
    }

    /// This node's id.
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The tag client ids of this node carry.
    pub(crate) fn tag(&self) -> u16 {
        self.tag
    }

    /// Hands a message published on this node to the bridge for the other nodes. Never
    /// blocks: when Redis is away or the queue is at its bound the message is dropped for the
    /// other nodes (local delivery already happened) and counted.
    /// `target` is built only when the message is queued (no allocation for a dropped one).
    pub(crate) fn forward(&self, msg: &Arc<Outgoing>, target: impl FnOnce() -> Target) {
        if !matches!(msg.body(), Body::Event { .. } | Body::Binary { .. }) {
            return;
        }
        if !self.stats.connected.load(Relaxed) {
            self.stats.drop(Lost::RedisUnavailable, 1);
            return;
        }
        let cost = MESSAGE_OVERHEAD + msg.payload_len();
        if self.queued.fetch_add(cost, Relaxed) + cost > self.queue_bytes {
            self.queued.fetch_sub(cost, Relaxed);
            self.stats.drop(Lost::QueueFull, 1);
            return;
        }
        let item = Outbound {
            target: target(),
            msg: msg.clone(),
            cost,
        };
        if self.out.try_send(item).is_err() {
            self.queued.fetch_sub(cost, Relaxed);
            self.stats.drop(Lost::QueueFull, 1);
        }
    }

    /// The bridge took `item` off the queue.
    pub(crate) fn taken(&self, item: &Outbound) {
        self.queued.fetch_sub(item.cost, Relaxed);
    }

    /// Tells the bridge of a change (see [`Control`]).
    pub(crate) fn control(&self, c: Control) {
        // Fails only once the bridge has ended (shutdown): nothing is left to tell.
        let _ = self.control.send(c);
    }
}

/// The tag of node `id` in client ids: 16 bits of a hash of the id (FNV-1a), so a node keeps
/// its tag across restarts. Two nodes whose ids share a tag would both receive the other's
/// direct messages (and drop them: the slot's token does not match); the start-up log names
/// the tag.
pub(crate) fn node_tag(id: &str) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h ^ (h >> 16)) as u16
}

/// A random node id: 12 hex digits.
pub(crate) fn random_node_id() -> String {
    let r = crate::hub::id::random_bytes();
    r[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_spread() {
        assert_eq!(node_tag("a"), node_tag("a"));
        let tags: std::collections::HashSet<u16> =
            (0..200).map(|i| node_tag(&format!("node-{i}"))).collect();
        assert!(tags.len() > 195, "{}", tags.len());
    }

    #[test]
    fn queue_is_bounded_in_bytes_and_off_while_disconnected() {
        let (c, mut rx) = Cluster::new("n", 64 << 10);
        let msg = Outgoing::event("e", Some(bytes::Bytes::from(vec![b'1'; 10_000])));
        c.forward(&msg, || Target::All);
        assert_eq!(c.stats.snapshot().dropped[1], ("redis_unavailable", 1));
        c.stats.connected.store(true, Relaxed);
        for _ in 0..10 {
            c.forward(&msg, || Target::All);
        }
        // 64 KiB holds six 10 KB messages.
        let snap = c.stats.snapshot();
        assert_eq!(snap.dropped[0], ("queue_full", 4));
        let mut n = 0;
        while let Ok(item) = rx.out.try_recv() {
            c.taken(&item);
            n += 1;
        }
        assert_eq!(n, 6);
        assert_eq!(c.queued.load(Relaxed), 0);
        // Replies and control frames never leave the node.
        c.forward(&Outgoing::new(Body::Ping), || Target::All);
        assert!(rx.out.try_recv().is_err());
    }
}
