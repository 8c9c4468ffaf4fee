//! Process-wide shutdown: a handle any thread (or the signal thread, `signals.rs`) can trigger,
//! observed by every shard as an awaitable future.
//!
//! Two phases, in the order DESIGN.md "graceful shutdown" gives them:
//!
//! 1. **Draining** ([`Shutdown::trigger`]): shards stop accepting (`Listener::accept_loop`
//!    returns) and [`Shard::shutdown`](crate::Shard::shutdown) resolves; the server then closes
//!    its clients (WebSocket close 1001) and lets them drain.
//! 2. **Forced** ([`Shutdown::force`], or the drain timeout elapsing on a shard): the runtime
//!    drops the shard's main future and whatever tasks remain, and the shard thread ends.
//!
//! Cross-thread delivery: the phase is an atomic, and each shard has a dedicated doorbell
//! (separate from its mesh inbox's, so a shard whose inbox is flooded or unused still hears
//! it). A small runtime task on each shard awaits that doorbell and turns the phase into two
//! shard-local events (`event.rs`) that local tasks await. This file owns the handle, the
//! phase and that task; the runtime (`runtime.rs`) wires it to the shards.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::AsyncReadExt;

use crate::doorbell::Doorbell;
use crate::event::{LocalEvent, Wait};

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;
const FORCED: u8 = 2;

/// Where a process is in its shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving normally.
    Running,
    /// Stop accepting, close clients, drain.
    Draining,
    /// Stop now: shards drop their remaining work.
    Forced,
}

#[derive(Debug)]
pub(crate) struct Inner {
    phase: AtomicU8,
    bells: Box<[Arc<Doorbell>]>,
}

/// The process-wide shutdown handle: `Clone + Send + Sync`, triggerable from any thread.
#[derive(Debug, Clone)]
pub struct Shutdown {
    pub(crate) inner: Arc<Inner>,
}

impl Shutdown {
    pub(crate) fn new(bells: Box<[Arc<Doorbell>]>) -> Self {
        Self {
            inner: Arc::new(Inner {
                phase: AtomicU8::new(RUNNING),
                bells,
            }),
        }
    }

    /// Begins a graceful shutdown (phase 1). Idempotent; returns `true` for the call that
    /// started it.
    pub fn trigger(&self) -> bool {
        let started = self
            .inner
            .phase
            .compare_exchange(RUNNING, DRAINING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if started {
            self.ring_all();
        }
        started
    }

    /// Forces the end now (phase 2), whether or not a graceful shutdown was triggered: every
    /// shard drops its main future and remaining tasks. Idempotent.
    pub fn force(&self) {
        if self.inner.phase.swap(FORCED, Ordering::AcqRel) != FORCED {
            self.ring_all();
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        phase_of(self.inner.phase.load(Ordering::Acquire))
    }

    /// True once [`Shutdown::trigger`] or [`Shutdown::force`] was called.
    pub fn is_triggered(&self) -> bool {
        self.phase() != Phase::Running
    }

    fn ring_all(&self) {
        for bell in self.inner.bells.iter() {
            bell.ring();
        }
    }
}

fn phase_of(raw: u8) -> Phase {
    match raw {
        RUNNING => Phase::Running,
        DRAINING => Phase::Draining,
        _ => Phase::Forced,
    }
}

/// One shard's view of shutdown: the local events its tasks await.
#[derive(Debug)]
pub(crate) struct ShardShutdown {
    draining: Rc<LocalEvent>,
    forced: Rc<LocalEvent>,
    /// True if the shard was forced by its own drain deadline (not by `Shutdown::force`).
    timed_out: std::cell::Cell<bool>,
}

impl ShardShutdown {
    pub(crate) fn new() -> Rc<Self> {
        Rc::new(Self {
            draining: LocalEvent::new(),
            forced: LocalEvent::new(),
            timed_out: std::cell::Cell::new(false),
        })
    }

    /// Resolves when phase 1 begins (or phase 2, which implies it).
    pub(crate) fn draining(&self) -> Wait {
        self.draining.wait()
    }

    /// Resolves when the shard must stop now.
    pub(crate) fn forced(&self) -> Wait {
        self.forced.wait()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_set()
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.get()
    }

    #[cfg(test)]
    pub(crate) fn set_draining_for_test(&self) {
        self.draining.set();
    }

    fn observe(self: &Rc<Self>, phase: Phase, drain_timeout: Duration) {
        if phase >= Phase::Draining && !self.draining.is_set() {
            self.draining.set();
            // Arm this shard's drain deadline once.
            let this = Rc::clone(self);
            glommio::spawn_local(async move {
                glommio::timer::sleep(drain_timeout).await;
                if !this.forced.is_set() {
                    this.timed_out.set(true);
                    tracing::warn!(
                        ?drain_timeout,
                        "drain timeout elapsed: forcing shard to stop"
                    );
                }
                this.forced.set();
            })
            .detach();
        }
        if phase == Phase::Forced {
            self.draining.set();
            self.forced.set();
        }
    }
}

/// The per-shard task that turns doorbell rings into local events. Runs until the shard is
/// forced (or its executor ends). `bell_read` is the read end of this shard's shutdown
/// doorbell.
pub(crate) async fn watch(
    handle: Shutdown,
    local: Rc<ShardShutdown>,
    bell_read: OwnedFd,
    drain_timeout: Duration,
) {
    // A task serving sockets may wait on the shard's ring: a ring of the doorbell ends it.
    crate::uring::watch(bell_read.as_raw_fd());
    // SAFETY: `bell_read` is an open socket we own; ownership moves into the stream.
    let mut bell = unsafe { glommio::net::UnixStream::from_raw_fd(bell_read.into_raw_fd()) };
    let mut buf = [0u8; 64];
    loop {
        // Check before awaiting: a trigger that happened before this task started rang the
        // bell too, but reading the phase first makes start-up races irrelevant.
        let phase = handle.phase();
        local.observe(phase, drain_timeout);
        if phase == Phase::Forced {
            return;
        }
        match bell.read(&mut buf).await {
            Ok(n) if n > 0 => {}
            // EOF or error cannot happen while `handle` keeps the write end open; if it did,
            // fall back to polling the phase so shutdown is still observed, without spinning.
            _ => glommio::timer::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;

    #[test]
    fn phases_only_move_forward() {
        let (_r, w) = sys::doorbell_pair().unwrap();
        let s = Shutdown::new(vec![Arc::new(Doorbell::new(w))].into_boxed_slice());
        assert_eq!(s.phase(), Phase::Running);
        assert!(!s.is_triggered());
        assert!(s.trigger());
        assert!(!s.trigger());
        assert_eq!(s.phase(), Phase::Draining);
        s.force();
        assert_eq!(s.phase(), Phase::Forced);
        assert!(!s.trigger());
        assert_eq!(s.phase(), Phase::Forced);
    }

    #[test]
    fn a_shard_observes_trigger_then_forces_itself_after_the_drain_timeout() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        ex.run(async {
            let (r, w) = sys::doorbell_pair().unwrap();
            let handle = Shutdown::new(vec![Arc::new(Doorbell::new(w))].into_boxed_slice());
            let local = ShardShutdown::new();
            glommio::spawn_local(watch(
                handle.clone(),
                Rc::clone(&local),
                r,
                Duration::from_millis(20),
            ))
            .detach();
            futures_lite::future::yield_now().await;
            assert!(!local.is_draining());
            // Trigger from another thread, as a signal thread would.
            let h = handle.clone();
            std::thread::spawn(move || h.trigger()).join().unwrap();
            local.draining().await;
            assert!(local.is_draining());
            let started = std::time::Instant::now();
            local.forced().await;
            assert!(started.elapsed() >= Duration::from_millis(15));
            assert!(local.timed_out());
        });
    }

    #[test]
    fn force_is_observed_immediately() {
        let ex = glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap();
        ex.run(async {
            let (r, w) = sys::doorbell_pair().unwrap();
            let handle = Shutdown::new(vec![Arc::new(Doorbell::new(w))].into_boxed_slice());
            let local = ShardShutdown::new();
            let watcher = glommio::spawn_local(watch(
                handle.clone(),
                Rc::clone(&local),
                r,
                Duration::from_secs(3600),
            ));
            handle.force();
            local.forced().await;
            assert!(local.is_draining());
            assert!(!local.timed_out());
            watcher.await;
        });
    }
}
