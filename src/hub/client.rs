//! The part of a connection the rest of its shard can touch: its id, its write queue, its
//! rooms, and the flags that tell its connection to act.
//!
//! The socket itself belongs to the connection (`conn/`: its handshake task, then the shard's
//! table of open connections). Everything else on the shard — fan-out, timers, handlers —
//! talks to a connection through this struct: it queues frames and wakes the connection,
//! which writes everything queued in one `sendmsg` when it next runs. What few connections
//! use is allocated at first use (`Extra`): an idle connection's memory counts.
//! Single-threaded by construction (`Rc`, `Cell`, `RefCell`): a client never leaves its
//! shard.

use std::cell::{Cell, OnceCell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::Waker;

use super::id::ClientId;
use super::outgoing::WsForm;
use super::outq::OutQueue;
use crate::dialect::DialectId;
use crate::stats::Transport;

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepted; HTTP request or WebSocket handshake not complete. Not a client yet.
    Handshake,
    /// A client: WebSocket upgraded, or TCP connected.
    Open,
    /// Closing: no more messages are queued to it.
    Closing,
}

/// A dialect client's authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DialectAuth {
    /// Not authenticated: receives no pushes, may only authenticate and ping.
    None,
    /// The authenticator is running.
    Pending,
    /// Authenticated.
    Done,
}

/// Why the server closes a connection. Each maps to a close code / ERROR text in `conn/`
/// and to a disconnect counter label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseCause {
    /// Its backlog stayed above `limits.max_queued_bytes` for `timeouts.slow_consumer_ms`.
    SlowConsumer,
    /// Its queue was among the largest when the shard's output budget ran out.
    OutputBudget,
    /// It held among the most partly received bytes when the shard's input budget ran out.
    InputBudget,
    /// No sign of life within the heartbeat timeout.
    HeartbeatTimeout,
    /// The handshake (or an HTTP request) did not complete in time.
    HandshakeTimeout,
    /// The server is shutting down.
    Shutdown,
    /// The client did not authenticate within `auth.timeout_ms` (4001).
    AuthTimeout,
    /// An application asked for it, with a close code; the reason it gave is the client's
    /// `close_reason` (kept there: a cause small enough for every client to hold).
    Kicked {
        /// WebSocket close code.
        code: u16,
    },
    /// A backend asked for it over the HTTP API (`POST /api/disconnect`), with a close code;
    /// the reason it gave is the client's `close_reason`.
    Disconnected {
        /// WebSocket close code.
        code: u16,
    },
    /// `rate_limit.strikes` messages over its rate limit in a row.
    RateLimited,
    /// A dialect client's authentication was refused (4003, the reason is the client's
    /// `close_reason`), or it sent what needs authentication before it.
    AuthRefused,
}

impl CloseCause {
    /// Counter label.
    pub fn label(self) -> &'static str {
        match self {
            CloseCause::SlowConsumer => "slow_consumer",
            CloseCause::OutputBudget => "output_budget",
            CloseCause::InputBudget => "input_budget",
            CloseCause::HeartbeatTimeout => "heartbeat_timeout",
            CloseCause::HandshakeTimeout => "handshake_timeout",
            CloseCause::Shutdown => "shutdown",
            CloseCause::AuthTimeout => "auth_timeout",
            CloseCause::Kicked { .. } => "kicked",
            CloseCause::Disconnected { .. } => "api_disconnect",
            CloseCause::RateLimited => "rate_limited",
            CloseCause::AuthRefused => "auth_refused",
        }
    }
}

/// Facts about a WebSocket client's upgrade request, for handlers.
#[derive(Debug, Default, Clone)]
pub struct RequestInfo {
    /// Request path (without the query).
    pub path: String,
    /// Raw query string, without `?`.
    pub query: Option<String>,
    /// Header fields in arrival order; names lower-cased.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The parts of a [`Client`] allocated at first use.
#[derive(Debug, Default)]
struct Extra {
    /// Rooms joined, for cleanup and the per-client cap.
    rooms: RefCell<Vec<Rc<str>>>,
    /// Application metadata.
    meta: RefCell<Vec<(String, String)>>,
    /// The head of the WebSocket upgrade request, when it was kept (`conn/ws.rs`).
    request: RefCell<Option<Box<[u8]>>>,
    /// The authenticated user, once known (set through `Hub::set_user`).
    user: RefCell<Option<Rc<str>>>,
    /// The reason a backend gave with `POST /api/disconnect` ([`CloseCause::Disconnected`]).
    close_reason: RefCell<Option<Box<str>>>,
    /// What its credentials allow (authentication, `auth/`); `None` = anonymous or auth off.
    grants: RefCell<Option<Rc<crate::auth::Grants>>>,
    /// Protection: its message rate-limit buckets (`protect::admit_message`).
    rate: RefCell<crate::protect::RateState>,
}

/// One connection, as its shard sees it.
pub(crate) struct Client {
    /// Its id (names its shard and slot).
    pub id: ClientId,
    /// Peer address.
    peer: Peer,
    transport: Transport,
    phase: Cell<Phase>,
    ws_form: Cell<WsForm>,
    /// The dialect it speaks (`dialect/`; stelar unless its path chose another).
    dialect: Cell<DialectId>,
    /// Where a dialect client is in its dialect's authentication (stelar clients authenticate
    /// before they open, `conn/auth.rs`, and are always `Done`).
    dialect_auth: Cell<DialectAuth>,
    /// Write queue. Mutated only through the hub, which keeps the shard's output budget.
    out: RefCell<OutQueue>,
    /// Shard time (ms modulo 2^32, never 0) since which the backlog has been above the
    /// slow-consumer limit; 0 while it is not.
    behind_since: Cell<u32>,
    /// Bytes of partly received input this connection holds (read buffer and reassembly),
    /// as last reported to the hub's input budget.
    input_held: Cell<u32>,
    /// The [`flag`]s.
    flags: Cell<u8>,
    /// The connection task's waker, set each time it parks.
    waker: Cell<Option<Waker>>,
    /// A close the server wants; the task acts on it.
    close: Cell<Option<CloseCause>>,
    /// Coarse time (shard clock, ms modulo 2^32) of the last bytes received.
    last_seen: Cell<u32>,
    /// What few connections use (rooms, metadata, user, grants, rate-limit buckets, the
    /// upgrade request), allocated at first use: an idle connection's memory counts.
    extra: OnceCell<Box<Extra>>,
}

/// A peer address in 24 bytes (a `SocketAddr` takes 32): the address, the port and an IPv6
/// scope (the flow label, which describes packets rather than the peer, is not kept).
#[derive(Clone, Copy)]
struct Peer {
    ip: [u8; 16],
    scope: u32,
    port: u16,
    v6: bool,
}

impl Peer {
    fn new(addr: SocketAddr) -> Peer {
        let mut ip = [0; 16];
        match addr {
            SocketAddr::V4(a) => {
                ip[..4].copy_from_slice(&a.ip().octets());
                Peer {
                    ip,
                    scope: 0,
                    port: a.port(),
                    v6: false,
                }
            }
            SocketAddr::V6(a) => Peer {
                ip: a.ip().octets(),
                scope: a.scope_id(),
                port: a.port(),
                v6: true,
            },
        }
    }

    fn get(self) -> SocketAddr {
        if self.v6 {
            std::net::SocketAddrV6::new(self.ip.into(), self.port, 0, self.scope).into()
        } else {
            let [a, b, c, d, ..] = self.ip;
            SocketAddr::from(([a, b, c, d], self.port))
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("slot", &self.slot())
            .field("peer", &self.peer())
            .field("transport", &self.transport)
            .field("phase", &self.phase.get())
            .field("close", &self.close.get())
            .finish_non_exhaustive()
    }
}

/// The bits of [`Client`]'s `flags`.
mod flag {
    /// The connection speaks messages (off on raw bench endpoints).
    pub(super) const STELAR: u8 = 1;
    /// The last write found the socket full (see `Client::write_blocked`).
    pub(super) const WRITE_BLOCKED: u8 = 2;
    /// Its task stopped reading until the shard's mesh overflow drains (listed once).
    pub(super) const WAITS_FOR_MESH: u8 = 4;
    /// The shard's timer for this connection fired (handshake deadline).
    pub(super) const TIMER_FIRED: u8 = 8;
}

impl Client {
    /// Its slot in the shard's slab (from its id).
    pub(crate) fn slot(&self) -> u32 {
        self.id.location().slot
    }

    /// A freshly accepted connection.
    pub(crate) fn new(id: ClientId, peer: SocketAddr, transport: Transport, now: u64) -> Self {
        Client {
            id,
            peer: Peer::new(peer),
            transport,
            phase: Cell::new(Phase::Handshake),
            ws_form: Cell::new(WsForm::Plain),
            dialect: Cell::new(DialectId::STELAR),
            dialect_auth: Cell::new(DialectAuth::Done),
            out: RefCell::new(OutQueue::default()),
            behind_since: Cell::new(0),
            input_held: Cell::new(0),
            flags: Cell::new(flag::STELAR),
            waker: Cell::new(None),
            close: Cell::new(None),
            last_seen: Cell::new(now as u32),
            extra: OnceCell::new(),
        }
    }

    /// The rarely used parts, allocated now if they were not.
    fn extra(&self) -> &Extra {
        self.extra.get_or_init(Box::default)
    }

    /// Its message rate-limit buckets (borrowed only inside `protect::admit_message`).
    pub(crate) fn rate_state(&self) -> std::cell::RefMut<'_, crate::protect::RateState> {
        self.extra().rate.borrow_mut()
    }

    /// The authenticated user id, if any.
    pub(crate) fn user(&self) -> Option<Rc<str>> {
        self.extra.get()?.user.borrow().clone()
    }
    /// Records the user (hub only: the hub keeps its user index in step).
    pub(super) fn set_user_field(&self, user: Option<Rc<str>>) {
        if user.is_some() || self.extra.get().is_some() {
            *self.extra().user.borrow_mut() = user;
        }
    }

    /// Sets the reason sent with a [`CloseCause::Disconnected`] close.
    pub(crate) fn set_close_reason(&self, reason: &str) {
        *self.extra().close_reason.borrow_mut() = Some(reason.into());
    }
    /// The reason set by [`Client::set_close_reason`], if any.
    pub(crate) fn close_reason(&self) -> Option<Box<str>> {
        self.extra.get()?.close_reason.borrow().clone()
    }
    /// What the client's credentials allow (`auth::may` reads it).
    pub(crate) fn grants(&self) -> Option<Rc<crate::auth::Grants>> {
        self.extra.get()?.grants.borrow().clone()
    }
    /// Records what the client's credentials allow (after authentication).
    pub(crate) fn set_grants(&self, grants: Rc<crate::auth::Grants>) {
        *self.extra().grants.borrow_mut() = Some(grants);
    }

    /// Peer address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer.get()
    }

    /// Transport.
    pub(crate) fn transport(&self) -> Transport {
        self.transport
    }
    /// Phase.
    pub(crate) fn phase(&self) -> Phase {
        self.phase.get()
    }
    /// Moves to `phase`.
    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.set(phase);
    }
    /// The WebSocket compression form this client takes.
    pub(crate) fn ws_form(&self) -> WsForm {
        self.ws_form.get()
    }
    /// Sets the compression form (after the handshake).
    pub(crate) fn set_ws_form(&self, form: WsForm) {
        self.ws_form.set(form);
    }
    /// Whether this connection speaks stelar envelopes.
    /// The dialect it speaks.
    pub(crate) fn dialect(&self) -> DialectId {
        self.dialect.get()
    }

    /// Sets its dialect (at the upgrade); it then waits for the dialect's authentication.
    pub(crate) fn set_dialect(&self, dialect: DialectId) {
        self.dialect.set(dialect);
        if !dialect.is_stelar() {
            self.dialect_auth.set(DialectAuth::None);
        }
    }

    /// Its dialect authentication.
    pub(crate) fn dialect_auth(&self) -> DialectAuth {
        self.dialect_auth.get()
    }

    /// Records its dialect authentication.
    pub(crate) fn set_dialect_auth(&self, state: DialectAuth) {
        self.dialect_auth.set(state);
    }

    /// Whether a message to its id goes to it: it is open and, on a dialect path, has
    /// authenticated (until then it is as good as absent: the sender is told).
    pub(crate) fn takes_direct(&self) -> bool {
        self.is_open() && self.dialect_auth.get() == DialectAuth::Done
    }

    /// Whether room, broadcast and user messages go to it: it speaks messages and, on a
    /// dialect path, has authenticated.
    pub(crate) fn receives_pushes(&self) -> bool {
        self.flag(flag::STELAR) && self.dialect_auth.get() == DialectAuth::Done
    }

    /// Marks a raw bench-endpoint connection.
    pub(crate) fn set_stelar(&self, on: bool) {
        self.set_flag(flag::STELAR, on);
    }
    /// Whether the connection is an open client that takes messages.
    pub(crate) fn is_open(&self) -> bool {
        self.phase.get() == Phase::Open
    }

    /// The write queue (hub only: every change must reach the output budget).
    pub(super) fn out(&self) -> &RefCell<OutQueue> {
        &self.out
    }

    /// What the write queue holds in memory.
    pub(crate) fn queued_cost(&self) -> usize {
        self.out.borrow().cost()
    }

    /// Whether nothing waits to be written.
    pub(crate) fn queue_is_empty(&self) -> bool {
        self.out.borrow().is_empty()
    }

    /// How long (ms) before shard time `now` the client fell behind; `None` if it is not
    /// behind. Kept modulo 2^32 ms, as [`Client::silent_for`].
    pub(super) fn behind_for(&self, now: u64) -> Option<u64> {
        match self.behind_since.get() {
            0 => None,
            t => Some(u64::from((now as u32).wrapping_sub(t))),
        }
    }

    /// Records that the client fell behind at shard time `now`.
    pub(super) fn fell_behind(&self, now: u64) {
        self.behind_since.set((now as u32).max(1));
    }

    /// Records that the client is not behind (any more).
    pub(super) fn caught_up(&self) {
        self.behind_since.set(0);
    }

    /// Partly received bytes last reported (saturating at 4 GiB).
    pub(super) fn input_held(&self) -> &Cell<u32> {
        &self.input_held
    }

    fn flag(&self, f: u8) -> bool {
        self.flags.get() & f != 0
    }

    /// Sets flag `f` to `on`; returns what it was.
    fn set_flag(&self, f: u8, on: bool) -> bool {
        let was = self.flags.get();
        self.flags.set(if on { was | f } else { was & !f });
        was & f != 0
    }

    /// Whether the last write found the socket full, and the queue has not been empty
    /// since: the peer is not keeping up right now (the output budget cuts such clients
    /// first).
    pub(super) fn write_blocked(&self) -> bool {
        self.flag(flag::WRITE_BLOCKED)
    }

    /// Sets [`Client::write_blocked`].
    pub(super) fn set_write_blocked(&self, on: bool) {
        self.set_flag(flag::WRITE_BLOCKED, on);
    }

    /// Marks (or unmarks) the client as listed among those waiting for the mesh overflow to
    /// drain (its task stopped reading until then); returns whether it was.
    pub(super) fn set_waits_for_mesh(&self, on: bool) -> bool {
        self.set_flag(flag::WAITS_FOR_MESH, on)
    }

    /// Wakes the connection task.
    pub(crate) fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Takes the task's waker while the task itself runs: what it queues for itself then
    /// wakes nobody (it flushes before it parks), instead of scheduling it to run once more
    /// for nothing. Give it back with [`Client::park`].
    pub(crate) fn unpark(&self) -> Option<Waker> {
        self.waker.take()
    }

    /// Stores the task's waker before it parks, reusing `prev` (from [`Client::unpark`])
    /// when it wakes the same task.
    pub(crate) fn park(&self, prev: Option<Waker>, waker: &Waker) {
        let keep = match (self.waker.take(), prev) {
            (Some(w), _) | (None, Some(w)) if w.will_wake(waker) => w,
            _ => waker.clone(),
        };
        self.waker.set(Some(keep));
    }

    /// Stores the task's waker (called by the task before it parks).
    pub(crate) fn register(&self, waker: &Waker) {
        self.park(None, waker);
    }

    /// Asks the task to close with `cause` (the first cause wins).
    pub(crate) fn request_close(&self, cause: CloseCause) {
        if self.close.get().is_none() {
            self.close.set(Some(cause));
        }
        self.wake();
    }

    /// The close the server asked for, if any.
    pub(crate) fn close_requested(&self) -> Option<CloseCause> {
        self.close.get()
    }

    /// Marks the timer as fired and wakes the task.
    pub(crate) fn fire_timer(&self) {
        self.set_flag(flag::TIMER_FIRED, true);
        self.wake();
    }

    /// Takes the timer flag.
    pub(crate) fn take_timer(&self) -> bool {
        self.set_flag(flag::TIMER_FIRED, false)
    }

    /// Records that bytes arrived at shard time `now`.
    pub(crate) fn seen(&self, now: u64) {
        self.last_seen.set(now as u32);
    }

    /// How long (ms) before shard time `now` the last bytes arrived. Kept modulo 2^32 ms
    /// (≈ 49.7 days): exact up to half of that (≈ 24.9 days), which the configuration keeps
    /// the heartbeat timeout well under. A `now` behind the last arrival (the arrival is read
    /// from the coarse clock, `now` may be too) is no silence, not almost 2^32 ms of it.
    pub(crate) fn silent_for(&self, now: u64) -> u64 {
        let d = (now as u32).wrapping_sub(self.last_seen.get());
        if d > u32::MAX / 2 {
            0
        } else {
            u64::from(d)
        }
    }

    /// Calls `f` with the rooms joined.
    pub(crate) fn with_rooms<R>(&self, f: impl FnOnce(&[Rc<str>]) -> R) -> R {
        match self.extra.get() {
            Some(e) => f(&e.rooms.borrow()),
            None => f(&[]),
        }
    }

    /// Whether it joined `room`.
    pub(crate) fn in_room(&self, room: &str) -> bool {
        self.with_rooms(|rooms| rooms.iter().any(|r| &**r == room))
    }

    /// Rooms joined, mutable (hub only).
    pub(crate) fn rooms_mut(&self) -> std::cell::RefMut<'_, Vec<Rc<str>>> {
        self.extra().rooms.borrow_mut()
    }

    /// Takes the rooms joined (hub only, when the client goes).
    pub(crate) fn take_rooms(&self) -> Vec<Rc<str>> {
        self.extra
            .get()
            .map(|e| std::mem::take(&mut *e.rooms.borrow_mut()))
            .unwrap_or_default()
    }

    /// Metadata value.
    pub(crate) fn meta(&self, key: &str) -> Option<String> {
        self.extra
            .get()?
            .meta
            .borrow()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// Sets a metadata value (replacing any previous one).
    pub(crate) fn set_meta(&self, key: &str, value: String) {
        let mut m = self.extra().meta.borrow_mut();
        match m.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => m.push((key.to_owned(), value)),
        }
    }

    /// The upgrade request (WebSocket clients), built from its stored head at each call (it is
    /// asked for rarely: by hooks and at a dialect's authentication).
    pub(crate) fn request(&self) -> Option<Rc<RequestInfo>> {
        let head = self.extra.get()?.request.borrow();
        let head = head.as_deref()?;
        let limits = crate::protocol::http::Limits {
            max_head_size: head.len(),
            ..Default::default()
        };
        let req = crate::protocol::http::parse_request(head, &limits).ok()??;
        Some(Rc::new(RequestInfo {
            path: req.path().to_owned(),
            query: req.query().map(str::to_owned),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec()))
                .collect(),
        }))
    }

    /// Forgets the upgrade request's head (nothing will ask for it any more).
    pub(crate) fn drop_request(&self) {
        if let Some(e) = self.extra.get() {
            *e.request.borrow_mut() = None;
        }
    }

    /// Stores the upgrade request's head (one allocation of its size: an idle connection's
    /// memory counts).
    pub(crate) fn set_request(&self, head: &[u8]) {
        *self.extra().request.borrow_mut() = Some(head.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_address_comes_back_as_it_went_in() {
        for text in [
            "127.0.0.1:4000",
            "[::1]:80",
            "[fe80::1%7]:65535",
            "0.0.0.0:0",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(Peer::new(addr).get(), addr, "{text}");
        }
    }

    /// Arrivals are stamped from the coarse clock and checked against the precise one; a
    /// stamp ahead of `now` (a clock behind the other) is no silence, and silence is still
    /// measured across the 2^32 ms wrap.
    #[test]
    fn silence_is_never_counted_from_an_arrival_ahead_of_now() {
        let c = Client::new(
            ClientId::new(0, 0, 1, [7; 16]),
            "127.0.0.1:1".parse().unwrap(),
            Transport::Ws,
            1_000,
        );
        assert_eq!(c.silent_for(1_000), 0);
        assert_eq!(c.silent_for(61_000), 60_000);
        c.seen(5_000);
        assert_eq!(c.silent_for(4_996), 0);
        assert_eq!(c.silent_for(5_030), 30);
        c.seen(u64::from(u32::MAX) - 10);
        assert_eq!(c.silent_for(u64::from(u32::MAX) + 20), 30);
    }

    /// What an idle connection holds (PERF.md, "Memory per idle connection"): with its `Rc`
    /// header the client must fit jemalloc's 160-byte size class.
    #[test]
    fn a_client_fits_its_size_class() {
        assert!(
            std::mem::size_of::<Client>() + 16 <= 160,
            "{}",
            std::mem::size_of::<Client>()
        );
    }
}
