//! The doorbell: how any thread wakes an idle shard, at no cost while the shard is busy.
//!
//! A doorbell is a non-blocking Unix socketpair plus an `armed` flag. The shard awaits the read
//! end through glommio's `UnixStream` (glommio reads with `recv`, which an eventfd does not
//! support, so the pair is a socket). The protocol, a Dekker-style handshake:
//!
//! - the **receiver**, about to park, stores `armed = true`, issues a SeqCst fence, then looks
//!   at its queue once more; only if it is still empty does it await the read end;
//! - a **sender** first publishes its message (pushes to the queue), issues a SeqCst fence,
//!   then loads `armed`; only if it flips `armed` from true to false (a `swap`, so exactly one
//!   of many racing senders wins) does it write one byte.
//!
//! With both fences, at least one side sees the other's write: either the receiver sees the
//! message on its re-check and does not park, or the sender sees `armed` and rings. So no
//! wake-up is lost. A busy shard leaves `armed` false, and senders then pay one fence and one
//! load of a cache line nobody writes: no syscall, no contended RMW. Spurious bytes (the
//! receiver re-armed and found a message anyway) only cause one harmless extra wake-up.
//!
//! This file owns the flag and the write end; the mesh (`mesh.rs`) and shutdown
//! (`shutdown.rs`) own the queues and the read ends.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use crate::sys;

/// The sending side of one shard's doorbell. Shared (`Arc`) by every sender of that shard.
#[derive(Debug)]
pub(crate) struct Doorbell {
    /// True while the receiver is parked (or about to park) on the read end. Invariant: only
    /// the receiver sets it to true, and only a sender that swaps it to false writes a byte.
    armed: CachePadded<AtomicBool>,
    /// Bytes actually written (wake-ups paid for), for the metrics.
    rings: AtomicU64,
    write: OwnedFd,
}

impl Doorbell {
    pub(crate) fn new(write: OwnedFd) -> Self {
        Self {
            armed: CachePadded(AtomicBool::new(false)),
            rings: AtomicU64::new(0),
            write,
        }
    }

    /// Sender side, called after the message was published. Rings only if the receiver is
    /// parked; see the module doc for why the fence is needed.
    #[inline]
    pub(crate) fn notify(&self) {
        fence(Ordering::SeqCst);
        if self.armed.0.load(Ordering::Relaxed) && self.armed.0.swap(false, Ordering::AcqRel) {
            self.ring();
        }
    }

    /// Writes a byte whatever the flag says (shutdown uses this: it is rare and must wake the
    /// shard even if its mesh inbox is busy).
    pub(crate) fn ring(&self) {
        self.rings.fetch_add(1, Ordering::Relaxed);
        sys::ring(self.write.as_fd());
    }

    /// Receiver side: announce that we are about to park. The caller must re-check its queue
    /// after this returns and park only if the queue is still empty.
    #[inline]
    pub(crate) fn arm(&self) {
        self.armed.0.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
    }

    /// Receiver side: we are running again (woken, or found work on the re-check).
    #[inline]
    pub(crate) fn disarm(&self) {
        self.armed.0.store(false, Ordering::Relaxed);
    }

    /// True while the receiver is parked (armed and not yet rung).
    pub(crate) fn is_armed(&self) -> bool {
        self.armed.0.load(Ordering::Relaxed)
    }

    /// Number of bytes written so far.
    pub(crate) fn rings(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }
}

/// Keeps a hot atomic on its own cache line pair so the flag does not false-share with the
/// channel's counters (128 bytes: adjacent-line prefetch on x86).
#[derive(Debug)]
#[repr(align(128))]
struct CachePadded<T>(T);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn pair() -> (UnixStream, Doorbell) {
        let (r, w) = sys::doorbell_pair().unwrap();
        (UnixStream::from(r), Doorbell::new(w))
    }

    fn pending_bytes(r: &mut UnixStream) -> usize {
        let mut buf = [0u8; 64];
        match r.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_busy_receiver_costs_senders_no_write() {
        let (mut r, bell) = pair();
        for _ in 0..1000 {
            bell.notify();
        }
        assert_eq!(bell.rings(), 0);
        assert_eq!(pending_bytes(&mut r), 0);
    }

    #[test]
    fn an_armed_receiver_is_rung_exactly_once() {
        let (mut r, bell) = pair();
        bell.arm();
        for _ in 0..100 {
            bell.notify();
        }
        assert_eq!(bell.rings(), 1);
        assert_eq!(pending_bytes(&mut r), 1);
        // Re-arming allows the next wake-up.
        bell.arm();
        bell.notify();
        assert_eq!(pending_bytes(&mut r), 1);
    }

    #[test]
    fn disarm_suppresses_rings_and_ring_is_unconditional() {
        let (mut r, bell) = pair();
        bell.arm();
        bell.disarm();
        bell.notify();
        assert_eq!(pending_bytes(&mut r), 0);
        bell.ring();
        assert_eq!(pending_bytes(&mut r), 1);
    }
}
