//! The cross-shard mesh: one bounded MPSC inbox per shard, fed from any shard or any thread,
//! drained in batches by its shard, with a doorbell wake-up that costs nothing while the shard
//! is busy (DESIGN.md "Thread-per-core, shared-nothing": cross-shard work travels as messages).
//!
//! - [`MeshSender<M>`]: `Clone + Send + Sync`, usable from any thread (a Redis bridge thread,
//!   the signal thread, a test). `send` never blocks; `send_timeout` may block and is for
//!   plain threads only: a shard must never block on another shard's inbox (two full inboxes
//!   would deadlock two shards).
//! - [`ShardMesh<M>`]: the shard-local handle. Sending to yourself skips the channel: the
//!   message goes into a local `VecDeque` (no atomics, no fence) that the inbox drains first.
//! - [`Inbox<M>`]: the receiving end, taken once per shard (`Shard::take_inbox`).
//!   [`Inbox::recv_batch`] returns up to `batch` messages (default 256) and, after a full
//!   batch, yields once before draining more so connection tasks are not starved.
//!
//! **Bounded, by design.** Each inbox is a `crossbeam_channel::bounded(capacity)` (default
//! 16 384). Memory never grows past `capacity × (size_of::<M>() + 8)` bytes per shard (the
//! array channel preallocates its slots). A full inbox is backpressure made visible: `send`
//! returns [`MeshError::Full`] with the message, the inbox's `rejected_full` counter goes up,
//! and the caller decides (drop and count, disconnect a slow publisher, retry later).
//! [`MeshSender::inbox_stats`] exposes the queue length for metrics. An unbounded channel
//! would turn one slow shard into unbounded memory growth on every sender.
//!
//! Wake-ups: see `doorbell.rs` for the armed-flag handshake that makes lost wake-ups
//! impossible. This file owns the channels, the local queue and the drain loop; message
//! types and what a message means belong to the caller (`hub/` in the server).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};
use futures_lite::AsyncRead;

use crate::doorbell::Doorbell;
use crate::sys;

/// Why a message could not be delivered. Every variant gives the message back.
pub enum MeshError<M> {
    /// The target inbox is at capacity (for `send_timeout`: stayed full for the whole timeout).
    Full(M),
    /// The target shard has ended; its inbox is gone.
    Stopped(M),
    /// No shard has this index.
    NoSuchShard(M),
}

impl<M> MeshError<M> {
    /// The undelivered message.
    pub fn into_inner(self) -> M {
        match self {
            Self::Full(m) | Self::Stopped(m) | Self::NoSuchShard(m) => m,
        }
    }

    /// A short static label for counters (`mesh_send_errors{reason="..."}`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Full(_) => "inbox_full",
            Self::Stopped(_) => "shard_stopped",
            Self::NoSuchShard(_) => "no_such_shard",
        }
    }
}

impl<M> fmt::Debug for MeshError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message itself need not be `Debug`.
        write!(f, "MeshError::{}", self.label())
    }
}

impl<M> fmt::Display for MeshError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "target shard's inbox is full",
            Self::Stopped(_) => "target shard has stopped",
            Self::NoSuchShard(_) => "no shard with this index",
        })
    }
}

impl<M> std::error::Error for MeshError<M> {}

/// A snapshot of one inbox's counters, readable from any thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxStats {
    /// Messages waiting in the channel now (not counting the shard's local self-sends).
    pub len: usize,
    /// The configured capacity.
    pub capacity: usize,
    /// Doorbell bytes written: how often a sender woke the shard from idle.
    pub wakeups: u64,
    /// Sends rejected because the inbox was full.
    pub rejected_full: u64,
    /// True while the shard is parked waiting for its doorbell (idle).
    pub parked: bool,
}

struct InboxShared<M> {
    tx: Sender<M>,
    bell: Doorbell,
    capacity: usize,
    rejected_full: AtomicU64,
}

struct MeshShared<M> {
    inboxes: Box<[InboxShared<M>]>,
}

/// Sends messages to any shard's inbox, from any thread. Cheap to clone.
pub struct MeshSender<M> {
    shared: Arc<MeshShared<M>>,
}

impl<M> Clone for MeshSender<M> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M> fmt::Debug for MeshSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MeshSender")
            .field("shards", &self.shards())
            .finish()
    }
}

impl<M> MeshSender<M> {
    /// Number of shards (valid targets are `0..shards()`).
    pub fn shards(&self) -> usize {
        self.shared.inboxes.len()
    }

    /// Sends without blocking. On success the target shard is woken if it was idle.
    #[inline]
    pub fn send(&self, to: usize, msg: M) -> Result<(), MeshError<M>> {
        let Some(inbox) = self.shared.inboxes.get(to) else {
            return Err(MeshError::NoSuchShard(msg));
        };
        match inbox.tx.try_send(msg) {
            Ok(()) => {
                inbox.bell.notify();
                Ok(())
            }
            Err(TrySendError::Full(m)) => {
                inbox.rejected_full.fetch_add(1, Ordering::Relaxed);
                Err(MeshError::Full(m))
            }
            Err(TrySendError::Disconnected(m)) => Err(MeshError::Stopped(m)),
        }
    }

    /// Sends, blocking the calling thread up to `timeout` while the inbox is full. For plain
    /// threads only (a bridge applying backpressure to its upstream); never call it on a shard.
    pub fn send_timeout(&self, to: usize, msg: M, timeout: Duration) -> Result<(), MeshError<M>> {
        let Some(inbox) = self.shared.inboxes.get(to) else {
            return Err(MeshError::NoSuchShard(msg));
        };
        match inbox.tx.send_timeout(msg, timeout) {
            Ok(()) => {
                inbox.bell.notify();
                Ok(())
            }
            Err(SendTimeoutError::Timeout(m)) => {
                inbox.rejected_full.fetch_add(1, Ordering::Relaxed);
                Err(MeshError::Full(m))
            }
            Err(SendTimeoutError::Disconnected(m)) => Err(MeshError::Stopped(m)),
        }
    }

    /// Counters of shard `shard`'s inbox, or `None` if there is no such shard.
    pub fn inbox_stats(&self, shard: usize) -> Option<InboxStats> {
        self.shared.inboxes.get(shard).map(|inbox| InboxStats {
            len: inbox.tx.len(),
            capacity: inbox.capacity,
            wakeups: inbox.bell.rings(),
            rejected_full: inbox.rejected_full.load(Ordering::Relaxed),
            parked: inbox.bell.is_armed(),
        })
    }
}

/// What a shard thread needs to build its [`Inbox`]: `Send`, moved into the thread at start.
pub(crate) struct InboxParts<M> {
    rx: Receiver<M>,
    bell_read: OwnedFd,
}

/// Builds the channels and doorbells for `shards` inboxes.
pub(crate) fn build<M>(
    shards: usize,
    capacity: usize,
) -> std::io::Result<(MeshSender<M>, Vec<InboxParts<M>>)> {
    let mut inboxes = Vec::with_capacity(shards);
    let mut parts = Vec::with_capacity(shards);
    for _ in 0..shards {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let (bell_read, bell_write) = sys::doorbell_pair()?;
        inboxes.push(InboxShared {
            tx,
            bell: Doorbell::new(bell_write),
            capacity,
            rejected_full: AtomicU64::new(0),
        });
        parts.push(InboxParts { rx, bell_read });
    }
    let sender = MeshSender {
        shared: Arc::new(MeshShared {
            inboxes: inboxes.into(),
        }),
    };
    Ok((sender, parts))
}

/// Messages a shard sent to itself: bounded like the channel, with no synchronisation.
struct LocalQueue<M> {
    queue: RefCell<VecDeque<M>>,
    capacity: usize,
    /// The inbox task's waker while it is parked.
    waker: Cell<Option<Waker>>,
}

/// The shard-local mesh handle: send to any shard, with a fast path to yourself.
pub struct ShardMesh<M> {
    id: usize,
    sender: MeshSender<M>,
    local: Rc<LocalQueue<M>>,
}

impl<M> Clone for ShardMesh<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            sender: self.sender.clone(),
            local: Rc::clone(&self.local),
        }
    }
}

impl<M> fmt::Debug for ShardMesh<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardMesh")
            .field("id", &self.id)
            .field("shards", &self.shards())
            .finish()
    }
}

impl<M> ShardMesh<M> {
    /// This shard's index.
    pub fn id(&self) -> usize {
        self.id
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.sender.shards()
    }

    /// Sends to shard `to` without blocking. To this shard itself, the message skips the
    /// channel and lands in the local queue, which [`Inbox::recv_batch`] drains first.
    #[inline]
    pub fn send(&self, to: usize, msg: M) -> Result<(), MeshError<M>> {
        if to != self.id {
            return self.sender.send(to, msg);
        }
        {
            let mut q = self.local.queue.borrow_mut();
            if q.len() >= self.local.capacity {
                return Err(MeshError::Full(msg));
            }
            q.push_back(msg);
        }
        if let Some(waker) = self.local.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// A thread-safe sender, e.g. to hand to a plain thread.
    pub fn sender(&self) -> &MeshSender<M> {
        &self.sender
    }
}

/// Shard-local counters of an [`Inbox`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxCounters {
    /// Messages handed out by `recv_batch` / `try_recv_batch`.
    pub received: u64,
    /// Times the inbox found nothing and parked on its doorbell.
    pub parks: u64,
    /// Batches that were full (each followed by a yield).
    pub full_batches: u64,
}

/// The receiving end of a shard's inbox. Not `Send`: it belongs to its shard.
pub struct Inbox<M> {
    id: usize,
    rx: Receiver<M>,
    sender: MeshSender<M>,
    local: Rc<LocalQueue<M>>,
    bell: glommio::net::UnixStream,
    bell_buf: [u8; 64],
    batch: usize,
    yield_first: bool,
    counters: InboxCounters,
}

impl<M> fmt::Debug for Inbox<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inbox")
            .field("id", &self.id)
            .field("counters", &self.counters)
            .finish()
    }
}

/// Creates the shard-local ends on the shard's executor. Must run inside glommio.
pub(crate) fn attach<M>(
    id: usize,
    parts: InboxParts<M>,
    sender: MeshSender<M>,
    batch: usize,
) -> (ShardMesh<M>, Inbox<M>) {
    let capacity = sender.shared.inboxes.get(id).map_or(1, |i| i.capacity);
    let local = Rc::new(LocalQueue {
        queue: RefCell::new(VecDeque::new()),
        capacity,
        waker: Cell::new(None),
    });
    // A task serving sockets may wait on the shard's ring: a ring of the doorbell ends it.
    crate::uring::watch(parts.bell_read.as_raw_fd());
    // SAFETY: `bell_read` is an open socket we own; ownership moves into the stream.
    let bell = unsafe { glommio::net::UnixStream::from_raw_fd(parts.bell_read.into_raw_fd()) };
    let mesh = ShardMesh {
        id,
        sender: sender.clone(),
        local: Rc::clone(&local),
    };
    let inbox = Inbox {
        id,
        rx: parts.rx,
        sender,
        local,
        bell,
        bell_buf: [0; 64],
        batch: batch.max(1),
        yield_first: false,
        counters: InboxCounters::default(),
    };
    (mesh, inbox)
}

impl<M> Inbox<M> {
    /// Waits for at least one message, then appends up to `batch` messages (local self-sends
    /// first, then the channel) to `out` and returns how many (always at least 1). After a
    /// full batch, the next call yields to other tasks once before draining again.
    pub async fn recv_batch(&mut self, out: &mut Vec<M>) -> usize {
        if self.yield_first {
            self.yield_first = false;
            futures_lite::future::yield_now().await;
        }
        loop {
            let n = self.try_recv_batch(out);
            if n > 0 {
                if n >= self.batch {
                    self.yield_first = true;
                    self.counters.full_batches += 1;
                }
                return n;
            }
            self.park().await;
        }
    }

    /// Appends up to `batch` immediately available messages to `out`, without waiting.
    pub fn try_recv_batch(&mut self, out: &mut Vec<M>) -> usize {
        let mut n = 0;
        {
            let mut q = self.local.queue.borrow_mut();
            while n < self.batch {
                let Some(m) = q.pop_front() else { break };
                out.push(m);
                n += 1;
            }
        }
        while n < self.batch {
            let Ok(m) = self.rx.try_recv() else { break };
            out.push(m);
            n += 1;
        }
        self.counters.received += n as u64;
        n
    }

    /// Messages waiting now (channel plus local queue).
    pub fn len(&self) -> usize {
        self.rx.len() + self.local.queue.borrow().len()
    }

    /// True if no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty() && self.local.queue.borrow().is_empty()
    }

    /// This inbox's shard-local counters.
    pub fn counters(&self) -> InboxCounters {
        self.counters
    }

    /// The thread-safe sender of the whole mesh (for stats or to hand to a thread).
    pub fn sender(&self) -> &MeshSender<M> {
        &self.sender
    }

    /// Parks until a sender rings the doorbell or a self-send arrives. See `doorbell.rs`.
    async fn park(&mut self) {
        // `id` is this shard's own index, valid by construction in `attach`.
        let Some(shared) = self.sender.shared.inboxes.get(self.id) else {
            return;
        };
        let local_pending = !self.local.queue.borrow().is_empty();
        if !arm_and_recheck(&shared.bell, &self.rx, local_pending) {
            return;
        }
        self.counters.parks += 1;
        let healthy = poll_fn(|cx| {
            if !self.local.queue.borrow().is_empty() {
                return Poll::Ready(true);
            }
            self.local.waker.set(Some(cx.waker().clone()));
            match Pin::new(&mut self.bell).poll_read(cx, &mut self.bell_buf) {
                Poll::Ready(Ok(n)) => Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        self.local.waker.take();
        shared.bell.disarm();
        if !healthy {
            // EOF or an error on the doorbell cannot happen while `sender` keeps the write end
            // open. Should it happen anyway, poll the queue every millisecond instead of
            // spinning.
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// The receiver's half of the doorbell handshake (`doorbell.rs`): arm, then look at the queue
/// once more. Returns `true` if the caller may park on the doorbell; `false` (and disarmed)
/// if a message arrived meanwhile. A message published before its sender could see `armed`
/// is caught by this re-check: the sender's fence pairs with the one in `arm`.
fn arm_and_recheck<M>(bell: &Doorbell, rx: &Receiver<M>, local_pending: bool) -> bool {
    bell.arm();
    if local_pending || !rx.is_empty() {
        bell.disarm();
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executor() -> glommio::LocalExecutor {
        glommio::LocalExecutorBuilder::default()
            .io_memory(64 << 10)
            .make()
            .unwrap()
    }

    #[test]
    fn errors_give_the_message_back_with_a_label() {
        let (sender, parts) = build::<String>(1, 1).unwrap();
        assert_eq!(sender.shards(), 1);
        let e = sender.send(7, "x".into()).unwrap_err();
        assert_eq!(e.label(), "no_such_shard");
        assert_eq!(e.into_inner(), "x");
        sender.send(0, "a".into()).unwrap();
        let e = sender.send(0, "b".into()).unwrap_err();
        assert_eq!((e.label(), e.into_inner().as_str()), ("inbox_full", "b"));
        let e = sender
            .send_timeout(0, "c".into(), Duration::from_millis(1))
            .unwrap_err();
        assert_eq!(e.label(), "inbox_full");
        let stats = sender.inbox_stats(0).unwrap();
        assert_eq!(
            stats,
            InboxStats {
                len: 1,
                capacity: 1,
                wakeups: 0,
                rejected_full: 2,
                parked: false
            }
        );
        drop(parts);
        let e = sender.send(0, "d".into()).unwrap_err();
        assert_eq!(e.label(), "shard_stopped");
        assert!(sender.inbox_stats(1).is_none());
    }

    #[test]
    fn batches_are_bounded_and_local_sends_come_first() {
        executor().run(async {
            let (sender, mut parts) = build::<u32>(2, 1024).unwrap();
            let (mesh, mut inbox) = attach(0, parts.remove(0), sender.clone(), 4);
            for i in 0..6 {
                sender.send(0, i).unwrap();
            }
            mesh.send(0, 100).unwrap();
            let mut out = Vec::new();
            assert_eq!(inbox.recv_batch(&mut out).await, 4);
            assert_eq!(out, vec![100, 0, 1, 2]);
            out.clear();
            assert_eq!(inbox.recv_batch(&mut out).await, 3);
            assert_eq!(out, vec![3, 4, 5]);
            assert!(inbox.is_empty());
            let c = inbox.counters();
            assert_eq!((c.received, c.full_batches, c.parks), (7, 1, 0));
            // Cross-shard sends from the shard handle go through the channel.
            mesh.send(1, 9).unwrap();
            assert_eq!(sender.inbox_stats(1).unwrap().len, 1);
        });
    }

    #[test]
    fn local_queue_is_bounded_too() {
        executor().run(async {
            let (sender, mut parts) = build::<u32>(1, 2).unwrap();
            let (mesh, _inbox) = attach(0, parts.remove(0), sender, 8);
            mesh.send(0, 1).unwrap();
            mesh.send(0, 2).unwrap();
            assert_eq!(mesh.send(0, 3).unwrap_err().label(), "inbox_full");
        });
    }

    /// The handshake alone, between plain threads and with a blocking read on the doorbell
    /// (no glommio, no wake guard): burst senders keep the inbox full while a lock-step sender
    /// makes the receiver park before nearly every one of its messages, and the receiver
    /// lingers a random few microseconds between finding its queue empty and arming, so that
    /// sends land inside that window. A lost wake-up would leave the receiver blocked in
    /// `read` and miss the deadline. (Removing the re-check from `arm_and_recheck` makes this
    /// test fail.)
    #[test]
    fn the_doorbell_handshake_loses_no_wakeup_between_threads() {
        use std::io::Read;
        const BURST_SENDERS: u64 = 3;
        const PER_SENDER: u64 = 50_000;
        const LOCKSTEP: u64 = 5_000;
        const MARK: u64 = u64::MAX;
        let (sender, mut parts) = build::<u64>(1, 256).unwrap();
        let InboxParts { rx, bell_read } = parts.remove(0);
        let mut bell = std::os::unix::net::UnixStream::from(bell_read);
        bell.set_nonblocking(false).unwrap();
        let shared = Arc::clone(&sender.shared);
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(u64, u64)>();
        std::thread::spawn(move || {
            let bell_state = &shared.inboxes[0].bell;
            let (mut got, mut parks) = (0u64, 0u64);
            let mut buf = [0u8; 64];
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            while got < BURST_SENDERS * PER_SENDER + LOCKSTEP {
                if let Ok(v) = rx.try_recv() {
                    got += 1;
                    if v == MARK {
                        let _ = ack_tx.send(());
                    }
                    continue;
                }
                // Widen the race window between "found nothing" and "armed" (as a preempted
                // shard would), so that senders often publish right inside it.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let until = std::time::Instant::now() + Duration::from_micros(seed % 20);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                if arm_and_recheck(bell_state, &rx, false) {
                    parks += 1;
                    assert!(bell.read(&mut buf).unwrap() > 0);
                    bell_state.disarm();
                }
            }
            let _ = done_tx.send((got, parks));
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Retries a full inbox until the deadline (a stuck receiver must fail the test, not
        // hang it).
        let send = move |s: &MeshSender<u64>, mut m: u64| {
            while let Err(e) = s.send(0, m) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "receiver stuck: lost wake-up"
                );
                m = e.into_inner();
                std::thread::yield_now();
            }
        };
        let mut senders = Vec::new();
        for _ in 0..BURST_SENDERS {
            let s = sender.clone();
            senders.push(std::thread::spawn(move || {
                for i in 0..PER_SENDER {
                    send(&s, i);
                }
            }));
        }
        for i in 0..LOCKSTEP {
            send(&sender, MARK);
            ack_rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("lock-step message {i} never processed: lost wake-up"));
        }
        for s in senders {
            s.join().expect("burst sender");
        }
        let (got, parks) = done_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("receiver finished");
        assert_eq!(got, BURST_SENDERS * PER_SENDER + LOCKSTEP);
        assert!(parks > 0);
        assert!(sender.inbox_stats(0).unwrap().wakeups > 0);
    }

    #[test]
    fn a_parked_inbox_is_woken_by_a_thread_and_by_a_self_send() {
        executor().run(async {
            let (sender, mut parts) = build::<u32>(1, 64).unwrap();
            let (mesh, mut inbox) = attach(0, parts.remove(0), sender.clone(), 8);
            let receiver = glommio::spawn_local(async move {
                let mut out = Vec::new();
                while out.len() < 2 {
                    inbox.recv_batch(&mut out).await;
                }
                (out, inbox.counters())
            });
            // Let the receiver park, then wake it locally.
            futures_lite::future::yield_now().await;
            mesh.send(0, 1).unwrap();
            futures_lite::future::yield_now().await;
            // Now from another thread: the doorbell path.
            let s = sender.clone();
            std::thread::spawn(move || s.send(0, 2).unwrap())
                .join()
                .unwrap();
            let (out, counters) = receiver.await;
            assert_eq!(out, vec![1, 2]);
            assert!(counters.parks >= 1);
            assert!(sender.inbox_stats(0).unwrap().wakeups <= 1);
        });
    }
}
