//! Open connections without a task of their own.
//!
//! A connection runs as a glommio task through its handshake (TLS, the HTTP phase, the
//! upgrade or CONNECT, authentication, middleware): that part awaits hooks and is rare. Once
//! it is open, the task hands the connection's state — its client and socket, its
//! [`Session`], its [`Drive`] state and whatever it must hold until it ends (the per-IP slot)
//! — to its shard's [`Table`] and ends. An idle open connection is then only that state: no
//! task header, no future (an `async fn`'s state machine is as large as its largest await
//! point; a task per idle connection cost ≈ 0.8 KiB of the 1.9 KiB measured in PERF.md).
//!
//! One task per shard ([`run`]) serves the table. Each connection's waker is a plain word,
//! its shard's tag and its slot, with no allocation and no reference count: waking it queues
//! the slot on the shard's ready list (once) and wakes the serving task, which polls the
//! ready connections' [`Drive`] in turn, as glommio polled their tasks before. The wakers are
//! handed to the ring's slots, the client (queue pushes, timers, close requests) and the
//! mesh overflow list exactly as a task's were.
//!
//! Each open connection's one timer (its heartbeat, or its close grace) is a word in the
//! table, beside its slot: when it is due, in shard milliseconds. A second task per shard
//! ([`sweep`]) scans those words once per timer tick while the table holds connections, and
//! wakes the ones whose time has come. A scan of a dense array of 4-byte words costs less than
//! a timer-wheel entry per connection kept and moved (40 bytes, plus its handle): at 60 000
//! connections on a shard it is 240 KB read every 100 ms. Handshakes, which are few at a time,
//! keep the shard's wheel.
//!
//! The table is indexed by the client's slot in the hub (unique on its shard while the
//! client lives). A wake-up for a slot with no open connection (one still in its handshake,
//! or one that ended and whose slot was reused) is ignored: the worst a stale waker can do
//! is poll a connection once for nothing.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::{Duration, Instant};

use shardcast_shards::uring::{Ring, Waited};

use super::{Drive, End, Io, Session, Shared};
use crate::hub::client::Client;
use crate::protect::{Guard, HeldIp, IpSlot};

/// Connections polled per turn of the serving task before it lets the shard's other tasks
/// (mesh inbox, timers, accepts, handshakes) run.
const TURN_BUDGET: usize = 1024;
/// How long the serving task may wait on the shard's ring for more bytes in one poll, before
/// it parks and lets the reactor turn: the most the shard's other tasks wait while traffic
/// flows (the mesh and shutdown doorbells end a wait at once; glommio's timers and accepts do
/// not). One timer per window (`Ring::wait_until`): at thin echo at 60 000 messages/s, 1 ms
/// took the server's CPU from 67 % to 59 % against 250 µs (PERF.md).
const WAIT_BUDGET: Duration = Duration::from_millis(1);
/// Connections served between two looks at the ring within a batch: input that arrived
/// meanwhile for a connection that fans out is served before the rest of the batch.
const LOOK_EVERY: usize = 32;
/// Sources are served within a batch only while the shard's queued output is below this.
/// Above it the subscribers are not keeping up with what was read, and reading more would only
/// queue more: sources are then served once per pass, in first-come order, as before (the
/// publisher's socket, not the shard's memory, holds the rest).
const SOURCES_FIRST_BELOW: usize = 8 << 20;
/// Messages queued for other connections in one service (room publishes, broadcasts) that make
/// a connection a source (its input fans out: a publisher), served ahead of connections that
/// only have output waiting.
const FANS_OUT: u64 = 16;

/// An open connection in the table.
pub(crate) trait OpenConn {
    /// Runs it as far as it can go; `Ready` once it has ended ([`OpenConn::finish`] follows).
    fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared) -> Poll<()>;
    /// Unregisters it (hooks, rooms, the hub's slot), closes the socket and releases its
    /// place in the per-IP count.
    fn finish(self: Box<Self>, shared: &Shared);
    /// Drops it without its hooks (the shard is going away), releasing only its place in the
    /// per-IP count (`guard` is process-wide).
    fn discard(self: Box<Self>, guard: &Guard);
}

/// An open connection: its client and socket, its session, the open phase's state, and its
/// place in the per-IP count, released when it ends. (No liveness mark: the table's count
/// stands for it in the shutdown drain.)
pub(crate) struct Open<S> {
    client: Rc<Client>,
    io: Io,
    session: S,
    drive: Drive,
    ip: HeldIp,
}

impl<S: Session> Open<S> {
    /// Starts the open phase of `client` on `io` (arms the heartbeat, drops the handshake's
    /// buffer).
    pub(crate) fn new(
        client: Rc<Client>,
        mut io: Io,
        session: S,
        ip: IpSlot,
        shared: &Shared,
    ) -> Self {
        let drive = Drive::start(&mut io, shared, &client);
        let ip = ip.into_held(client.peer().ip());
        Open {
            client,
            io,
            session,
            drive,
            ip,
        }
    }
}

impl<S: Session> OpenConn for Open<S> {
    fn poll(&mut self, cx: &mut Context<'_>, shared: &Shared) -> Poll<()> {
        let client = &self.client;
        match self
            .drive
            .poll(cx, &mut self.io, &mut self.session, shared, client)
        {
            Poll::Pending => Poll::Pending,
            Poll::Ready(End::Failed(e)) => {
                tracing::debug!(
                    client = %client.id,
                    transport = ?client.transport(),
                    error = %e,
                    "connection failed"
                );
                Poll::Ready(())
            }
            Poll::Ready(End::Closed | End::Abandoned) => Poll::Ready(()),
        }
    }

    fn finish(self: Box<Self>, shared: &Shared) {
        let Open {
            client,
            io,
            session,
            ip,
            ..
        } = *self;
        drop(session);
        super::finish(&client, io, shared, true);
        ip.release(&shared.app.guard, client.peer().ip());
    }

    fn discard(self: Box<Self>, guard: &Guard) {
        self.ip.release(guard, self.client.peer().ip());
    }
}

/// A slot's timer word: not armed.
const UNARMED: u32 = 0;
/// A slot's timer word: it fired, and the connection has not seen it yet.
const FIRED: u32 = 1;

/// When a timer word set at shard time `now` (ms) for `after` is due: the low 32 bits of the
/// deadline, never [`UNARMED`] or [`FIRED`] (a deadline that would be is 1–2 ms late).
fn due_word(now: u64, after: Duration) -> u32 {
    let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    // Compared modulo 2^32 (see `passed`): at most 2^31 − 1 ms ahead.
    let word = now.wrapping_add(after.min(MAX_TIMER_MS)) as u32;
    word.max(FIRED + 1)
}

/// The longest a connection's timer can be set for (≈ 24.8 days); the configuration keeps the
/// heartbeat interval under a day.
const MAX_TIMER_MS: u64 = (1 << 31) - 1;

/// Whether the deadline `word` has passed at shard time `now` (modulo 2^32, so correct while
/// deadlines are less than 2^31 ms away, which [`due_word`] ensures).
fn passed(word: u32, now: u32) -> bool {
    now.wrapping_sub(word) as i32 >= 0
}

/// A shard's open connections, by client slot.
#[derive(Default)]
pub(crate) struct Table {
    conns: RefCell<Vec<Option<Box<dyn OpenConn>>>>,
    /// Each slot's timer word: [`UNARMED`], [`FIRED`], or when it is due (see [`due_word`]).
    due: RefCell<Vec<u32>>,
    /// Connections in the table (or being polled): the shutdown drain waits for 0.
    count: Cell<usize>,
    /// The sweeping task, parked while the table is empty.
    sweeper: RefCell<Option<Waker>>,
}

impl Table {
    /// Takes `conn` over from its handshake task and polls it soon.
    pub(crate) fn insert(&self, slot: u32, conn: Box<dyn OpenConn>) {
        {
            let mut conns = self.conns.borrow_mut();
            let i = slot as usize;
            if conns.len() <= i {
                conns.resize_with(i + 1, || None);
            }
            debug_assert!(conns[i].is_none(), "slot {slot} holds an open connection");
            conns[i] = Some(conn);
        }
        self.count.set(self.count.get() + 1);
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
        schedule(slot);
    }

    /// Sets the timer of the connection in `slot` (in the table, or about to be) to fire
    /// `after` from shard time `now`, replacing what it was set to.
    pub(crate) fn arm(&self, slot: u32, now: u64, after: Duration) {
        let mut due = self.due.borrow_mut();
        let i = slot as usize;
        if due.len() <= i {
            due.resize(i + 1, UNARMED);
        }
        due[i] = due_word(now, after);
    }

    /// Whether the timer of the connection in `slot` fired since it last looked (it is then
    /// unarmed until set again).
    pub(crate) fn take_fired(&self, slot: u32) -> bool {
        let mut due = self.due.borrow_mut();
        match due.get_mut(slot as usize) {
            Some(w) if *w == FIRED => {
                *w = UNARMED;
                true
            }
            _ => false,
        }
    }

    /// Fires the timers due at shard time `now` (wakes their connections). Returns how many.
    fn sweep(&self, now: u64) -> usize {
        let now = now as u32;
        let mut fired = 0;
        for (slot, w) in self.due.borrow_mut().iter_mut().enumerate() {
            if *w > FIRED && passed(*w, now) {
                *w = FIRED;
                fired += 1;
                schedule(slot as u32);
            }
        }
        fired
    }

    fn take(&self, slot: u32) -> Option<Box<dyn OpenConn>> {
        self.conns
            .borrow_mut()
            .get_mut(slot as usize)
            .and_then(Option::take)
    }

    fn put(&self, slot: u32, conn: Box<dyn OpenConn>) {
        self.conns.borrow_mut()[slot as usize] = Some(conn);
    }

    /// Counts a connection that ended (it was taken out and finished) and unarms its timer.
    fn ended(&self, slot: u32) {
        if let Some(w) = self.due.borrow_mut().get_mut(slot as usize) {
            *w = UNARMED;
        }
        self.count.set(self.count.get() - 1);
    }

    /// Open connections.
    pub(crate) fn count(&self) -> usize {
        self.count.get()
    }

    /// Drops every connection left (the shard is going away without its drain: sockets are
    /// closed by their handles, no hooks run, their places in the per-IP count in `guard` are
    /// given back). Breaks the cycle table → connection → shard.
    pub(crate) fn clear(&self, guard: &Guard) {
        let conns = std::mem::take(&mut *self.conns.borrow_mut());
        self.due.borrow_mut().clear();
        self.count.set(0);
        self.sweeper.borrow_mut().take();
        for conn in conns.into_iter().flatten() {
            conn.discard(guard);
        }
    }
}

/// Serves the shard's table: polls the connections whose wakers fired, forever.
///
/// **Sources first.** A connection whose last service queued [`FANS_OUT`] or more messages for
/// others (a publisher: its input becomes output for many) is a *source*, and a ready source is served
/// before connections that only have output waiting: at the start of every batch, and within
/// a batch, which looks at the ring every [`LOOK_EVERY`] connections served. So a publish that
/// arrives while the shard is writing the previous ones to a thousand subscribers is read at
/// once, and the subscribers not yet written in this pass carry it in the same write (a wake-up
/// for a connection already taken for the batch and not yet served is absorbed by the service
/// to come). Without it, the publish waited for the whole pass, and then for its own: a
/// delivery waited up to two passes, now up to one (PERF.md, "Sources first"). Connections
/// that fan out nothing (echo, subscribers) keep the plain first-come order, each served once
/// per pass; while the shard knows no source, a batch is served without looking at the ring
/// in between (a look that finds nothing may cost a syscall: at thin echo, 1 000 connections at
/// 60 000 round trips/s, that was 3–4 points more of the core). Under overload (more than [`SOURCES_FIRST_BELOW`] queued on the shard) a source is
/// read once per pass, so that input is not taken faster than the subscribers drain it.
pub(crate) async fn run(shared: Rc<Shared>) {
    let mut batch: Vec<u32> = Vec::new();
    let mut sources: Vec<u32> = Vec::new();
    let tag = READY.with(|r| r.tag);
    // While work keeps coming, the end of the window in which this task may wait on the ring
    // rather than park, and whether it let the shard's other tasks run before waiting.
    let mut window: Option<Instant> = None;
    let mut yielded = false;
    let mut lulls = Lulls::default();
    let serve = |slot: u32| {
        READY.with(|r| r.serving(slot));
        let Some(mut conn) = shared.opens.take(slot) else {
            return;
        };
        let waker = waker_of(tag, slot);
        let fanned = shared.hub.fanned_out();
        match conn.poll(&mut Context::from_waker(&waker), &shared) {
            Poll::Pending => {
                shared.opens.put(slot, conn);
                let source = shared.hub.fanned_out() - fanned >= FANS_OUT;
                READY.with(|r| r.served(slot, source));
            }
            Poll::Ready(()) => {
                conn.finish(&shared);
                shared.opens.ended(slot);
                shared.check_drained();
                READY.with(|r| r.served(slot, false));
            }
        }
    };
    poll_fn(|cx| {
        let mut served = 0;
        // This task looks at the ring itself while it runs: no eventfd wake-ups meanwhile.
        // Held to the end of this poll, so it is dropped (and what came meanwhile handed
        // over) after this task has registered for those wake-ups below.
        let current = Ring::current();
        let _quiet = current.as_ref().map(Ring::quiet);
        loop {
            READY.with(|r| r.take(&mut batch, TURN_BUDGET.saturating_sub(served)));
            let ring = Ring::current();
            for (i, &slot) in batch.iter().enumerate() {
                serve(slot);
                if (i + 1) % LOOK_EVERY == 0
                    && i + 1 < batch.len()
                    && READY.with(|r| r.known_sources.get() > 0)
                    && shared.hub.output_queued() < SOURCES_FIRST_BELOW
                {
                    if let Some(ring) = &ring {
                        ring.pump();
                    }
                    READY.with(|r| r.take_sources(&mut sources));
                    served += sources.len();
                    for s in sources.drain(..) {
                        serve(s);
                    }
                }
            }
            served += batch.len();
            batch.clear();
            if served >= TURN_BUDGET || READY.with(|r| !r.is_empty()) {
                break;
            }
            // Nothing ready. Before parking, and paying a reactor turn to learn of the next
            // bytes, look at the ring (the turn's sends may have filled it: the kernel posts
            // what arrived when the thread returns from a syscall), then wait on it for what
            // is left of the window.
            let Some(ring) = ring else { break };
            if ring.pump() == 0 {
                let until = *window.get_or_insert_with(|| Instant::now() + WAIT_BUDGET);
                if glommio::executor().need_preempt() || !lulls.try_wait() {
                    break;
                }
                if !yielded {
                    // Waiting blocks the thread: let every other task that is ready run
                    // first (this comes back in the same reactor turn).
                    yielded = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                yielded = false;
                match ring.wait_until(until) {
                    Waited::Served(_) => lulls.waited(true),
                    Waited::TimedOut => {
                        lulls.waited(false);
                        break;
                    }
                    // The window ran out while serving: nothing to learn about lulls.
                    Waited::Expired => break,
                }
            }
            if READY.with(|r| r.is_empty()) {
                // What came was for tasks of their own (handshakes): let them run.
                break;
            }
        }
        window = None;
        yielded = false;
        READY.with(|r| {
            if r.is_empty() {
                r.park(cx.waker());
            } else {
                // More became ready during this turn: let the other tasks run, then serve them.
                cx.waker().wake_by_ref();
            }
        });
        Poll::<()>::Pending
    })
    .await
}

/// Whether waiting on the ring pays: a wait that ends with completions saves a reactor turn;
/// one that times out costs a syscall and a timer on top of the park that follows. After a
/// timed-out wait the next 1, 2, 4 … 64 chances to wait are skipped (parked right away), and a
/// served wait starts over, so a shard whose traffic comes in gaps longer than the window
/// (a few messages a second, or a publish every few milliseconds) stops waiting.
#[derive(Debug, Default)]
struct Lulls {
    /// Chances to wait still to skip.
    skip: u32,
    /// How many the last timed-out wait set to skip.
    backoff: u32,
}

impl Lulls {
    /// Whether to wait at this chance.
    fn try_wait(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            false
        } else {
            true
        }
    }

    /// A wait ended, `served` (completions came) or timed out.
    fn waited(&mut self, served: bool) {
        if served {
            self.backoff = 0;
        } else {
            self.backoff = (self.backoff * 2).clamp(1, 64);
            self.skip = self.backoff;
        }
    }
}

/// Fires the open connections' timers: once per `tick` while the table holds connections
/// (so a timer fires at most a tick, plus scheduling delay, late), parked while it is empty.
pub(crate) async fn sweep(shared: Rc<Shared>, tick: Duration) {
    loop {
        poll_fn(|cx| {
            if shared.opens.count() > 0 {
                Poll::Ready(())
            } else {
                *shared.opens.sweeper.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        glommio::timer::sleep(tick).await;
        shared.opens.sweep(shared.hub.now_ms());
    }
}

/// The shard's ready list (one per thread: a shard is a thread).
struct Ready {
    /// This thread's tag, in every waker it makes (a waker woken on another thread is a bug,
    /// and ignored there).
    tag: u32,
    /// Ready connections, oldest first.
    slots: RefCell<Vec<u32>>,
    /// Ready sources (connections that fanned out when last served), oldest first: taken
    /// before `slots`.
    sources: RefCell<Vec<u32>>,
    /// Per slot: [`QUEUED`] (on a list, or taken for the batch being served and not yet
    /// served: a wake-up then adds nothing) and [`SOURCE`].
    flags: RefCell<Vec<u8>>,
    /// How many slots are sources: with none (echo, no publisher), batches are served without
    /// looking at the ring in between, as before sources were known.
    known_sources: Cell<u32>,
    /// The serving task, parked.
    server: RefCell<Option<Waker>>,
    /// Whether the serving task is parked (a wake-up then wakes it).
    parked: Cell<bool>,
}

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

thread_local! {
    static READY: Ready = Ready {
        tag: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
        slots: RefCell::new(Vec::new()),
        sources: RefCell::new(Vec::new()),
        flags: RefCell::new(Vec::new()),
        known_sources: Cell::new(0),
        server: RefCell::new(None),
        parked: Cell::new(false),
    };
}

/// [`Ready::flags`]: the slot will be served (it is on a list or in the batch being served).
const QUEUED: u8 = 1;
/// [`Ready::flags`]: the slot's last service fanned out ([`FANS_OUT`]).
const SOURCE: u8 = 2;

impl Ready {
    fn push(&self, slot: u32) {
        let source = {
            let mut flags = self.flags.borrow_mut();
            let i = slot as usize;
            if flags.len() <= i {
                flags.resize(i + 1, 0);
            }
            if flags[i] & QUEUED != 0 {
                return;
            }
            flags[i] |= QUEUED;
            flags[i] & SOURCE != 0
        };
        if source {
            self.sources.borrow_mut().push(slot);
        } else {
            self.slots.borrow_mut().push(slot);
        }
        if self.parked.replace(false) {
            if let Some(w) = self.server.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Moves up to `max` ready slots into `out`: sources first, then the rest, each oldest
    /// first. They stay queued until [`Ready::serving`]: a wake-up before then is absorbed.
    fn take(&self, out: &mut Vec<u32>, max: usize) {
        let mut left = max;
        for list in [&self.sources, &self.slots] {
            let mut list = list.borrow_mut();
            let n = list.len().min(left);
            out.extend(list.drain(..n));
            left -= n;
        }
    }

    /// Moves the ready sources into `out` (oldest first); they stay queued like [`Ready::take`]'s.
    fn take_sources(&self, out: &mut Vec<u32>) {
        out.append(&mut self.sources.borrow_mut());
    }

    /// `slot` is about to be served: a wake-up from now on queues it again.
    fn serving(&self, slot: u32) {
        if let Some(f) = self.flags.borrow_mut().get_mut(slot as usize) {
            *f &= !QUEUED;
        }
    }

    /// `slot` was served; `source`: the service queued [`FANS_OUT`] or more messages for
    /// other connections (`Hub::fanned_out`).
    fn served(&self, slot: u32, source: bool) {
        if let Some(f) = self.flags.borrow_mut().get_mut(slot as usize) {
            let was = *f & SOURCE != 0;
            if source != was {
                *f ^= SOURCE;
                let n = self.known_sources.get();
                self.known_sources.set(if source { n + 1 } else { n - 1 });
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty() && self.sources.borrow().is_empty()
    }

    fn park(&self, waker: &Waker) {
        let mut server = self.server.borrow_mut();
        match server.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *server = Some(waker.clone()),
        }
        self.parked.set(true);
    }
}

/// Queues `slot` on this thread's ready list.
fn schedule(slot: u32) {
    let _ = READY.try_with(|r| r.push(slot));
}

const _: () = assert!(
    usize::BITS >= 64,
    "wakers pack a tag and a slot into one word"
);

/// The waker of the open connection in `slot` on the shard whose thread has `tag`.
fn waker_of(tag: u32, slot: u32) -> Waker {
    let word = ((tag as usize) << 32) | slot as usize;
    // SAFETY: the vtable's functions treat the data as a plain word (never dereferenced);
    // clone copies it, drop does nothing.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::without_provenance(word), &VTABLE)) }
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone_word, wake_word, wake_word, drop_word);

unsafe fn clone_word(data: *const ()) -> RawWaker {
    RawWaker::new(data, &VTABLE)
}

unsafe fn wake_word(data: *const ()) {
    let word = data.addr();
    let tag = (word >> 32) as u32;
    let _ = READY.try_with(|r| {
        if r.tag == tag {
            r.push(word as u32);
        } else {
            debug_assert!(false, "an open connection's waker woken on another thread");
        }
    });
}

unsafe fn drop_word(_: *const ()) {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waker of `slot` on this thread's shard.
    fn waker(slot: u32) -> Waker {
        waker_of(READY.with(|r| r.tag), slot)
    }

    #[test]
    fn a_slot_is_queued_once_and_served_oldest_first() {
        let w3 = waker(3);
        let w1 = waker(1);
        w3.wake_by_ref();
        w1.wake_by_ref();
        waker(3).wake();
        let mut out = Vec::new();
        READY.with(|r| r.take(&mut out, 16));
        assert_eq!(out, vec![3, 1]);
        // Taken for the batch but not yet served: the service to come absorbs a wake-up.
        w3.wake_by_ref();
        assert!(READY.with(|r| r.is_empty()));
        // Being served: it may be queued again.
        READY.with(|r| r.serving(3));
        w3.wake_by_ref();
        out.clear();
        READY.with(|r| r.take(&mut out, 16));
        assert_eq!(out, vec![3]);
        assert!(READY.with(|r| r.is_empty()));
    }

    /// Serves `slot` as `run` does, waking `fans` other slots (from 100 up) meanwhile: a
    /// fan-out to that many.
    fn serve_waking(slot: u32, fans: u32) {
        READY.with(|r| r.serving(slot));
        for s in 100..100 + fans {
            waker(s).wake();
        }
        READY.with(|r| r.served(slot, u64::from(fans) >= FANS_OUT));
    }

    #[test]
    fn a_connection_that_fans_out_is_served_first_next_time() {
        let mut out = Vec::new();
        for s in [1, 2] {
            waker(s).wake();
        }
        READY.with(|r| r.take(&mut out, 16));
        serve_waking(1, 0);
        serve_waking(2, FANS_OUT as u32);
        assert_eq!(READY.with(|r| r.known_sources.get()), 1);
        out.clear();
        READY.with(|r| r.take(&mut out, 4));
        assert_eq!(out, vec![100, 101, 102, 103]);
        for &s in &out {
            READY.with(|r| r.serving(s));
        }
        // Ready again, behind output-only connections: the source comes first, from the
        // batch's start and from a look within the batch.
        waker(1).wake();
        waker(2).wake();
        let mut sources = Vec::new();
        READY.with(|r| r.take_sources(&mut sources));
        assert_eq!(sources, vec![2]);
        READY.with(|r| r.serving(2));
        waker(2).wake();
        out.clear();
        READY.with(|r| r.take(&mut out, 3));
        assert_eq!(out, vec![2, 104, 105], "the source, then the oldest others");
        // A service that fans out less makes it an ordinary connection again. Of its wake-ups,
        // 104 and 105 (taken, not yet served) and 106..=114 (still queued) are absorbed;
        // 100..=103 (served) are queued again.
        serve_waking(2, FANS_OUT as u32 - 1);
        READY.with(|r| r.serving(2));
        waker(2).wake();
        let mut rest = Vec::new();
        READY.with(|r| r.take(&mut rest, usize::MAX));
        let mut expect: Vec<u32> = (106..=115).collect();
        expect.extend([1, 100, 101, 102, 103, 2]);
        assert_eq!(rest, expect, "back in first-come order");
        assert_eq!(READY.with(|r| r.known_sources.get()), 0);
    }

    #[test]
    fn waiting_backs_off_after_timeouts_and_starts_over_when_served() {
        let mut l = Lulls::default();
        assert!(l.try_wait());
        let skipped = |l: &mut Lulls| {
            let mut n = 0;
            while !l.try_wait() {
                n += 1;
            }
            n
        };
        l.waited(false);
        assert_eq!(skipped(&mut l), 1);
        l.waited(false);
        assert_eq!(skipped(&mut l), 2);
        l.waited(false);
        assert_eq!(skipped(&mut l), 4);
        for _ in 0..10 {
            l.waited(false);
        }
        assert_eq!(skipped(&mut l), 64);
        l.waited(true);
        assert!(l.try_wait());
        l.waited(false);
        assert_eq!(skipped(&mut l), 1);
    }

    #[test]
    fn take_respects_its_budget() {
        for s in 0..5 {
            waker(s).wake();
        }
        let mut out = Vec::new();
        READY.with(|r| r.take(&mut out, 2));
        assert_eq!(out, vec![0, 1]);
        out.clear();
        READY.with(|r| r.take(&mut out, 16));
        assert_eq!(out, vec![2, 3, 4]);
    }

    #[test]
    fn a_timer_fires_once_when_due_and_not_before() {
        let t = Table::default();
        let tick = Duration::from_millis(100);
        t.arm(4, 1_000, tick);
        t.arm(6, 1_000, Duration::from_secs(30));
        let mut out = Vec::new();
        READY.with(|r| r.take(&mut out, 16));
        out.clear();
        assert_eq!(t.sweep(1_099), 0);
        assert!(!t.take_fired(4));
        assert_eq!(t.sweep(1_100), 1);
        READY.with(|r| r.take(&mut out, 16));
        assert_eq!(out, vec![4], "the due connection is woken");
        // Fired once: a later sweep leaves it alone until it is armed again.
        assert_eq!(t.sweep(5_000), 0);
        assert!(t.take_fired(4));
        assert!(!t.take_fired(4));
        assert!(!t.take_fired(6));
        assert!(!t.take_fired(99), "a slot never armed");
        // Re-arming replaces the deadline; an ended connection's timer is gone.
        t.arm(6, 5_000, tick);
        t.count.set(1);
        t.ended(6);
        assert_eq!(t.sweep(1_000_000), 0);
    }

    #[test]
    fn timer_words_compare_across_the_32_bit_wrap() {
        // Shard time just below 2^32 ms (≈ 49.7 days), deadline just past it.
        let now = (1u64 << 32) - 50;
        let w = due_word(now, Duration::from_millis(100));
        assert!(w < 100, "wrapped: {w}");
        assert!(!passed(w, now as u32));
        assert!(!passed(w, (now + 99) as u32));
        assert!(passed(w, (now + 100) as u32));
        assert!(passed(w, (now + 10_000) as u32));
        // The words reserved for "unarmed" and "fired" are never a deadline.
        assert!(due_word((1u64 << 32) - 1, Duration::from_millis(1)) > FIRED);
        // A timer set for longer than the word can say fires at its limit, not at once.
        let far = due_word(now, Duration::from_secs(100 * 24 * 3600));
        assert!(!passed(far, (now + MAX_TIMER_MS - 1) as u32));
    }

    #[test]
    fn wakers_of_one_slot_are_the_same_waker() {
        assert!(waker(7).will_wake(&waker(7)));
        assert!(!waker(7).will_wake(&waker(8)));
    }

    #[test]
    fn a_wake_up_wakes_the_parked_server_once() {
        use std::sync::atomic::AtomicUsize;
        use std::sync::Arc;
        struct Count(AtomicUsize);
        impl std::task::Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let server = Waker::from(count.clone());
        READY.with(|r| r.park(&server));
        waker(9).wake_by_ref();
        waker(10).wake_by_ref();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        let mut out = Vec::new();
        READY.with(|r| r.take(&mut out, 16));
        assert_eq!(out, vec![9, 10]);
    }
}
