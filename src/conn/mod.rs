//! One connection's life: bytes in → codec → dispatch → batched writes.
//!
//! Each accepted socket is served on the shard that accepted it, and never leaves it: as a
//! task of its own through its handshake, then from the shard's table of open connections.
//! - `ws.rs`: the WebSocket/HTTP port — the HTTP phase (`/health`, `/metrics`, the API in
//!   `http.rs`, or the upgrade), then a [`Session`] speaking stelar envelopes (or a raw bench
//!   endpoint).
//! - `tcp.rs`: the stelar TCP port — CONNECT first, then a [`Session`] over TCP frames.
//! - [`Drive`]: the open phase shared by both: flushes the write queue, reads and decodes,
//!   acts on timers and close requests, until the connection ends.
//! - `open.rs`: the open connections, as plain state polled by one task per shard (no task
//!   per connection: an idle connection's memory counts).
//!
//! Sockets are driven by the shard's own io_uring (`shardcast_shards::uring`): one multishot
//! read poll per socket for its life marks it readable, and the connection reads its bytes
//! into its own buffer when it is served; that buffer is dropped whenever it is drained, so an
//! idle connection holds no read buffer. Codecs
//! parse and unmask in place in that buffer and hand payloads out as `Bytes` views of it.
//! Writes are queued as `Bytes` (`hub/outq.rs`, through the hub, which keeps the shard's
//! memory budgets) and leave in one `sendmsg` per turn.
//!
//! Backpressure: a connection whose own queue is above the read-pause mark, or whose shard
//! cannot hand messages to another shard, is not read until that clears; what it holds of
//! partly received messages is reported to the hub's input budget after every read.

pub(crate) mod auth;
pub(crate) mod http;
pub(crate) mod open;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod ws;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

use bytes::BytesMut;
use glommio::net::TcpStream;
use shardcast_shards::uring::{Ring, Socket};
use shardcast_shards::TimerId;

use crate::app::App;
use crate::hub::client::{Client, CloseCause, Phase};
use crate::hub::outgoing::{Body, Outgoing};
use crate::hub::Hub;
use crate::protocol::http::Limits as HttpLimits;
use crate::protocol::ws::handshake::{DeflateConfig, ServerConfig};
use crate::stats::Counters;

/// Most reads handled in one poll before the task yields to others.
const READ_BUDGET: usize = 16;
/// How long a closing connection waits for its close frame to go out and for the peer's
/// close frame / EOF before it is dropped. A peer that stopped reading (a slow consumer) sees
/// the close frame if it resumes reading within this time.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// What one shard's connections share.
pub(crate) struct Shared {
    pub hub: Rc<Hub>,
    pub app: Arc<App>,
    /// Connection tasks alive on this shard (for the shutdown drain).
    live: Cell<usize>,
    drained: RefCell<Option<Waker>>,
    /// The wheel timers of connections in their handshake, by client slot (an open
    /// connection's timer is in the table of open connections).
    timers: RefCell<ahash::AHashMap<u32, TimerId>>,
    /// The TLS configuration (when TLS is on), shared by every shard and reloadable.
    pub tls: Option<Arc<tls::TlsAcceptor>>,
    /// The open connections, served by [`open::run`] without a task each.
    pub opens: open::Table,
}

impl Shared {
    pub(crate) fn new(hub: Rc<Hub>, app: Arc<App>) -> Shared {
        Shared {
            hub,
            app,
            live: Cell::new(0),
            drained: RefCell::new(None),
            timers: RefCell::new(ahash::AHashMap::new()),
            tls: None,
            opens: open::Table::default(),
        }
    }

    /// What the WebSocket handshake offers, from the configuration in effect (a reload
    /// changes it for the handshakes that follow).
    pub(crate) fn handshake(&self) -> ServerConfig {
        let c = self.hub.config();
        ServerConfig {
            subprotocols: Vec::new(),
            deflate: DeflateConfig {
                enabled: c.compression.enabled,
                ..DeflateConfig::default()
            },
        }
    }

    /// The HTTP request limits in effect.
    pub(crate) fn http_limits(&self) -> HttpLimits {
        let c = self.hub.config();
        HttpLimits {
            max_head_size: c.limits.max_http_head,
            max_body_size: c.limits.max_http_body,
            ..HttpLimits::default()
        }
    }

    /// Serves TLS on the ports accepted with `tls = true`, with `acceptor`'s configuration.
    pub(crate) fn with_tls(mut self, acceptor: Option<Arc<tls::TlsAcceptor>>) -> Shared {
        self.tls = acceptor;
        self
    }

    /// Resolves once no connection is left: no handshake task, nothing in the table of open
    /// connections.
    pub(crate) async fn drained(&self) {
        poll_fn(|cx| {
            if self.live.get() == 0 && self.opens.count() == 0 {
                Poll::Ready(())
            } else {
                *self.drained.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    fn enter(&self) {
        self.live.set(self.live.get() + 1);
    }

    fn leave(&self) {
        self.live.set(self.live.get() - 1);
        self.check_drained();
    }

    /// Wakes the shutdown drain when no connection is left.
    fn check_drained(&self) {
        if self.live.get() == 0 && self.opens.count() == 0 {
            if let Some(w) = self.drained.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// Arms (or re-arms) the client's handshake timer `after` from now.
    pub(crate) fn arm_timer(&self, client: &Client, after: Duration) {
        let mut timers = self.timers.borrow_mut();
        let t = self.hub.timers();
        if let Some(&id) = timers.get(&client.slot()) {
            if t.reschedule_after(id, after) {
                return;
            }
        }
        timers.insert(client.slot(), t.insert_after(after, client.id));
    }

    /// Cancels the client's handshake timer.
    pub(crate) fn cancel_timer(&self, client: &Client) {
        if let Some(id) = self.timers.borrow_mut().remove(&client.slot()) {
            self.hub.timers().cancel(id);
        }
    }
}

/// Marks a connection task alive for the shutdown drain; ends it on drop.
pub(crate) struct Live(Rc<Shared>);

impl Live {
    pub(crate) fn new(shared: &Rc<Shared>) -> Live {
        shared.enter();
        Live(shared.clone())
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// A connection task's registration: the client in the hub, its socket, and the liveness mark
/// for the shutdown drain. [`Accepted::finish`] undoes it.
pub(crate) struct Accepted {
    pub client: Rc<Client>,
    pub io: Io,
    _live: Live,
}

impl Accepted {
    /// Registers a freshly accepted socket on this shard; with `tls`, the socket speaks TLS
    /// (the caller runs [`tls::handshake`] first).
    pub(crate) fn new(
        stream: TcpStream,
        shared: &Rc<Shared>,
        transport: crate::stats::Transport,
        tls: bool,
    ) -> Accepted {
        let live = Live::new(shared);
        let peer = stream
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        // Latency over throughput for small frames; writes are coalesced anyway.
        let _ = stream.set_nodelay(true);
        let mut io = Io::new(stream).unwrap_or_else(|e| {
            // Only when the shard cannot create its ring or the process is out of
            // descriptors; the connection then fails at its first read.
            tracing::warn!(error = %e, "connection not adopted by the shard's ring");
            Io::failed()
        });
        if tls {
            // Without an acceptor or with a configuration rustls refuses, the session is
            // missing and the handshake fails at once (counted).
            io.tls = shared
                .tls
                .as_ref()
                .and_then(|a| tls::TlsIo::new(a.current()).ok())
                .map(Box::new);
            io.tls_wanted = true;
        }
        Accepted {
            client: shared.hub.register(peer, transport),
            io,
            _live: live,
        }
    }

    /// Hands the open connection to the shard's table ([`open::Table`]), with its session
    /// and its place in the per-IP count (held until it ends); the calling task may then end.
    /// The task's wakers are dropped here: they would keep the ended task's allocation alive.
    pub(crate) fn into_open<S: Session + 'static>(
        self,
        session: S,
        ip: crate::protect::IpSlot,
        shared: &Shared,
    ) {
        let Accepted { client, io, _live } = self;
        drop(client.unpark());
        io.forget_wakers();
        let slot = client.slot();
        let conn = open::Open::new(client, io, session, ip, shared);
        // Counted by the table before the handshake's liveness mark goes.
        shared.opens.insert(slot, Box::new(conn));
        drop(_live);
    }

    /// Leaves the rooms, frees the slot, runs the disconnect hooks when the client had been
    /// opened, and closes the socket.
    pub(crate) fn finish(self, shared: &Shared, opened: bool) {
        finish(&self.client, self.io, shared, opened);
    }
}

/// Leaves the rooms, frees the slot, runs the disconnect hooks when the client had been
/// opened, and closes the socket (a handshake task's connection, or an open one's).
fn finish(client: &Rc<Client>, io: Io, shared: &Shared, opened: bool) {
    shared.cancel_timer(client);
    // Only when someone listens: the leave hooks, or member events for some rooms.
    let listened =
        !shared.app.on_leave.is_empty() || !shared.hub.config().relay.member_events.is_empty();
    let rooms: Vec<std::rc::Rc<str>> = if opened && listened {
        client.with_rooms(<[_]>::to_vec)
    } else {
        Vec::new()
    };
    // Told while the client still has its user (unregister releases it); it takes no
    // more messages (its socket is done).
    for room in &rooms {
        crate::app::dispatch::left(&shared.hub, &shared.app, client, room);
    }
    shared.hub.unregister(client);
    if opened {
        crate::app::dispatch::disconnected(&shared.hub, &shared.app, client);
        // A cause is set when the server closed it; otherwise the peer closed it or the
        // socket failed (logged apart, with the error).
        let reason = client
            .close_requested()
            .map_or("peer_closed_or_failed", |c| c.label());
        tracing::debug!(
            client = %client.id,
            peer = %client.peer(),
            transport = ?client.transport(),
            reason,
            "connection closed"
        );
    }
    io.close();
}

/// A socket with its read buffer.
pub(crate) struct Io {
    /// The socket on the shard's ring (`None` if it could not be adopted).
    sock: Option<Socket>,
    fd: RawFd,
    /// Bytes read and not yet consumed. Empty (and unallocated) while idle.
    pub rbuf: BytesMut,
    /// The TLS session, on a TLS port.
    tls: Option<Box<tls::TlsIo>>,
    /// Accepted on a TLS port (even if the session could not be created).
    tls_wanted: bool,
}

impl Io {
    /// Hands the accepted socket to the shard's ring (multishot read poll, no glommio source).
    pub(crate) fn new(stream: TcpStream) -> io::Result<Io> {
        let sock = Ring::get()?.adopt_glommio(stream)?;
        Ok(Io {
            fd: sock.as_raw_fd(),
            sock: Some(sock),
            rbuf: BytesMut::new(),
            tls: None,
            tls_wanted: false,
        })
    }

    /// An `Io` whose reads and writes fail (the socket could not be adopted).
    fn failed() -> Io {
        Io {
            sock: None,
            fd: -1,
            rbuf: BytesMut::new(),
            tls: None,
            tls_wanted: false,
        }
    }

    /// What arrived, as its own buffer (TLS: ciphertext). `Ready(Ok(empty))` is end of stream.
    fn poll_recv_owned(&self, cx: &mut TaskContext<'_>) -> Poll<io::Result<BytesMut>> {
        let Some(sock) = self.sock.as_ref() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        let mut got = BytesMut::new();
        sock.poll_recv(cx, &mut got).map_ok(|_| got)
    }

    /// Reads what arrived and appends it to `rbuf`. `Ready(Ok(0))` is end of stream.
    pub(crate) fn poll_fill(
        &mut self,
        cx: &mut TaskContext<'_>,
        shared: &Shared,
    ) -> Poll<io::Result<usize>> {
        if self.tls_wanted {
            return self.poll_fill_tls(cx, shared);
        }
        let Some(sock) = self.sock.as_ref() else {
            return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
        };
        match sock.poll_recv(cx, &mut self.rbuf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    Counters::add(&shared.hub.counters.bytes_received, n as u64);
                }
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    /// `Ready` once the socket takes bytes again (after `EAGAIN`); `Pending` registers the
    /// task. Takes the field, not `self`, so that the TLS path can call it while it holds its
    /// session.
    fn poll_writable(sock: &Option<Socket>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match sock {
            Some(sock) => sock.poll_writable(cx).map(Ok),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    /// Stops receiving until the next read (backpressure).
    pub(crate) fn pause_reading(&self) {
        if let Some(sock) = self.sock.as_ref() {
            sock.pause_recv();
        }
    }

    /// Forgets the wakers the socket holds (a handshake task's, when the connection moves to
    /// the shard's table of open connections).
    pub(crate) fn forget_wakers(&self) {
        if let Some(sock) = self.sock.as_ref() {
            sock.forget_wakers();
        }
    }

    /// Releases the read buffer's memory when nothing is buffered. Not only when it has spare
    /// capacity: a buffer advanced to its end has none but still holds its allocation (the
    /// upgrade request's ≈ 160 bytes stayed with every idle connection that way).
    pub(crate) fn release_if_empty(&mut self) {
        if self.rbuf.is_empty() {
            self.rbuf = BytesMut::new();
        }
    }

    /// Writes the client's queue; `Ready(Ok)` once it is empty, `Pending` while the socket is
    /// full (woken when it drains).
    pub(crate) fn poll_flush(
        &mut self,
        cx: &mut TaskContext<'_>,
        client: &Client,
        hub: &Hub,
    ) -> Poll<io::Result<()>> {
        if self.tls_wanted {
            return self.poll_flush_tls(cx, client, hub);
        }
        loop {
            if client.queue_is_empty() {
                return Poll::Ready(Ok(()));
            }
            match hub.write_queue(client, self.fd) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            // The socket is full: wait for write readiness (a poll on the shard's ring).
            match Io::poll_writable(&self.sock, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Flushes the queue completely (HTTP phase).
    pub(crate) async fn flush(&mut self, client: &Client, hub: &Hub) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx, client, hub)).await
    }

    /// Shuts down the write side and drops the socket.
    pub(crate) fn close(mut self) {
        self.close_tls();
        if self.sock.is_some() {
            // SAFETY: `fd` is the socket's descriptor, still open (the handle is alive).
            unsafe {
                libc::shutdown(self.fd, libc::SHUT_WR);
            }
        }
        drop(self.sock.take());
    }
}

/// Why a wait in the HTTP phase ended without data.
#[derive(Debug)]
pub(crate) enum Interrupted {
    /// The peer closed or the socket failed.
    Gone,
    /// The handshake/request deadline passed.
    Timeout,
    /// The server asked the connection to close (shutdown).
    Close,
}

/// Waits for more bytes (HTTP phase), also ending on the client's timer or a close request.
pub(crate) async fn fill(
    io: &mut Io,
    shared: &Shared,
    client: &Client,
) -> Result<usize, Interrupted> {
    poll_fn(|cx| {
        if client.close_requested().is_some() {
            return Poll::Ready(Err(Interrupted::Close));
        }
        if client.take_timer() {
            return Poll::Ready(Err(Interrupted::Timeout));
        }
        match io.poll_fill(cx, shared) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(Err(Interrupted::Gone)),
            Poll::Ready(Ok(n)) => {
                // A request being received counts against the input budget like a message.
                shared.hub.set_input_held(client, io.rbuf.len());
                Poll::Ready(Ok(n))
            }
            Poll::Pending => {
                client.register(cx.waker());
                Poll::Pending
            }
        }
    })
    .await
}

/// What a session wants after handling input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Keep going.
    Continue,
    /// Stop reading: the connection is failing or closing (the answer is queued).
    Stop,
}

/// A transport's open phase: decode and dispatch, and the frames of closing and heartbeats.
pub(crate) trait Session {
    /// Decodes every complete message in `buf` and dispatches it.
    fn handle_input(&mut self, buf: &mut BytesMut, shared: &Shared, client: &Rc<Client>) -> Flow;
    /// Queues what the server sends when it closes for `cause` (`Outgoing::closing`) and
    /// moves the session's close state on.
    fn begin_close(&mut self, cause: CloseCause, client: &Client, hub: &Hub);
    /// Whether the connection is finished once the queue is flushed.
    fn done(&self) -> bool;
    /// Bytes of a partly received message the session holds (reassembly buffers).
    fn buffered(&self) -> usize;
    /// Drops what the session holds of partly received messages (the input budget ran out).
    fn discard_input(&mut self);
    /// Authentication waits for the client's first message (`conn/auth.rs`): the session
    /// stops decoding after it and reports it through [`Session::take_first_message`].
    fn await_first_message(&mut self);
    /// The first message, once it arrived while awaiting one.
    fn take_first_message(&mut self) -> Option<auth::FirstMessage>;
}

/// How an open connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// Closed (handshake complete, or the peer went away).
    Closed,
    /// The socket failed.
    Failed(io::Error),
    /// The server cut it off after its close grace period.
    Abandoned,
}

/// The open phase's own state: closing, reading, and whether the close grace runs. The rest is
/// in the connection's [`Io`], its [`Session`] and its [`Client`]; `open.rs` keeps the four
/// together in the shard's table of open connections.
#[derive(Debug)]
pub(crate) struct Drive {
    closing: bool,
    reading: bool,
    /// The close grace runs: the connection's timer (`open::Table`) is set for its end, so
    /// when it fires the connection is dropped.
    grace: bool,
}

impl Drive {
    /// Starts the open phase: arms the heartbeat and drops what the handshake left of the
    /// read buffer (an idle connection keeps no buffer).
    pub(crate) fn start(io: &mut Io, shared: &Shared, client: &Client) -> Drive {
        // The handshake's timer (the shard's wheel) gives way to the table's (`open.rs`).
        shared.cancel_timer(client);
        client.take_timer();
        let hub = &shared.hub;
        shared.opens.arm(
            client.slot(),
            hub.now_ms(),
            hub.config().heartbeat_interval(),
        );
        io.release_if_empty();
        Drive {
            closing: false,
            reading: true,
            grace: false,
        }
    }

    /// Starts the close grace: the connection is dropped if it has not finished closing by
    /// then.
    fn start_grace(&mut self, shared: &Shared, client: &Client) {
        self.grace = true;
        shared
            .opens
            .arm(client.slot(), shared.hub.now_ms(), CLOSE_GRACE);
    }

    /// Runs the open phase as far as it can go: acts on a close request or the timer,
    /// flushes the queue, reads and decodes (at most [`READ_BUDGET`] reads). `Ready` once the
    /// connection has ended.
    pub(crate) fn poll<S: Session>(
        &mut self,
        cx: &mut TaskContext<'_>,
        io: &mut Io,
        session: &mut S,
        shared: &Shared,
        client: &Rc<Client>,
    ) -> Poll<End> {
        let hub = &shared.hub;
        let mut budget = READ_BUDGET;
        // Every way out of the loop below flushes first, so a frame this poll queues for its
        // own client needs no wake-up.
        let parked = client.unpark();
        loop {
            if let Some(cause) = client.close_requested() {
                if !self.closing {
                    self.closing = true;
                    if client.phase() == Phase::Open {
                        client.set_phase(Phase::Closing);
                        hub.counters.disconnect(cause.label());
                    }
                    if cause == CloseCause::InputBudget {
                        // The point of the close is to give this memory back now.
                        self.reading = false;
                        io.rbuf = BytesMut::new();
                        session.discard_input();
                        hub.set_input_held(client, 0);
                    }
                    session.begin_close(cause, client, hub);
                    self.start_grace(shared, client);
                }
            }
            if shared.opens.take_fired(client.slot()) {
                if self.grace {
                    // Only the grace's end sets the timer once it runs.
                    return Poll::Ready(End::Abandoned);
                }
                let now = hub.now_ms();
                let config = hub.config();
                if client.silent_for(now) > config.timeouts.heartbeat_timeout_ms {
                    client.request_close(CloseCause::HeartbeatTimeout);
                    continue;
                }
                hub.send_control(client, &Outgoing::new(Body::Ping));
                shared
                    .opens
                    .arm(client.slot(), now, config.heartbeat_interval());
            }
            match io.poll_flush(cx, client, hub) {
                Poll::Ready(Err(e)) => return Poll::Ready(End::Failed(e)),
                Poll::Ready(Ok(())) => {
                    if session.done() {
                        return Poll::Ready(End::Closed);
                    }
                }
                Poll::Pending => {}
            }
            if !self.reading {
                break;
            }
            if budget == 0 {
                // Let other connections run; come back in this same loop turn.
                cx.waker().wake_by_ref();
                break;
            }
            if hub.should_pause_reading(client) {
                // Woken when the socket drains (flush above) or the mesh overflow does.
                io.pause_reading();
                break;
            }
            budget -= 1;
            match io.poll_fill(cx, shared) {
                Poll::Ready(Ok(0)) => return Poll::Ready(End::Closed),
                Poll::Ready(Ok(_)) => {
                    client.seen(hub.coarse_now_ms());
                    // What arrived counts against the input budget before it is decoded: a
                    // read can bring a whole large message at once.
                    hub.set_input_held(client, io.rbuf.len() + session.buffered());
                    if session.handle_input(&mut io.rbuf, shared, client) == Flow::Stop {
                        self.reading = false;
                        if !self.grace {
                            self.start_grace(shared, client);
                        }
                    }
                    io.release_if_empty();
                    hub.set_input_held(client, io.rbuf.len() + session.buffered());
                }
                Poll::Ready(Err(e)) => return Poll::Ready(End::Failed(e)),
                Poll::Pending => break,
            }
        }
        client.park(parked, cx.waker());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_read_to_its_end_is_released() {
        let mut io = Io::failed();
        io.rbuf = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        let len = io.rbuf.len();
        bytes::Buf::advance(&mut io.rbuf, len);
        // Empty, no spare capacity, but still the request's allocation.
        assert_eq!(io.rbuf.capacity(), 0);
        assert_ne!(io.rbuf.as_ptr(), BytesMut::new().as_ptr());
        io.release_if_empty();
        assert_eq!(io.rbuf.as_ptr(), BytesMut::new().as_ptr());
        // A buffer with bytes in it stays.
        io.rbuf = BytesMut::from(&b"partial"[..]);
        io.release_if_empty();
        assert_eq!(&io.rbuf[..], b"partial");
    }
}
