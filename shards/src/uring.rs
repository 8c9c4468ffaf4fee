//! The shard's own io_uring for connection sockets: one multishot read-readiness poll per
//! socket for its life, write-readiness polls, and one `io_uring_enter` per turn for all the
//! requests the sockets queued.
//!
//! glommio 0.9 reads a socket with a plain `recv` and, whenever that does not fill the buffer,
//! allocates a new poll request on its main ring to learn when the next bytes come: one
//! syscall plus one submission per read, and one pending poll (with its allocation) per idle
//! socket. Here each socket has **one multishot poll for its life**: the kernel posts a
//! completion whenever bytes arrive, which marks the socket readable and wakes its task; the
//! task reads with `recv` when it is served ([`Socket::poll_recv`]), everything that came
//! meanwhile in one call, and a read that comes back short leaves the socket marked empty, so
//! the next look costs no syscall. An idle socket costs no user memory beyond its 32-byte
//! slot: bytes stay in the kernel until they are read.
//!
//! (Until 2026-12-07 the sockets had a multishot *receive* into a ring of provided buffers:
//! the kernel read each arrival as it came, at the shard's next syscall exit, and the bytes
//! were copied to a per-socket inbox. Reading when served instead costs the same CPU in the
//! echo and fan-out runs (PERF.md), reads once per service like an epoll server, and drops
//! the inbox (32 bytes per connection) and the shard's 1 MiB of provided buffers.)
//!
//! - [`Ring::get`] gives the shard's ring (created on first use on the shard's thread, with its
//!   driver task); [`Ring::adopt`] takes a connected socket and returns its [`Socket`].
//! - **The driver** is a glommio task. Whenever it runs it submits what the sockets queued
//!   (every socket's requests of the turn in one `io_uring_enter`), reaps the completion queue
//!   (no syscall) and wakes the sockets' tasks. With nothing to do it parks: it enables the
//!   ring's eventfd, looks at the completion queue once more (so a completion posted in
//!   between is not missed: the kernel posts, then checks the flag; the driver sets the flag,
//!   then checks the queue) and waits on the eventfd through glommio, so the shard sleeps
//!   until the kernel has something for it. While the driver is awake the eventfd stays
//!   disabled and completions cost no wake-up. A socket's task also reaps what is waiting
//!   when it looks for bytes ([`Socket::poll_recv`]), so its readiness is up to date.
//! - **Waiting on the ring.** The task that serves a shard's open sockets can look at the
//!   ring without waiting ([`Ring::pump`]) and wait on it with a short timeout
//!   ([`Ring::wait`]) before it parks, so that the next bytes are served without a glommio
//!   reactor turn. Descriptors that other threads ring ([`watch`]: the doorbells) end such a
//!   wait. The waits of one window share one timer request on the ring
//!   ([`Ring::wait_until`]) rather than each arming and cancelling a kernel timer (a trap to
//!   the hypervisor each, in a VM), and they are not counted as I/O wait
//!   (`IORING_ENTER_NO_IOWAIT`, where the kernel has it).
//! - **Bounds.** Nothing is read that the reader did not ask for: one [`Socket::poll_recv`]
//!   reads at most [`RECV_MAX`] bytes (through one [`RECV_CHUNK`] scratch buffer per shard),
//!   and a connection paused under backpressure ([`Socket::pause_recv`]) is not read at all:
//!   its poll is cancelled, the kernel's socket buffer fills and TCP pushes back.
//! - **The end and errors.** The poll reports the peer's end (`POLLRDHUP`) or an error once;
//!   after that the socket stays marked readable, so a short read of the last bytes is
//!   followed by the `recv` that returns the end or the error.
//!
//! **Architecture invariant:** like the rest of this crate, nothing here knows what the bytes
//! mean.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring};

/// Submission queue entries (the completion queue is four times larger; the kernel keeps
/// overflowing completions on a list rather than dropping them).
const SQ_ENTRIES: u32 = 1024;
/// Bytes one `recv` asks for (into the shard's scratch buffer, copied out at once).
pub const RECV_CHUNK: usize = 16 * 1024;
/// Bytes one [`Socket::poll_recv`] reads at most before it returns them.
pub const RECV_MAX: usize = 64 * 1024;
/// Completions handled per driver poll before it lets other tasks run.
const REAP_BUDGET: usize = 4096;
/// Completions a socket's task reaps when it looks for bytes ([`Socket::poll_recv`]).
const TASK_REAP_BUDGET: usize = 64;

/// `io_uring_enter` flag: process completions (the crate does not export it).
const IORING_ENTER_GETEVENTS: u32 = 1;

/// A socket's read-readiness poll (multishot, for its life).
const OP_POLLIN: u64 = 1;
const OP_POLLOUT: u64 = 2;
const OP_CANCEL: u64 = 3;
/// Readiness of a watched descriptor ([`watch`]): nothing to hand over, it only ends a wait.
const OP_WATCH: u64 = 4;
/// The timer that bounds waits on the ring ([`Ring::wait_until`]); the slot field carries its
/// sequence number.
const OP_WINDOW: u64 = 5;

fn user_data(slot: u32, gen: u32, op: u64) -> u64 {
    (op << 56) | (((gen & 0x00ff_ffff) as u64) << 32) | slot as u64
}

fn split(data: u64) -> (u32, u32, u64) {
    (data as u32, ((data >> 32) & 0x00ff_ffff) as u32, data >> 56)
}

/// What the shard's ring did, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingStats {
    /// `io_uring_enter` calls that submitted requests.
    pub submits: u64,
    /// Requests submitted.
    pub submitted: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Read-readiness polls re-armed after the kernel ended them or a pause cancelled them.
    pub rearms: u64,
    /// `recv` calls made.
    pub recvs: u64,
    /// Of those, the ones that found nothing (readiness reported for bytes already read).
    pub empty_recvs: u64,
    /// Times the driver parked on its eventfd.
    pub parks: u64,
    /// Sockets adopted and not yet released.
    pub sockets: u64,
    /// Times a task waited on the ring itself ([`Ring::wait`]).
    pub waits: u64,
    /// Of those, the ones that ended with completions rather than the timeout.
    pub waits_served: u64,
    /// Timers armed to bound waits (one per window of waits, see [`Ring::wait_until`]).
    pub wait_timers: u64,
}

/// How a [`Ring::wait_until`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// Completions came (and were handled): how many.
    Served(usize),
    /// The deadline passed while waiting, with nothing else.
    TimedOut,
    /// The deadline had passed already: it did not wait.
    Expired,
}

/// The timer bounding a window of waits: one `IORING_OP_TIMEOUT` request in flight at a time.
#[derive(Debug, Default)]
struct WindowTimer {
    /// The deadline of the timer in flight, if any, and its sequence number.
    armed: Option<(Instant, u32)>,
    /// The latest deadline whose timer fired.
    fired: Option<Instant>,
    /// Sequence numbers: a completion of an earlier timer is told apart.
    seq: u32,
    /// Timer completions handled (not counted as work by `reap`).
    ticks: usize,
    /// The timeout handed to the kernel: it reads it when the request is submitted, which
    /// [`Ring::wait_until`] does right after queueing it.
    ts: types::Timespec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recv {
    /// No read-readiness poll in flight.
    Idle,
    /// The multishot read-readiness poll is in flight.
    Armed,
    /// Its cancellation was asked; it ends with its next final completion.
    Cancelling,
}

/// A socket's state on the ring, one per open connection (kept in a `Vec`): its size is
/// idle memory per connection, so it is kept to 32 bytes (see the test).
struct Slot {
    gen: u32,
    fd: RawFd,
    /// The task to wake, for the directions in [`Flags::WANT_READ`] and
    /// [`Flags::WANT_WRITE`]. One waker serves both: a socket is read and written by one task
    /// (a handshake task, then the open table's waker of the connection), so two would hold
    /// the same waker twice. See [`Slot::register`] for a poll that brings another one.
    waker: Option<Waker>,
    /// A `recv` failed with this errno (after it had returned bytes, which went out first);
    /// 0 when none did. Errno values are below 4096.
    error: i16,
    /// Requests in flight (polls, cancels): the slot is reused only once this is 0. A handful
    /// at most: one read poll, one write poll, their cancellations.
    in_flight: u16,
    recv: Recv,
    flags: Flags,
}

/// A slot's booleans in one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Flags(u8);

impl Flags {
    /// A `recv` saw the end of the stream (the peer closed its side).
    const EOF: Flags = Flags(1);
    /// The write-readiness poll is in flight.
    const POLLOUT_ARMED: Flags = Flags(1 << 1);
    /// The poll completed and no poll of the task has taken it yet.
    const WRITABLE: Flags = Flags(1 << 2);
    /// The socket handle was dropped.
    const RELEASED: Flags = Flags(1 << 3);
    /// The task wants bytes (it polled and found none): received bytes wake the waker.
    const WANT_READ: Flags = Flags(1 << 4);
    /// The task waits for write readiness: the poll's completion wakes the waker.
    const WANT_WRITE: Flags = Flags(1 << 5);
    const WANTS: Flags = Flags(Flags::WANT_READ.0 | Flags::WANT_WRITE.0);
    /// The socket may have bytes to read: the read poll reported it (or it was just armed)
    /// and no `recv` has found the socket empty since.
    const READABLE: Flags = Flags(1 << 6);
    /// The read poll reported the peer's end or an error: the socket stays readable (a
    /// `recv` returns 0 or the error) even after a read that came back short, and no more
    /// completions will say so.
    const HANGUP: Flags = Flags(1 << 7);

    fn has(self, f: Flags) -> bool {
        self.0 & f.0 != 0
    }

    fn insert(&mut self, f: Flags) {
        self.0 |= f.0;
    }

    fn remove(&mut self, f: Flags) {
        self.0 &= !f.0;
    }
}

impl Slot {
    fn new(gen: u32, fd: RawFd) -> Slot {
        Slot {
            gen,
            fd,
            waker: None,
            error: 0,
            in_flight: 0,
            recv: Recv::Idle,
            flags: Flags::default(),
        }
    }

    /// Registers `waker` for `want` ([`Flags::WANT_READ`] or [`Flags::WANT_WRITE`]).
    ///
    /// The slot holds one waker for both directions, so a poll that brings a waker which
    /// does not `will_wake` the stored one replaces it. If the stored one is still wanted for
    /// the other direction, it is woken on the way out: its task polls again and registers
    /// anew, so its wake-up is never lost. The other direction's interest stays, now with
    /// the new waker (at worst a spurious wake-up for it). With one task per socket, as
    /// everywhere in this server, the wakers are the same and none of this happens; a
    /// handover ([`Socket::forget_wakers`]) clears the interest first.
    fn register(&mut self, want: Flags, waker: &Waker) {
        match &self.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => {
                let old = self.waker.replace(waker.clone());
                let other = Flags(Flags::WANTS.0 & !want.0);
                if let Some(old) = old {
                    if self.flags.has(other) {
                        old.wake();
                    }
                }
            }
        }
        self.flags.insert(want);
    }

    /// Wakes the waker if it is wanted for `want`, which is then no longer wanted. The waker
    /// is kept while the other direction still wants it, dropped otherwise.
    fn wake(&mut self, want: Flags) {
        if !self.flags.has(want) {
            return;
        }
        self.flags.remove(want);
        if self.flags.has(Flags::WANTS) {
            if let Some(w) = &self.waker {
                w.wake_by_ref();
            }
        } else if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Drops the waker and the interest in both directions.
    fn forget_waker(&mut self) {
        self.waker = None;
        self.flags.remove(Flags::WANTS);
    }
}

struct Inner {
    uring: RefCell<IoUring>,
    /// Where `recv` reads to, before the bytes are copied to the socket's reader.
    scratch: RefCell<Box<[u8]>>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    driver: RefCell<Option<Waker>>,
    /// Requests were queued since the last submit.
    queued: Cell<bool>,
    /// Registered with the ring (glommio owns a duplicate it reads).
    _eventfd: OwnedFd,
    stats: Cell<RingStats>,
    /// How [`Ring::wait`] enters the kernel: `IORING_ENTER_NO_IOWAIT` where the kernel has it
    /// (6.15+). The ring always has receives in flight, so its waits would otherwise count as
    /// I/O wait: a server idling on its sockets would show its idle time as `iowait` and
    /// I/O pressure (`/proc/pressure/io`) that no disk causes.
    wait_flags: EnterFlags,
    /// Bounds waits on the ring (see [`Ring::wait_until`]).
    window: RefCell<WindowTimer>,
}

/// See [`Ring::quiet`].
pub struct Quiet<'a> {
    ring: &'a Ring,
    /// The eventfd was enabled (the driver parked on it) when the guard was taken.
    restore: bool,
}

impl Quiet<'_> {
    /// Restores the eventfd (if the guard turned it off) and hands over what was posted
    /// meanwhile. Returns how many completions that was.
    fn end(&mut self) -> usize {
        if !std::mem::take(&mut self.restore) {
            return 0;
        }
        let inner = &self.ring.0;
        inner.uring.borrow_mut().completion().enable_eventfd();
        // The kernel posts, then checks the flag; this sets the flag, then looks.
        fence(Ordering::SeqCst);
        inner.reap(REAP_BUDGET)
    }
}

impl Drop for Quiet<'_> {
    fn drop(&mut self) {
        self.end();
    }
}

/// The shard's ring. Cheap to clone; one per shard thread.
#[derive(Clone)]
pub struct Ring(Rc<Inner>);

thread_local! {
    static RING: RefCell<Option<Ring>> = const { RefCell::new(None) };
    /// Descriptors whose readiness ends a [`Ring::wait`] on this thread.
    static WATCHED: RefCell<Vec<RawFd>> = const { RefCell::new(Vec::new()) };
}

/// Makes `fd` becoming readable end any [`Ring::wait`] on this shard: a descriptor that some
/// other task of the shard reads through glommio (a doorbell that another thread rings), so
/// that a task waiting on the ring does not make that task wait for the timeout. The ring
/// polls it (one multishot poll for its life: a completion per wake-up, nothing read);
/// `fd` must stay open for as long as the shard runs.
pub fn watch(fd: RawFd) {
    WATCHED.with(|w| w.borrow_mut().push(fd));
    if let Some(ring) = Ring::current() {
        ring.0.arm_watch(fd);
    }
}

impl RingStats {
    /// Adds another ring's figures (the shards' rings summed).
    pub fn merge(&mut self, o: &RingStats) {
        self.submits += o.submits;
        self.submitted += o.submitted;
        self.completions += o.completions;
        self.rearms += o.rearms;
        self.recvs += o.recvs;
        self.empty_recvs += o.empty_recvs;
        self.parks += o.parks;
        self.sockets += o.sockets;
        self.waits += o.waits;
        self.waits_served += o.waits_served;
        self.wait_timers += o.wait_timers;
    }
}

impl Ring {
    /// The ring of the current shard, created (with its driver task) on first use. Must be
    /// called on a glommio executor.
    pub fn get() -> io::Result<Ring> {
        RING.with(|r| {
            if let Some(ring) = r.borrow().as_ref() {
                return Ok(ring.clone());
            }
            let ring = Ring::new()?;
            *r.borrow_mut() = Some(ring.clone());
            Ok(ring)
        })
    }

    /// The ring of the current shard if it was created, without creating it.
    pub fn current() -> Option<Ring> {
        RING.with(|r| r.borrow().clone())
    }

    /// Looks for more work without waiting and without a reactor turn: submits what was
    /// queued, handles the completions waiting (waking their sockets' tasks) and, when there
    /// were none but the kernel flags pending task work (receives that arrived since this
    /// thread last entered the kernel), runs it with one `io_uring_enter` and handles what it
    /// posted. Returns how many completions were handled.
    ///
    /// A task that just served its sockets calls this before it parks: the sends of the turn
    /// returned through the kernel, which posted the receives that arrived meanwhile, so the
    /// next round of work is often already here and is served in the same turn.
    pub fn pump(&self) -> usize {
        let inner = &self.0;
        inner.submit();
        let mut n = inner.reap(REAP_BUDGET);
        if n == 0 && inner.run_task_work() {
            n = inner.reap(REAP_BUDGET);
        }
        n
    }

    /// Keeps the ring from signalling its eventfd until the guard is dropped, for a task
    /// that looks at the ring itself while it runs (the one serving the sockets: it reaps
    /// when it reads and pumps before it parks). A driver parked on the eventfd would
    /// otherwise be signalled at nearly every completion posted meanwhile (the kernel posts
    /// them when this thread returns from each of its sends): an eventfd write each, a
    /// wake-up of glommio's read of it, and a driver turn that finds the work already done.
    /// On drop the eventfd is left as it was and the queue looked at once more (what was
    /// posted meanwhile is handled, waking the sockets' tasks), so nothing goes unseen: drop
    /// it after registering for those wake-ups. No other task runs while it is held, so
    /// nothing else changes the eventfd's state meanwhile.
    pub fn quiet(&self) -> Quiet<'_> {
        let restore = !self.0.uring.borrow_mut().completion().eventfd_disabled();
        if restore {
            self.0.uring.borrow_mut().completion().disable_eventfd();
        }
        Quiet {
            ring: self,
            restore,
        }
    }

    /// Waits on the ring, up to `timeout`, for the next completion, and handles what came
    /// (waking the sockets' tasks). Returns how many completions were handled (0: none came).
    /// See [`Ring::wait_until`].
    pub fn wait(&self, timeout: Duration) -> usize {
        match self.wait_until(Instant::now() + timeout) {
            Waited::Served(n) => n,
            Waited::TimedOut | Waited::Expired => 0,
        }
    }

    /// Waits on the ring until `deadline` for the next completion, and handles what came
    /// (waking the sockets' tasks).
    ///
    /// This blocks the shard's thread, so it is for the one task that serves the sockets,
    /// with a near deadline, and only when it has just served them and nothing else is
    /// ready: the thread sleeps in the kernel as it would in glommio's park, but the next
    /// bytes are served without a reactor turn (glommio's turn re-arms its timers on its
    /// rings, a handful of syscalls, where this is one). Everything else on the shard waits
    /// at most until `deadline`. While it waits the ring does not signal its eventfd (a parked
    /// driver would only be woken to find the work done); after, it is left as it was and
    /// the queue looked at once more, so nothing posted meanwhile goes unseen.
    ///
    /// **The deadline is a request on the ring, not a timeout of the wait.** A wait with a
    /// timeout arms a kernel timer and cancels it when bytes end the wait first, which is
    /// most waits; in a virtual machine each arming and cancelling traps to the hypervisor,
    /// and at 60 000 messages a second that was a fifth of the shard's CPU. Instead one
    /// `IORING_OP_TIMEOUT` request serves every wait with the same deadline (a window of
    /// waits); its completion ends the wait that is in progress when it fires. A caller that
    /// stops waiting before the deadline leaves it in flight: it fires once, for nothing.
    pub fn wait_until(&self, deadline: Instant) -> Waited {
        let inner = &self.0;
        let n = self.pump();
        if n > 0 {
            return Waited::Served(n);
        }
        let mut quiet = self.quiet();
        let mut n = 0;
        let mut waited = false;
        loop {
            {
                let w = inner.window.borrow();
                let fired = w.fired.is_some_and(|f| f >= deadline);
                let coming = w.armed.is_some_and(|(d, _)| d <= deadline);
                // Past the deadline, a timer still to fire for it is waited for (it is due), so
                // that it does not fire later for nothing.
                if fired || (!coming && Instant::now() >= deadline) {
                    break;
                }
            }
            inner.arm_window(deadline);
            let ticks = inner.window.borrow().ticks;
            // EINTR ends the wait like a completion would: look.
            let _ = inner.uring.borrow().submitter().submit_with_args_and_flags(
                1,
                &types::SubmitArgs::new(),
                inner.wait_flags,
            );
            waited = true;
            n += inner.reap(REAP_BUDGET);
            if n > 0 || inner.window.borrow().ticks == ticks {
                // Work, or an interruption: the caller looks before it waits again.
                break;
            }
            // Only a timer fired: this window's (the loop ends) or an earlier one's.
        }
        n += quiet.end();
        if waited {
            inner.bump(|s| {
                s.waits += 1;
                s.waits_served += u64::from(n > 0);
            });
        }
        match (n, waited) {
            (0, true) => Waited::TimedOut,
            (0, false) => Waited::Expired,
            (n, _) => Waited::Served(n),
        }
    }

    fn new() -> io::Result<Ring> {
        let mut uring = IoUring::builder()
            .setup_cqsize(SQ_ENTRIES * 4)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(SQ_ENTRIES)?;
        // SAFETY: eventfd returns a new descriptor or -1.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just created, owned here.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        uring.submitter().register_eventfd(eventfd.as_raw_fd())?;
        uring.completion().disable_eventfd();
        // glommio reads the eventfd through its own ring; it gets a duplicate to own.
        let dup = eventfd.try_clone()?;
        let wait_flags = if uring.params().is_feature_no_iowait() {
            EnterFlags::NO_IOWAIT
        } else {
            EnterFlags::empty()
        };
        let inner = Rc::new(Inner {
            uring: RefCell::new(uring),
            scratch: RefCell::new(vec![0u8; RECV_CHUNK].into_boxed_slice()),
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            driver: RefCell::new(None),
            queued: Cell::new(false),
            _eventfd: eventfd,
            stats: Cell::new(RingStats::default()),
            wait_flags,
            window: RefCell::new(WindowTimer::default()),
        });
        WATCHED.with(|w| {
            for &fd in w.borrow().iter() {
                inner.arm_watch(fd);
            }
        });
        glommio::spawn_local(drive(Rc::downgrade(&inner), dup)).detach();
        Ok(Ring(inner))
    }

    /// Takes a connected, non-blocking socket and arms its read poll; the returned handle
    /// closes it when dropped.
    pub fn adopt(&self, fd: OwnedFd) -> Socket {
        let fd = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let mut slots = self.0.slots.borrow_mut();
        let slot = match self.0.free.borrow_mut().pop() {
            Some(i) => {
                let s = &mut slots[i as usize];
                let gen = s.gen.wrapping_add(1) & 0x00ff_ffff;
                *s = Slot::new(gen, fd);
                i
            }
            None => {
                slots.push(Slot::new(0, fd));
                (slots.len() - 1) as u32
            }
        };
        // Its read poll, for its life (bytes already there count: it starts readable).
        self.0.arm_pollin(slot, &mut slots[slot as usize]);
        self.0.bump(|s| s.sockets += 1);
        Socket {
            ring: self.clone(),
            slot,
            fd,
        }
    }

    /// Takes an accepted glommio stream's socket. glommio's stream has no `into_raw_fd`, so
    /// the ring adopts a duplicate of the descriptor and the stream, dropped here, closes its
    /// own.
    pub fn adopt_glommio(&self, stream: glommio::net::TcpStream) -> io::Result<Socket> {
        // SAFETY: the stream owns the descriptor and is alive until after the duplicate.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(stream.as_raw_fd()) }
            .try_clone_to_owned()?;
        drop(stream);
        Ok(self.adopt(fd))
    }

    /// What this ring did so far.
    pub fn stats(&self) -> RingStats {
        self.0.stats.get()
    }
}

impl Inner {
    fn bump(&self, f: impl FnOnce(&mut RingStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Queues one request; the driver submits it with the rest of the turn's.
    fn push(&self, entry: squeue::Entry) {
        let mut uring = self.uring.borrow_mut();
        // SAFETY: every entry pushed here refers only to a socket descriptor, or (the window
        // timer) to a timespec in `Inner`, which outlives the ring's use of it.
        while unsafe { uring.submission().push(&entry) }.is_err() {
            // The queue is full: hand it to the kernel now.
            let n = uring.submit().unwrap_or(0);
            self.bump(|s| {
                s.submits += 1;
                s.submitted += n as u64;
            });
        }
        drop(uring);
        if !self.queued.replace(true) {
            if let Some(w) = self.driver.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// Arms the socket's read poll. Until its first completion comes, the socket counts as
    /// readable (bytes may have come while no poll was in flight).
    fn arm_pollin(&self, slot: u32, s: &mut Slot) {
        let e = opcode::PollAdd::new(types::Fd(s.fd), (libc::POLLIN | libc::POLLRDHUP) as u32)
            .multi(true)
            .build()
            .user_data(user_data(slot, s.gen, OP_POLLIN));
        s.recv = Recv::Armed;
        s.flags.insert(Flags::READABLE);
        s.in_flight += 1;
        self.push(e);
    }

    fn arm_watch(&self, fd: RawFd) {
        let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(fd as u32, 0, OP_WATCH));
        self.push(e);
    }

    /// Makes sure a timer fires at `deadline` at the latest: one is queued unless the timer in
    /// flight fires by then already.
    fn arm_window(&self, deadline: Instant) {
        let mut w = self.window.borrow_mut();
        if w.armed.is_some_and(|(d, _)| d <= deadline) {
            return;
        }
        w.seq = w.seq.wrapping_add(1);
        let seq = w.seq;
        w.armed = Some((deadline, seq));
        w.ts = types::Timespec::from(deadline.saturating_duration_since(Instant::now()));
        let e = opcode::Timeout::new(&w.ts as *const types::Timespec)
            .build()
            .user_data(user_data(seq, 0, OP_WINDOW));
        drop(w);
        self.bump(|s| s.wait_timers += 1);
        self.push(e);
    }

    fn cancel_pollin(&self, slot: u32, s: &mut Slot) {
        let e = opcode::PollRemove::new(user_data(slot, s.gen, OP_POLLIN))
            .build()
            .user_data(user_data(slot, s.gen, OP_CANCEL));
        s.recv = Recv::Cancelling;
        s.in_flight += 1;
        self.push(e);
    }

    /// Whether the completion queue holds anything (no syscall).
    fn completions_waiting(&self) -> bool {
        !self.uring.borrow_mut().completion().is_empty()
    }

    /// Submits what was queued. Returns whether anything was.
    fn submit(&self) -> bool {
        if !self.queued.replace(false) {
            return false;
        }
        let mut uring = self.uring.borrow_mut();
        if uring.submission().is_empty() {
            return false;
        }
        match uring.submit() {
            Ok(n) => {
                drop(uring);
                self.bump(|s| {
                    s.submits += 1;
                    s.submitted += n as u64;
                });
            }
            Err(e) => {
                // EBUSY/EAGAIN: the completion queue is backed up; reap first, retry next turn.
                drop(uring);
                self.queued.set(true);
                tracing::trace!(error = %e, "io_uring submit deferred");
            }
        }
        true
    }

    /// Runs the ring's pending task work (completions the kernel has not posted yet: with
    /// cooperative task running it waits for our next syscall). Returns whether there was any.
    fn run_task_work(&self) -> bool {
        let mut uring = self.uring.borrow_mut();
        if !uring.submission().taskrun() {
            return false;
        }
        // SAFETY: no submission, no argument: only processes pending completions.
        let _ = unsafe {
            uring
                .submitter()
                .enter::<libc::sigset_t>(0, 0, IORING_ENTER_GETEVENTS, None)
        };
        true
    }

    /// Handles up to `budget` completions. Returns how many, the wait timer's not counted.
    fn reap(&self, budget: usize) -> usize {
        // Copied out in batches so that no borrow of the ring is held while tasks are woken.
        // Left uninitialised: most calls find a few completions, and zeroing the whole batch
        // (1 KiB) at each showed in the profiles.
        let mut done = [const { std::mem::MaybeUninit::<(u64, i32, u32)>::uninit() }; 64];
        let mut handled = 0;
        let ticks = self.window.borrow().ticks;
        loop {
            let mut len = 0;
            {
                let mut uring = self.uring.borrow_mut();
                let mut cq = uring.completion();
                for c in &mut cq {
                    done[len].write((c.user_data(), c.result(), c.flags()));
                    len += 1;
                    if len == done.len() {
                        break;
                    }
                }
            }
            if len == 0 {
                break;
            }
            for entry in &done[..len] {
                // SAFETY: the first `len` entries were written just above.
                let (data, res, flags) = unsafe { entry.assume_init() };
                self.complete(data, res, flags);
            }
            handled += len;
            if handled >= budget {
                break;
            }
        }
        if handled > 0 {
            self.bump(|s| s.completions += handled as u64);
        }
        // The wait timer's completions are not work.
        handled - (self.window.borrow().ticks - ticks)
    }

    /// One completion.
    fn complete(&self, data: u64, res: i32, flags: u32) {
        let (slot, gen, op) = split(data);
        if op == OP_WINDOW {
            let mut w = self.window.borrow_mut();
            w.ticks += 1;
            if let Some((deadline, seq)) = w.armed {
                if seq == slot {
                    w.armed = None;
                    w.fired = Some(deadline);
                }
            }
            return;
        }
        if op == OP_WATCH {
            // The watched descriptor's owner reads it; only re-arm a poll the kernel ended.
            if !cqueue::more(flags) && res >= 0 {
                self.arm_watch(slot as RawFd);
            }
            return;
        }
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get_mut(slot as usize) else {
            return;
        };
        if s.gen != gen {
            // A request of a slot's earlier life (its in-flight count went with it).
            return;
        }
        let last = op != OP_POLLIN || !cqueue::more(flags);
        match op {
            OP_POLLIN => {
                if last {
                    s.recv = Recv::Idle;
                }
                // Readable, or the poll ended (a pause's cancel, an overflowing completion
                // queue, an error): either way a waiting reader looks with a `recv`, and
                // re-arms the poll if it ended. (A reader that paused is not waiting: at worst
                // it is woken once, sees it is paused and waits on.)
                if res > 0 && res & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as i32 != 0 {
                    s.flags.insert(Flags::HANGUP);
                }
                s.flags.insert(Flags::READABLE);
                s.wake(Flags::WANT_READ);
            }
            OP_POLLOUT => {
                s.flags.remove(Flags::POLLOUT_ARMED);
                s.flags.insert(Flags::WRITABLE);
                s.wake(Flags::WANT_WRITE);
            }
            _ => {}
        }
        if last {
            s.in_flight -= 1;
            if s.flags.has(Flags::RELEASED) && s.in_flight == 0 {
                self.free_slot(slot, s);
            }
        }
    }

    fn free_slot(&self, slot: u32, s: &mut Slot) {
        s.forget_waker();
        s.fd = -1;
        self.free.borrow_mut().push(slot);
    }
}

/// The driver task: submits, reaps, and parks on the eventfd when there is nothing to do.
async fn drive(inner: std::rc::Weak<Inner>, eventfd: OwnedFd) {
    use glommio::io::BufferedFile;
    // SAFETY: `eventfd` is owned and handed over; the file closes it.
    let file =
        Rc::new(unsafe { BufferedFile::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(eventfd)) });
    type Wait = Pin<Box<dyn Future<Output = ()>>>;
    let mut wait: Option<Wait> = None;
    // glommio's file read adds a clone of the polling waker to its source's list at every poll
    // while it is pending, and a task's waker count is 16 bits: polled at each of the driver's
    // turns (every accept, every queued request wakes it), a long wait overflowed it and
    // aborted the process (19 000 connections opened without the eventfd firing once). So
    // the read is polled with a waker of its own, once when it starts and then only after
    // that waker fired; the driver's own waker is kept in it, replaced, never piled up.
    let signal = Arc::new(Signal::default());
    let signal_waker = Waker::from(signal.clone());
    poll_fn(move |cx| {
        let Some(inner) = inner.upgrade() else {
            return Poll::Ready(());
        };
        inner.uring.borrow_mut().completion().disable_eventfd();
        signal.set_task(cx.waker());
        // Whether the read is done (polled only when it starts or has fired).
        let read_done = |w: &mut Wait| {
            signal.take_fired()
                && w.as_mut()
                    .poll(&mut Context::from_waker(&signal_waker))
                    .is_ready()
        };
        if wait.as_mut().is_some_and(read_done) {
            wait = None;
        }
        let mut work = 0usize;
        loop {
            let submitted = inner.submit();
            let budget = REAP_BUDGET - work.min(REAP_BUDGET - 1);
            let mut reaped = inner.reap(budget);
            if reaped == 0 && inner.run_task_work() {
                reaped = inner.reap(budget);
            }
            work += reaped;
            if !submitted && reaped == 0 {
                break;
            }
            if work >= REAP_BUDGET {
                // Let the woken tasks run; come back in this same turn.
                *inner.driver.borrow_mut() = Some(cx.waker().clone());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        *inner.driver.borrow_mut() = Some(cx.waker().clone());
        if work > 0 || inner.queued.get() {
            // The tasks just woken will queue more (their wakes of the driver are no-ops while
            // `queued` is already set, so look again after them).
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Park: enable the eventfd, then look once more (see the module doc).
        inner.uring.borrow_mut().completion().enable_eventfd();
        fence(Ordering::SeqCst);
        let pending = !inner.uring.borrow_mut().completion().is_empty();
        if pending {
            inner.uring.borrow_mut().completion().disable_eventfd();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        inner.bump(|s| s.parks += 1);
        let w = wait.get_or_insert_with(|| {
            // A new read is polled once, to start it.
            signal.fired.store(true, Ordering::SeqCst);
            let f = Rc::clone(&file);
            Box::pin(async move {
                let _ = f.read_at(0, 8).await;
            })
        });
        if read_done(w) {
            wait = None;
            // The eventfd had been signalled: there is work.
            inner.uring.borrow_mut().completion().disable_eventfd();
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    })
    .await;
}

/// The waker the driver polls its eventfd read with: records that the read made progress
/// and wakes the driver's task.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Signal {
    fn set_task(&self, waker: &Waker) {
        let mut task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        match task.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *task = Some(waker.clone()),
        }
    }

    fn take_fired(&self) -> bool {
        self.fired.swap(false, Ordering::SeqCst)
    }
}

impl std::task::Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::SeqCst);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(t) = task {
            t.wake();
        }
    }
}

/// A connected socket on the shard's ring. Dropping it cancels its requests and closes it.
pub struct Socket {
    ring: Ring,
    slot: u32,
    fd: RawFd,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("fd", &self.fd).finish()
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Socket {
    /// Reads what the socket has into `out` (appended), up to [`RECV_MAX`] bytes.
    /// `Ready(Ok(0))` is the end of the stream; `Pending` registers the task, which the
    /// socket's read poll wakes when bytes come.
    ///
    /// The bytes are read here, with `recv`, when the reader asks, not when they arrive: a
    /// connection served once per turn reads once per turn whatever arrived meanwhile, and the
    /// acknowledgement of what it read leaves with its answer. (A receive run by the kernel
    /// at each arrival read the same bytes in more, smaller pieces, and a read of more than a
    /// segment's worth since the last answer sent an acknowledgement of its own.) A read
    /// that comes back short leaves the socket empty: the next call waits for the poll
    /// without a syscall.
    pub fn poll_recv(&self, cx: &mut Context<'_>, out: &mut BytesMut) -> Poll<io::Result<usize>> {
        let inner = &self.ring.0;
        if inner.completions_waiting() {
            // Completions posted since the driver last ran (the kernel posts them when this
            // thread returns from any syscall, e.g. the previous task's send): handled now,
            // so this socket's readiness is up to date. This task's read interest is set
            // aside meanwhile (it looks right below), and restored after unless a
            // write-readiness wake-up took the waker (the task was then woken).
            let wanted = {
                let mut slots = inner.slots.borrow_mut();
                let s = &mut slots[self.slot as usize];
                let wanted = s.flags.has(Flags::WANT_READ);
                s.flags.remove(Flags::WANT_READ);
                wanted
            };
            inner.reap(TASK_REAP_BUDGET);
            let mut slots = inner.slots.borrow_mut();
            let s = &mut slots[self.slot as usize];
            if wanted && s.waker.is_some() {
                s.flags.insert(Flags::WANT_READ);
            }
        }
        let mut slots = inner.slots.borrow_mut();
        let s = &mut slots[self.slot as usize];
        if s.error != 0 {
            return Poll::Ready(Err(io::Error::from_raw_os_error(s.error.into())));
        }
        if s.flags.has(Flags::EOF) {
            return Poll::Ready(Ok(0));
        }
        if s.recv == Recv::Idle {
            inner.bump(|st| st.rearms += 1);
            inner.arm_pollin(self.slot, s);
        }
        if s.flags.has(Flags::READABLE) {
            let mut scratch = inner.scratch.borrow_mut();
            let mut total = 0;
            let mut recvs = 0;
            loop {
                recvs += 1;
                // SAFETY: `scratch` is a live buffer of `scratch.len()` bytes, written only by
                // this call; `fd` is this handle's open socket.
                let n = unsafe {
                    libc::recv(
                        self.fd,
                        scratch.as_mut_ptr().cast(),
                        scratch.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n > 0 {
                    let n = n as usize;
                    out.extend_from_slice(&scratch[..n]);
                    total += n;
                    if n < scratch.len() {
                        // Short: no more bytes now (but the end or an error may follow them,
                        // which the poll reported once).
                        if !s.flags.has(Flags::HANGUP) {
                            s.flags.remove(Flags::READABLE);
                        }
                        break;
                    }
                    if total >= RECV_MAX {
                        break;
                    }
                    continue;
                }
                if n == 0 {
                    s.flags.insert(Flags::EOF);
                    break;
                }
                match io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
                {
                    libc::EINTR => {}
                    libc::EAGAIN => {
                        s.flags.remove(Flags::READABLE);
                        break;
                    }
                    // Errno values fit (below 4096); EIO stands for anything else.
                    e => {
                        s.error = i16::try_from(e).unwrap_or(libc::EIO as i16);
                        break;
                    }
                }
            }
            let empty = total == 0 && s.error == 0 && !s.flags.has(Flags::EOF);
            inner.bump(|st| {
                st.recvs += recvs;
                st.empty_recvs += u64::from(empty);
            });
            if total > 0 {
                return Poll::Ready(Ok(total));
            }
            if s.error != 0 {
                return Poll::Ready(Err(io::Error::from_raw_os_error(s.error.into())));
            }
            if s.flags.has(Flags::EOF) {
                return Poll::Ready(Ok(0));
            }
        }
        s.register(Flags::WANT_READ, cx.waker());
        Poll::Pending
    }

    /// Drops the wakers registered for this socket (the task that registered them handed the
    /// socket on; the next poll registers the new owner's).
    pub fn forget_wakers(&self) {
        let mut slots = self.ring.0.slots.borrow_mut();
        slots[self.slot as usize].forget_waker();
    }

    /// Stops watching for bytes until the next [`Socket::poll_recv`] (backpressure: the
    /// kernel's socket buffer fills and TCP pushes back; the paused reader is not woken by
    /// each arrival meanwhile).
    pub fn pause_recv(&self) {
        let inner = &self.ring.0;
        let mut slots = inner.slots.borrow_mut();
        let s = &mut slots[self.slot as usize];
        if s.recv == Recv::Armed {
            inner.cancel_pollin(self.slot, s);
        }
    }

    /// `Ready` once the socket can take more bytes (after a write returned `EAGAIN`).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let inner = &self.ring.0;
        let mut slots = inner.slots.borrow_mut();
        let s = &mut slots[self.slot as usize];
        if s.flags.has(Flags::WRITABLE) {
            s.flags.remove(Flags::WRITABLE);
            return Poll::Ready(());
        }
        if !s.flags.has(Flags::POLLOUT_ARMED) {
            let e = opcode::PollAdd::new(types::Fd(s.fd), libc::POLLOUT as u32)
                .build()
                .user_data(user_data(self.slot, s.gen, OP_POLLOUT));
            s.flags.insert(Flags::POLLOUT_ARMED);
            s.in_flight += 1;
            inner.push(e);
        }
        s.register(Flags::WANT_WRITE, cx.waker());
        Poll::Pending
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        let inner = &self.ring.0;
        let mut slots = inner.slots.borrow_mut();
        let s = &mut slots[self.slot as usize];
        s.flags.insert(Flags::RELEASED);
        s.forget_waker();
        if s.recv == Recv::Armed {
            inner.cancel_pollin(self.slot, s);
        }
        if s.flags.has(Flags::POLLOUT_ARMED) {
            let e = opcode::PollRemove::new(user_data(self.slot, s.gen, OP_POLLOUT))
                .build()
                .user_data(user_data(self.slot, s.gen, OP_CANCEL));
            s.in_flight += 1;
            inner.push(e);
        }
        // In-flight requests hold their own reference to the socket; it is really closed
        // when they end.
        // SAFETY: the descriptor adopted by this handle, closed once here.
        unsafe {
            libc::close(self.fd);
        }
        if s.in_flight == 0 {
            inner.free_slot(self.slot, s);
        }
        inner.bump(|st| st.sockets -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot is idle memory per connection: 96 bytes with a waker per direction, an
    /// `Option<i32>` errno and a `bool` per flag; 64 with an inbox of received bytes; 32 now
    /// that bytes stay in the kernel until read.
    #[test]
    fn a_socket_slot_takes_at_most_32_bytes() {
        let size = std::mem::size_of::<Slot>();
        assert!(size <= 32, "a slot takes {size} bytes");
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count::default());
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(Ordering::SeqCst)
    }

    #[test]
    fn one_waker_serves_both_directions() {
        let (c, w) = counting();
        let mut s = Slot::new(0, -1);
        s.register(Flags::WANT_READ, &w);
        s.register(Flags::WANT_WRITE, &w);
        assert_eq!(
            woken(&c),
            0,
            "the same waker is not woken by its own registration"
        );
        // Bytes: woken, and the waker stays for the write side.
        s.wake(Flags::WANT_READ);
        assert_eq!(woken(&c), 1);
        assert!(s.waker.is_some());
        // Another completion of the receive wakes nobody: the read side is not waited for.
        s.wake(Flags::WANT_READ);
        assert_eq!(woken(&c), 1);
        // Writable: woken, and nothing is waited for any more: the waker goes.
        s.wake(Flags::WANT_WRITE);
        assert_eq!(woken(&c), 2);
        assert!(s.waker.is_none());
        assert!(!s.flags.has(Flags::WANTS));
    }

    #[test]
    fn a_replaced_waker_still_wanted_for_the_other_direction_is_woken() {
        let (a, wa) = counting();
        let (b, wb) = counting();
        let mut s = Slot::new(0, -1);
        s.register(Flags::WANT_READ, &wa);
        // Another waker for the write side: the first one's read wake-up must not be lost.
        s.register(Flags::WANT_WRITE, &wb);
        assert_eq!((woken(&a), woken(&b)), (1, 0));
        // The read interest stays, with the new waker (spurious for it at worst).
        s.wake(Flags::WANT_READ);
        assert_eq!((woken(&a), woken(&b)), (1, 1));
        s.wake(Flags::WANT_WRITE);
        assert_eq!((woken(&a), woken(&b)), (1, 2));
    }

    #[test]
    fn a_waker_replaced_for_the_same_direction_only_is_dropped_quietly() {
        let (a, wa) = counting();
        let (b, wb) = counting();
        let mut s = Slot::new(0, -1);
        s.register(Flags::WANT_READ, &wa);
        s.register(Flags::WANT_READ, &wb);
        s.wake(Flags::WANT_READ);
        assert_eq!((woken(&a), woken(&b)), (0, 1));
    }

    #[test]
    fn forgetting_the_waker_drops_the_interest() {
        let (c, w) = counting();
        let mut s = Slot::new(0, -1);
        s.register(Flags::WANT_READ, &w);
        s.register(Flags::WANT_WRITE, &w);
        s.forget_waker();
        s.wake(Flags::WANT_READ);
        s.wake(Flags::WANT_WRITE);
        assert_eq!(woken(&c), 0);
        assert!(s.waker.is_none());
        // A new owner registers as if the slot were new.
        let (d, wd) = counting();
        s.register(Flags::WANT_WRITE, &wd);
        s.wake(Flags::WANT_WRITE);
        assert_eq!((woken(&c), woken(&d)), (0, 1));
    }

    /// The driver is woken (a request queued) far more often than its eventfd fires: before
    /// the fix every such turn left one more clone of its task's waker with glommio's eventfd
    /// read, and the 16-bit count overflowed (the process aborted) after ≈ 16 000 turns.
    #[test]
    fn the_driver_survives_many_wake_ups_without_the_eventfd_firing() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let ring = Ring::get().expect("ring");
                let inner = &ring.0;
                let parks_before = inner.stats.get().parks;
                for _ in 0..40_000 {
                    // What `push` does once an entry is queued, with nothing queued: the
                    // driver runs a turn, finds no work and parks again.
                    if !inner.queued.replace(true) {
                        if let Some(w) = inner.driver.borrow().as_ref() {
                            w.wake_by_ref();
                        }
                    }
                    futures_lite::future::yield_now().await;
                }
                let parks = inner.stats.get().parks - parks_before;
                assert!(parks >= 20_000, "the driver parked {parks} times");
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    /// A connected socket adopted by the shard's ring, its receive armed with a counting
    /// waker, and the ring's driver parked on its eventfd; the other end is `peer`.
    struct Parked {
        ring: Ring,
        sock: Socket,
        peer: std::net::TcpStream,
        c: Arc<Count>,
        w: Waker,
        out: BytesMut,
    }

    /// Runs `test` on a glommio executor with a [`parked_socket`].
    fn with_parked_socket<F: Future<Output = ()> + 'static>(
        test: impl FnOnce(Parked) -> F + Send + 'static,
    ) {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move { test(parked_socket().await).await })
            .expect("executor")
            .join()
            .expect("join");
    }

    async fn parked_socket() -> Parked {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
        let (ours, _) = listener.accept().expect("accept");
        ours.set_nonblocking(true).expect("nonblocking");
        let ring = Ring::get().expect("ring");
        let sock = ring.adopt(OwnedFd::from(ours));
        let (c, w) = counting();
        let mut out = BytesMut::new();
        assert!(sock
            .poll_recv(&mut Context::from_waker(&w), &mut out)
            .is_pending());
        // Let the driver park on its eventfd. (It may have parked before the poll was queued,
        // which it then has not submitted yet: the tests' first look at the ring does.)
        while ring.stats().parks == 0 {
            futures_lite::future::yield_now().await;
        }
        Parked {
            ring,
            sock,
            peer,
            c,
            w,
            out,
        }
    }

    /// While a task holds [`Ring::quiet`] the eventfd of the parked driver is disabled (the
    /// kernel does not signal it for completions posted meanwhile); dropping the guard
    /// enables it again and hands over at once what was posted meanwhile. Taken while the
    /// eventfd is already disabled (the driver awake), it leaves it disabled.
    #[test]
    fn a_quiet_ring_keeps_its_eventfd_off_and_hands_over_what_came_when_dropped() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock: _sock,
                peer,
                c,
                w: _w,
                out: _out,
            } = p;
            let enabled = || !ring.0.uring.borrow_mut().completion().eventfd_disabled();
            // The read poll in flight (submitted now if the driver has not yet).
            ring.pump();
            assert!(ring.0.uring.borrow_mut().submission().is_empty());
            assert!(enabled());
            let quiet = ring.quiet();
            assert!(!enabled());
            let writer = std::thread::spawn(move || {
                let mut peer = peer;
                peer.write_all(b"ping").expect("write");
                peer
            });
            let _peer = writer.join();
            // The poll's completion is posted when this thread next leaves the kernel.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while ring.0.uring.borrow_mut().completion().is_empty() {
                assert!(std::time::Instant::now() < deadline, "nothing was posted");
                // SAFETY: no arguments; any syscall's exit runs the pending task work.
                unsafe { libc::sched_yield() };
            }
            assert!(!enabled());
            assert_eq!(woken(&c), 0);
            drop(quiet);
            assert!(enabled());
            assert_eq!(woken(&c), 1, "what came was not handed over");
            // With the eventfd already off, as the driver leaves it while it runs.
            ring.0.uring.borrow_mut().completion().disable_eventfd();
            drop(ring.quiet());
            assert!(!enabled());
            ring.0.uring.borrow_mut().completion().enable_eventfd();
        });
    }

    /// A task waiting on the ring ([`Ring::wait`]) gets nothing and 0 when nothing comes
    /// before the timeout, is served by bytes that arrive (woken by them, not by the
    /// timeout: the second wait would give 0 after 10 s), and leaves the eventfd of a parked
    /// driver enabled, as it found it.
    #[test]
    fn a_wait_on_the_ring_ends_with_the_bytes_that_arrive() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock,
                mut peer,
                c,
                w,
                mut out,
            } = p;
            let eventfd_enabled = || !ring.0.uring.borrow_mut().completion().eventfd_disabled();
            assert!(eventfd_enabled());

            assert_eq!(ring.wait(Duration::from_millis(2)), 0);
            assert_eq!(woken(&c), 0);
            assert!(eventfd_enabled());

            let writer = std::thread::spawn(move || {
                peer.write_all(b"ping").expect("write");
                peer
            });
            let mut handled = 0;
            let started = std::time::Instant::now();
            while woken(&c) == 0 {
                let n = ring.wait(Duration::from_secs(10));
                assert!(n > 0, "the wait timed out with the bytes sent");
                handled += n;
            }
            assert!(handled > 0);
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "served by the timeout"
            );
            assert!(eventfd_enabled());
            assert!(matches!(
                sock.poll_recv(&mut Context::from_waker(&w), &mut out),
                Poll::Ready(Ok(4))
            ));
            assert_eq!(&out[..], b"ping");
            // The first wait timed out; a later one counts as served only if it blocked (the
            // bytes may be there before it looks, and then it serves them without waiting).
            let waits = ring.stats();
            assert!(
                waits.waits >= 1 && waits.waits_served < waits.waits,
                "{waits:?}"
            );
            drop(writer.join());
        });
    }

    /// Waits with one deadline share one timer request (no kernel timer armed and cancelled
    /// per wait): a wait ended by bytes leaves it in flight for the next, which ends when it
    /// fires at the deadline (if the bytes came before the first wait looked, that one armed
    /// none and the next arms it); after that, or with a deadline already past, nothing waits and
    /// no timer is armed.
    #[test]
    fn waits_with_one_deadline_share_one_timer() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock: _sock,
                mut peer,
                c,
                ..
            } = p;
            let timers = ring.stats().wait_timers;
            let deadline = Instant::now() + Duration::from_millis(300);

            let writer = std::thread::spawn(move || {
                peer.write_all(b"ping").expect("write");
                peer
            });
            while woken(&c) == 0 {
                assert!(
                    matches!(ring.wait_until(deadline), Waited::Served(_)),
                    "the wait did not end with the bytes"
                );
            }
            assert!(Instant::now() < deadline, "served by the deadline");
            // One timer, or none if the bytes were there before the first wait looked.
            assert!(ring.stats().wait_timers <= timers + 1);

            // Nothing more comes: the same timer (or the first one) ends the next wait, at the
            // deadline; one timer in all for the waits of this deadline.
            assert_eq!(ring.wait_until(deadline), Waited::TimedOut);
            assert!(Instant::now() >= deadline);
            assert_eq!(ring.stats().wait_timers, timers + 1);
            // Its deadline passed: no wait, no timer.
            assert_eq!(ring.wait_until(deadline), Waited::Expired);
            assert_eq!(ring.wait_until(Instant::now()), Waited::Expired);
            assert_eq!(ring.stats().wait_timers, timers + 1);
            drop(writer.join());
        });
    }

    /// A watched descriptor (a doorbell that another thread rings) ends a wait on the ring
    /// as soon as it becomes readable, and again at the next ring (the poll stays armed).
    #[test]
    fn a_watched_descriptor_ends_a_wait() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                use std::io::Write;
                let (read, mut write) = std::os::unix::net::UnixStream::pair().expect("pair");
                watch(read.as_raw_fd());
                let ring = Ring::get().expect("ring");
                assert_eq!(ring.wait(Duration::from_millis(2)), 0);
                for _ in 0..2 {
                    let started = std::time::Instant::now();
                    let writer = std::thread::spawn(move || {
                        write.write_all(&[1]).expect("write");
                        write
                    });
                    let n = ring.wait(Duration::from_secs(10));
                    assert!(n > 0, "the wait timed out with the doorbell rung");
                    assert!(started.elapsed() < Duration::from_secs(10));
                    write = writer.join().expect("writer");
                    // Its owner reads it.
                    let mut b = [0u8; 8];
                    assert_eq!(std::io::Read::read(&mut &read, &mut b).expect("read"), 1);
                }
            })
            .expect("executor")
            .join()
            .expect("join");
    }

    /// Polls `sock` until it is ready, waiting on the ring between polls (at most 10 s).
    fn recv_ready(ring: &Ring, sock: &Socket, w: &Waker, out: &mut BytesMut) -> io::Result<usize> {
        let started = Instant::now();
        loop {
            if let Poll::Ready(r) = sock.poll_recv(&mut Context::from_waker(w), out) {
                return r;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing to read after 10 s"
            );
            ring.wait(Duration::from_millis(100));
        }
    }

    /// Bytes are read when the reader asks, with one `recv` for what came meanwhile; a read
    /// that came back short left the socket empty, so the next poll waits without a syscall;
    /// the end of the stream comes after the bytes before it.
    #[test]
    fn bytes_are_read_when_asked_and_the_end_comes_after_them() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock,
                mut peer,
                c,
                w,
                mut out,
            } = p;
            for part in [&b"one "[..], b"two ", b"three"] {
                peer.write_all(part).expect("write");
            }
            while out.len() < 13 {
                let n = recv_ready(&ring, &sock, &w, &mut out).expect("read");
                assert!(n > 0, "the end of the stream before the bytes");
            }
            assert_eq!(&out[..], b"one two three");
            assert!(woken(&c) >= 1, "the bytes woke the reader");
            let recvs = ring.stats().recvs;
            assert!(sock
                .poll_recv(&mut Context::from_waker(&w), &mut out)
                .is_pending());
            assert_eq!(
                ring.stats().recvs,
                recvs,
                "a poll after a short read made a recv"
            );
            peer.write_all(b" four").expect("write");
            drop(peer);
            let mut got = BytesMut::new();
            loop {
                match recv_ready(&ring, &sock, &w, &mut got).expect("read") {
                    0 => break,
                    _ => continue,
                }
            }
            assert_eq!(&got[..], b" four");
            // The end stays the end, without another recv.
            let recvs = ring.stats().recvs;
            assert!(matches!(
                sock.poll_recv(&mut Context::from_waker(&w), &mut got),
                Poll::Ready(Ok(0))
            ));
            assert_eq!(ring.stats().recvs, recvs);
        });
    }

    /// A large write comes in reads of at most `RECV_MAX` bytes, in order, then the end.
    #[test]
    fn a_large_write_is_read_in_bounded_pieces() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock,
                mut peer,
                w,
                ..
            } = p;
            let data: Vec<u8> = (0..3 * RECV_MAX + 123).map(|i| (i % 251) as u8).collect();
            let sent = data.clone();
            let writer = std::thread::spawn(move || {
                peer.write_all(&sent).expect("write");
            });
            let mut got = BytesMut::new();
            loop {
                let mut piece = BytesMut::new();
                let n = recv_ready(&ring, &sock, &w, &mut piece).expect("read");
                if n == 0 {
                    break;
                }
                assert_eq!(n, piece.len());
                assert!(n <= RECV_MAX, "one read took {n} bytes");
                got.extend_from_slice(&piece);
            }
            writer.join().expect("writer");
            assert!(
                got[..] == data[..],
                "{} of {} bytes, in order",
                got.len(),
                data.len()
            );
        });
    }

    /// A paused socket is not watched: bytes that come meanwhile wake nobody (they stay in
    /// the kernel, which pushes back on the peer) and are read at the next poll.
    #[test]
    fn a_paused_socket_is_not_woken_and_reads_what_came_when_resumed() {
        with_parked_socket(|p| async move {
            use std::io::Write;
            let Parked {
                ring,
                sock,
                mut peer,
                c,
                w,
                mut out,
            } = p;
            sock.pause_recv();
            let idle = |ring: &Ring| ring.0.slots.borrow()[sock.slot as usize].recv == Recv::Idle;
            let started = Instant::now();
            while !idle(&ring) {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the pause never ended the poll"
                );
                ring.wait(Duration::from_millis(100));
            }
            let woken_by_pause = woken(&c);
            peer.write_all(b"meanwhile").expect("write");
            // Nothing is watching the socket: the wait runs out, nobody is woken.
            assert_eq!(ring.wait(Duration::from_millis(50)), 0);
            assert_eq!(woken(&c), woken_by_pause);
            let n = recv_ready(&ring, &sock, &w, &mut out).expect("read");
            assert_eq!(&out[..n], b"meanwhile");
            assert!(!idle(&ring), "the poll is armed again");
        });
    }
}
