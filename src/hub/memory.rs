//! The shard's memory bounds: what a peer can make the server hold, counted in bytes, and what
//! happens at each limit.
//!
//! | what | bound | at the bound |
//! |---|---|---|
//! | one client's write queue | `limits.max_queued_bytes` of *backlog* — what is still queued after the socket took all it would — for at most `timeouts.slow_consumer_ms` | the client is disconnected as a slow consumer (WebSocket close 1008 "slow consumer", TCP ERROR), counted `slow_consumer` |
//! | all write queues of the shard | its share of `memory.output_budget` | clients are disconnected the same way, counted `output_budget`, until the shard is under 90 % of its share: first those whose socket is full, largest queue first, then the largest queues |
//! | a connection's own replies | a quarter of `limits.max_queued_bytes` | the connection is not read until its queue drains (TCP backpressure to the peer) |
//! | pongs | 16 waiting per connection (`outq::MAX_PONGS`) | a newer pong replaces the newest waiting one (RFC 6455 §5.5.3) |
//! | partly received messages of the shard (bytes received; the buffers holding them grow by doubling, so up to twice that) | its share of `memory.input_budget` | the connections holding the most are closed (1013 / TCP ERROR), counted `input_budget`, until under 90 % |
//! | one partly received message | `limits.max_message_size` (and `max_frame_size` per frame) | close 1009 / TCP ERROR |
//! | messages held for another shard's full inbox | `memory.mesh_overflow` | above half of it the shard stops reading its clients until the overflow drains; at the bound a message is dropped and counted `mesh_overflow` |
//!
//! Why backlog *after a write* and a time limit, not bytes queued: a publish burst can queue
//! more than the limit for a reader within one loop turn, before that reader's task has had
//! its turn to write. A client is only behind when the kernel would not take what it was
//! given; it is cut only when it has stayed behind for `slow_consumer_ms`. A reader that keeps
//! up is never cut; a stalled one is cut after that time, and the output budget bounds what
//! queues meanwhile.
//!
//! Each shard owns its share of the process budgets (plain `Cell`s, no atomics): the
//! budgets are split evenly between shards, as connections are.

use std::cell::Cell;

/// A byte budget: what is used of it, and its limit.
#[derive(Debug)]
pub(crate) struct Budget {
    used: Cell<usize>,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes, none used.
    pub(crate) fn new(limit: usize) -> Budget {
        Budget {
            used: Cell::new(0),
            limit,
        }
    }

    /// Bytes in use.
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    /// The limit in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Records that a holder went from `before` to `after` bytes.
    pub(crate) fn adjust(&self, before: usize, after: usize) {
        // Every holder's `before` was added earlier, so the sum cannot go negative; saturate
        // rather than wrap if that invariant were ever broken.
        self.used
            .set((self.used.get() + after).saturating_sub(before));
    }

    /// Whether `extra` more bytes would pass the limit.
    pub(crate) fn would_exceed(&self, extra: usize) -> bool {
        self.used.get().saturating_add(extra) > self.limit
    }

    /// Where relief stops: 90 % of the limit, so one cut makes room for more than one frame.
    pub(crate) fn relief_target(&self) -> usize {
        self.limit / 10 * 9
    }
}

/// The memory settings one shard applies, resolved from the configuration at start-up.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ShardLimits {
    /// This shard's share of the output budget.
    pub(crate) output: usize,
    /// This shard's share of the input budget.
    pub(crate) input: usize,
    /// Bytes of held-back mesh messages.
    pub(crate) mesh_overflow: usize,
    /// Backlog beyond which a client is behind.
    pub(crate) max_queued: usize,
    /// How long a client may stay behind, in ms.
    pub(crate) slow_consumer_ms: u64,
}

impl ShardLimits {
    /// Queue cost above which a connection's input is not read (its own replies wait).
    pub(crate) fn read_pause(&self) -> usize {
        self.max_queued / 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_tracks_holders() {
        let b = Budget::new(100);
        b.adjust(0, 60);
        b.adjust(0, 30);
        assert_eq!(b.used(), 90);
        assert!(!b.would_exceed(10));
        assert!(b.would_exceed(11));
        b.adjust(60, 0);
        assert_eq!(b.used(), 30);
        assert_eq!(b.relief_target(), 90);
    }
}
