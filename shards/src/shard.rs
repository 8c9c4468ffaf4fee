//! [`Shard<M>`]: what a shard's code sees of the runtime, handed to the closure given to
//! `Builder::start` once per shard, on that shard's thread.
//!
//! Everything here is shard-local (`Rc`, not `Send`): identity (id, count), spawning local
//! tasks, this shard's listeners, its mesh handle and inbox, a timer wheel, and the shutdown
//! futures. Shard state belongs to the caller as plain data owned by the shard (STYLE.md: no
//! `Arc<Mutex<_>>`); this type carries only the runtime's parts.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use crate::event::Wait;
use crate::listener::Listener;
use crate::mesh::{Inbox, ShardMesh};
use crate::shutdown::{ShardShutdown, Shutdown};
use crate::timer::{self, Expirations, Timers};

pub(crate) struct ShardInner<M> {
    pub(crate) id: usize,
    pub(crate) count: usize,
    pub(crate) cpu: Option<usize>,
    pub(crate) mesh: ShardMesh<M>,
    pub(crate) inbox: RefCell<Option<Inbox<M>>>,
    pub(crate) listeners: RefCell<Vec<Listener>>,
    pub(crate) shutdown: Rc<ShardShutdown>,
    pub(crate) global_shutdown: Shutdown,
    pub(crate) timer_tick: Duration,
}

/// One shard's handle to the runtime. Cheap to clone (an `Rc`); not `Send`.
pub struct Shard<M> {
    pub(crate) inner: Rc<ShardInner<M>>,
}

impl<M> Clone for Shard<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

impl<M> fmt::Debug for Shard<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("id", &self.inner.id)
            .field("count", &self.inner.count)
            .field("cpu", &self.inner.cpu)
            .finish()
    }
}

impl<M> Shard<M> {
    /// This shard's index, `0..count()`.
    pub fn id(&self) -> usize {
        self.inner.id
    }

    /// Number of shards in the runtime.
    pub fn count(&self) -> usize {
        self.inner.count
    }

    /// The CPU this shard is pinned to, or `None` if it runs unpinned.
    pub fn cpu(&self) -> Option<usize> {
        self.inner.cpu
    }

    /// Spawns a task on this shard. Keep the returned `glommio::Task` to await or cancel it
    /// (dropping it cancels the task), or call `.detach()` to let it run on its own.
    pub fn spawn<T: 'static>(&self, fut: impl Future<Output = T> + 'static) -> glommio::Task<T> {
        glommio::spawn_local(fut)
    }

    /// Takes this shard's socket for the listener named `name` (as given to
    /// `Builder::listen`). Each name can be taken once per shard; later calls return `None`.
    pub fn take_listener(&self, name: &str) -> Option<Listener> {
        let mut listeners = self.inner.listeners.borrow_mut();
        let pos = listeners.iter().position(|l| l.name() == name)?;
        Some(listeners.swap_remove(pos))
    }

    /// The mesh handle: send to any shard (to this one without touching the channel).
    pub fn mesh(&self) -> &ShardMesh<M> {
        &self.inner.mesh
    }

    /// Takes this shard's inbox (once; later calls return `None`). Loop on
    /// `Inbox::recv_batch` in one task.
    pub fn take_inbox(&self) -> Option<Inbox<M>> {
        self.inner.inbox.borrow_mut().take()
    }

    /// Creates a timer wheel ticking at the runtime's `timer_tick`. Create one per shard and
    /// share the [`Timers`] handle; run one task looping on [`Expirations::next_batch`].
    pub fn timers<K>(&self) -> (Timers<K>, Expirations<K>) {
        timer::timers(self.inner.timer_tick)
    }

    /// Resolves when shutdown begins (phase 1: stop accepting, close clients, drain).
    /// Listeners' accept loops already stop on their own.
    pub fn shutdown(&self) -> ShutdownFuture {
        ShutdownFuture(self.inner.shutdown.draining())
    }

    /// Resolves when this shard must stop now: `Shutdown::force` was called, or the drain
    /// timeout elapsed since shutdown began. The runtime then drops the shard's main future
    /// and remaining tasks; code racing this future can use it for last words (logging).
    pub fn forced(&self) -> ShutdownFuture {
        ShutdownFuture(self.inner.shutdown.forced())
    }

    /// True once shutdown has begun on this shard.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_draining()
    }

    /// The process-wide handle, e.g. for an admin endpoint that triggers shutdown.
    pub fn shutdown_handle(&self) -> &Shutdown {
        &self.inner.global_shutdown
    }
}

/// Future returned by [`Shard::shutdown`] and [`Shard::forced`]. `Unpin`; cheap to poll
/// repeatedly (its waker slot is reused).
#[derive(Debug)]
pub struct ShutdownFuture(Wait);

impl Future for ShutdownFuture {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}
