//! One load-generating connection: open it (TCP, TLS, WebSocket upgrade or stelar
//! CONNECT), join its rooms, then drive it through the run's phases: send on schedule,
//! read and record, answer pings, close.
//!
//! The open connection is one poll loop (`Driver::poll_run`), like the server's own
//! connection driver: generate the sends that are due into the write buffer, write it in
//! one call, read and decode everything available (in place, through `wire.rs`), repeat;
//! sleep on the socket, on a timer for the next scheduled send, or on the shard's phase
//! change (the control task wakes every connection through `ShardCtx::wakers`).
//!
//! **Open loop.** A scheduled sender sends message `k` at `t0 + phase + k·interval` and
//! stamps it with that intended time; if the socket was full or the shard late, the
//! messages that fell due meanwhile all go out at once, still stamped with their intended
//! times, so latency includes the wait (coordinated omission corrected). **Closed loop**
//! (echo/ack without `--rate`): `window` requests in flight, each reply frees a slot,
//! stamped with the actual send time.
//!
//! Memory: an idle connection holds its socket, codec state and empty buffers; reads land
//! in the shard's 64 KiB scratch buffer and the connection's read buffer is released as
//! soon as it is drained.

use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ahash::AHashMap;
use bytes::{Buf, BytesMut};
use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::timer::Timer;
use shardcast::protocol::ws::handshake::{ClientRequest, HandshakeError};

use crate::clock::now_ns;
use crate::engine::{Phase, ShardCtx};
use crate::fault::Fault;
use crate::net::dial::{self, DialOptions};
use crate::net::{tls, Stream};
use crate::plan::{ConnPlan, PublishTo, Role, Sender};
use crate::seq::SeqWindow;
use crate::stamp::Stamp;
use crate::wire::{ClientCodec, Dialect, Inbound, Request};

/// Reads per poll before yielding to the shard's other connections.
const READ_BUDGET: usize = 16;
/// Most scheduled messages generated per loop turn (the rest next turn).
const MAX_BURST: usize = 512;
/// How long a closing connection waits for the server's close.
const CLOSE_GRACE_NS: u64 = 1_000_000_000;

/// An open connection, handshake done.
pub struct Established {
    /// The stream.
    pub stream: Stream,
    /// The codec, past the handshake.
    pub codec: ClientCodec,
    /// Bytes read past the handshake.
    pub rbuf: BytesMut,
}

fn tls_fault(e: &io::Error) -> Fault {
    if e.kind() == io::ErrorKind::InvalidData {
        Fault::TlsHandshake
    } else {
        Fault::from_io(e, true)
    }
}

/// Reads once and appends to `rbuf` (TLS decrypts through the shard's scratch buffer).
fn poll_read_into(
    stream: &mut Stream,
    rbuf: &mut BytesMut,
    ctx: &ShardCtx,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    stream.poll_read_buf(cx, rbuf, &mut ctx.scratch.borrow_mut()[..])
}

/// TCP connect, TLS, then the WebSocket upgrade (verified per RFC 6455 §4.1) or the stelar
/// CONNECT frame. Not timed out here: callers wrap it.
pub async fn establish(
    ctx: &ShardCtx,
    plan: &ConnPlan,
    linger_zero: bool,
) -> Result<Established, Fault> {
    let cfg = &ctx.cfg;
    let target = cfg.targets.get(plan.target).ok_or(Fault::ConnectFailed)?;
    let dialect = cfg.dialect_of(plan);
    let source = match cfg.sources.len() {
        0 => None,
        // Independent of the target (which is `id % targets`), so that every (source,
        // destination) pair gets its share.
        n => cfg
            .sources
            .get(plan.id as usize / cfg.targets.len().max(1) % n)
            .copied(),
    };
    let tcp = dial::open(
        target.addr,
        DialOptions {
            source,
            linger_zero,
        },
    )
    .map_err(|e| Fault::from_io(&e, true))?;
    let mut stream = if target.scheme.is_tls() {
        let Some(config) = cfg.tls.clone() else {
            return Err(Fault::TlsHandshake);
        };
        let name = tls::server_name(&target.host).map_err(|_| Fault::TlsHandshake)?;
        let s = futures_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| tls_fault(&e))?;
        Stream::Tls(Box::new(futures_rustls::TlsStream::Client(s)))
    } else {
        Stream::Plain(tcp)
    };
    let mut codec = ClientCodec::new(dialect, ctx.random(), cfg.size);
    let mut rbuf = BytesMut::new();
    let io_fault = |e: io::Error| Fault::from_io(&e, true);
    if dialect.is_ws() {
        let path = cfg.path_of(plan);
        let host = target.host_header();
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&ctx.random().to_ne_bytes());
        key[8..].copy_from_slice(&ctx.random().to_ne_bytes());
        let mut out = BytesMut::new();
        let hs = ClientRequest::new(&host, &path, key)
            .write(&mut out)
            .map_err(|_| Fault::UpgradeInvalid)?;
        stream.write_all(&out).await.map_err(io_fault)?;
        stream.flush().await.map_err(io_fault)?;
        loop {
            let n = poll_fn(|cx| poll_read_into(&mut stream, &mut rbuf, ctx, cx))
                .await
                .map_err(io_fault)?;
            if n == 0 {
                return Err(Fault::ServerEof);
            }
            match hs.handle_response(&rbuf) {
                Ok(Some(neg)) => {
                    rbuf.advance(neg.consumed);
                    break;
                }
                Ok(None) => {}
                Err(HandshakeError::UnexpectedStatus(_)) => return Err(Fault::UpgradeRefused),
                Err(_) => return Err(Fault::UpgradeInvalid),
            }
        }
    } else {
        // stelar TCP: the server's first frame is CONNECT (PROTOCOL.md §4.3).
        loop {
            match codec.decode(&mut rbuf) {
                Ok(Some(Inbound::Connect)) => break,
                Ok(Some(_)) => return Err(Fault::Unexpected),
                Ok(None) => {}
                Err(e) => return Err(e.into()),
            }
            let n = poll_fn(|cx| poll_read_into(&mut stream, &mut rbuf, ctx, cx))
                .await
                .map_err(io_fault)?;
            if n == 0 {
                return Err(Fault::ServerEof);
            }
        }
    }
    Ok(Established {
        stream,
        codec,
        rbuf,
    })
}

async fn sleep_until(t: u64) {
    let now = now_ns();
    if t > now {
        glommio::timer::sleep(Duration::from_nanos(t - now)).await;
    }
}

/// Waits (registered in the waker slots) until the shard leaves `phase`.
async fn wait_phase_change(ctx: &ShardCtx, local: usize, phase: Phase) {
    poll_fn(|cx| {
        if ctx.phase.get() != phase {
            Poll::Ready(())
        } else {
            ctx.wakers.register(local, cx.waker());
            Poll::Pending
        }
    })
    .await
}

/// Runs one planned connection from start to end; `start_at` paces the connect.
pub async fn run(ctx: Rc<ShardCtx>, local: usize, plan: ConnPlan, start_at: u64) {
    if let Role::Storm {
        interval_ns,
        phase_ns,
        limit,
    } = plan.role
    {
        storm(&ctx, local, &plan, interval_ns, phase_ns, limit).await;
        return;
    }
    sleep_until(start_at).await;
    let group = plan.group;
    let started = now_ns();
    ctx.recorders.borrow_mut()[group].counts.connect_attempts += 1;
    let timeout = ctx.cfg.connect_timeout;
    let est = if started >= ctx.setup_deadline.get() {
        Err(Fault::ConnectTimeout)
    } else {
        // Boxed: the handshake's state (TLS above all) is freed once it is done instead of
        // sizing every connection task for it.
        match glommio::timer::timeout(timeout, async {
            Ok(Box::pin(establish(&ctx, &plan, false)).await)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Fault::ConnectTimeout),
        }
    };
    let est = match est {
        Ok(e) => e,
        Err(f) => {
            ctx.recorders.borrow_mut()[group].fault(f, now_ns());
            ctx.setup_finished(false);
            return;
        }
    };
    let done = now_ns();
    ctx.recorders.borrow_mut()[group].handshake(done - started, done);
    // A receiver speaking another dialect authenticates first, with its own token.
    let token = match est.codec.dialect() {
        Dialect::Ws(_) => match ctx.cfg.token(plan.id) {
            Some(t) => Some(t),
            None => {
                ctx.recorders.borrow_mut()[group].fault(Fault::AuthRejected, done);
                ctx.setup_finished(false);
                return;
            }
        },
        _ => None,
    };
    ctx.opened();
    let mut d = Driver::new(&ctx, local, &plan, est, token.as_deref());
    let result = poll_fn(|cx| d.poll_run(cx)).await;
    d.finish(result);
    ctx.closed();
}

/// One storm worker: connect, complete the handshake, close, again, while running.
async fn storm(
    ctx: &ShardCtx,
    local: usize,
    plan: &ConnPlan,
    interval_ns: u64,
    phase_ns: u64,
    limit: u64,
) {
    wait_phase_change(ctx, local, Phase::Setup).await;
    let window = ctx.window.get();
    let mut next_due = window.t0 + phase_ns;
    let mut n = 0u64;
    let group = plan.group;
    while ctx.phase.get() == Phase::Running && n < limit {
        if interval_ns > 0 {
            if next_due >= window.measure_end {
                break;
            }
            sleep_until(next_due).await;
        }
        let start = now_ns();
        let intended = if interval_ns > 0 { next_due } else { start };
        if intended >= window.measure_end || ctx.phase.get() != Phase::Running {
            break;
        }
        n += 1;
        next_due += interval_ns;
        {
            let mut recs = ctx.recorders.borrow_mut();
            let r = &mut recs[group];
            r.counts.connect_attempts += 1;
            r.sent(intended, start, 1);
        }
        let res = match glommio::timer::timeout(ctx.cfg.connect_timeout, async {
            Ok(Box::pin(establish(ctx, plan, ctx.cfg.linger_zero)).await)
        })
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Fault::ConnectTimeout),
        };
        let done = now_ns();
        match res {
            Ok(mut est) => {
                {
                    let mut recs = ctx.recorders.borrow_mut();
                    let r = &mut recs[group];
                    r.handshake(done - start, done);
                    r.received(intended, done);
                    r.seq.unique += 1;
                }
                ctx.opened();
                // Close politely but without waiting: a close frame, then (with
                // `linger_zero`) RST, so no TIME_WAIT eats the source ports.
                let mut out = BytesMut::new();
                est.codec.encode_close(&mut out, None);
                if !out.is_empty() {
                    let _ = futures_lite::future::poll_once(est.stream.write(&out)).await;
                }
                drop(est);
                ctx.closed();
            }
            Err(f) => ctx.recorders.borrow_mut()[group].fault(f, done),
        }
    }
    // Keep the slot registered until closing so the control task's wake-ups are harmless.
}

/// Send-side state of a scheduled or windowed sender.
struct SendState {
    sched: Sender,
    sent: u64,
    next_due: u64,
    started: bool,
    done_reported: bool,
}

impl SendState {
    fn new(sched: Sender) -> SendState {
        SendState {
            sched,
            sent: 0,
            next_due: 0,
            started: false,
            done_reported: false,
        }
    }
}

enum Kind {
    Request {
        ack: bool,
        send: SendState,
        in_flight: u64,
        seq: SeqWindow,
    },
    Member {
        publish: Option<(PublishTo, SendState)>,
        seqs: AHashMap<u32, SeqWindow>,
    },
    Idle,
}

/// An open connection being driven.
struct Driver<'a> {
    ctx: &'a ShardCtx,
    local: usize,
    id: u32,
    group: usize,
    stream: Stream,
    tls: bool,
    codec: ClientCodec,
    rbuf: BytesMut,
    wbuf: BytesMut,
    kind: Kind,
    /// Rooms to join once authenticated (dialects other than stelar).
    rooms_after_auth: Vec<Arc<str>>,
    /// The dialect's authentication is not confirmed yet.
    auth_pending: bool,
    joins_pending: usize,
    ready: bool,
    timer: Option<(u64, Timer)>,
    close_sent: bool,
    close_deadline: u64,
    /// The server closed first (close frame or DISCONNECT).
    peer_closed: bool,
}

/// How an open connection ended.
type End = Result<(), Fault>;

impl<'a> Driver<'a> {
    /// `token`: authenticate with it first (the `--dialect` receivers), then join.
    fn new(
        ctx: &'a ShardCtx,
        local: usize,
        plan: &ConnPlan,
        est: Established,
        token: Option<&str>,
    ) -> Driver<'a> {
        let Established {
            stream,
            mut codec,
            rbuf,
        } = est;
        let mut wbuf = BytesMut::new();
        let mut rooms_after_auth = Vec::new();
        if let Some(token) = token {
            codec.encode(&mut wbuf, Request::Auth(token));
        }
        let (kind, joins) = match &plan.role {
            Role::Request { ack, sender } => (
                Kind::Request {
                    ack: *ack,
                    send: SendState::new(sender.clone()),
                    in_flight: 0,
                    seq: SeqWindow::default(),
                },
                0,
            ),
            Role::Member { rooms, publish } => {
                let joins = if token.is_some() {
                    rooms_after_auth = rooms.clone();
                    0
                } else {
                    let names: Vec<&str> = rooms.iter().map(|r| &**r).collect();
                    codec.encode_joins(&mut wbuf, &names)
                };
                (
                    Kind::Member {
                        publish: publish
                            .as_ref()
                            .map(|(to, s)| (to.clone(), SendState::new(s.clone()))),
                        seqs: AHashMap::new(),
                    },
                    joins,
                )
            }
            Role::Idle | Role::Storm { .. } => {
                codec.shrink();
                (Kind::Idle, 0)
            }
        };
        let tls = matches!(stream, Stream::Tls(_));
        Driver {
            ctx,
            local,
            id: plan.id,
            group: plan.group,
            stream,
            tls,
            codec,
            rbuf,
            wbuf,
            kind,
            rooms_after_auth,
            auth_pending: token.is_some(),
            joins_pending: joins,
            ready: false,
            timer: None,
            close_sent: false,
            close_deadline: 0,
            peer_closed: false,
        }
    }

    /// Generates the sends due at `now` into the write buffer.
    fn generate(&mut self, now: u64) {
        let window = self.ctx.window.get();
        let ctx = self.ctx;
        let id = self.id;
        let mut recs = ctx.recorders.borrow_mut();
        let rec = &mut recs[self.group];
        let codec = &mut self.codec;
        let wbuf = &mut self.wbuf;
        let (send, mut in_flight, ack, to) = match &mut self.kind {
            Kind::Request {
                ack,
                send,
                in_flight,
                ..
            } => (send, Some(in_flight), *ack, None),
            Kind::Member {
                publish: Some((to, send)),
                ..
            } => (send, None, false, Some(to.clone())),
            _ => return,
        };
        if !send.started {
            send.started = true;
            send.next_due = window.t0 + send.sched.phase_ns;
        }
        let mut burst = 0;
        loop {
            if send.sent >= send.sched.limit || burst >= MAX_BURST {
                break;
            }
            let stamp_ns = if send.sched.interval_ns == 0 {
                // Closed loop: a free window slot and the window still open.
                let busy = in_flight.as_ref().map_or(0, |f| **f);
                if busy >= u64::from(send.sched.window.max(1)) || now >= window.measure_end {
                    break;
                }
                now
            } else {
                if send.next_due > now || send.next_due >= window.measure_end {
                    break;
                }
                let due = send.next_due;
                send.next_due += send.sched.interval_ns;
                due
            };
            let stamp = Stamp {
                publisher: id,
                seq: send.sent,
                sent_ns: stamp_ns,
            };
            let req = match (&to, in_flight.is_some(), ack) {
                (_, true, true) => Request::Ack(&stamp, send.sent + 1),
                (_, true, false) => Request::Echo(&stamp),
                (Some(PublishTo::Room(room)), false, _) => Request::Publish(room, &stamp),
                (_, false, _) => Request::Broadcast(&stamp),
            };
            codec.encode(wbuf, req);
            send.sent += 1;
            burst += 1;
            rec.sent(stamp_ns, now, send.sched.audience);
            if let Some(f) = in_flight.as_mut() {
                **f += 1;
                ctx.in_flight.set(ctx.in_flight.get() + 1);
            }
        }
        if burst >= MAX_BURST {
            // More may be due: come back this turn without sleeping.
            self.timer = None;
        }
        if send.sent >= send.sched.limit && send.sched.limit != u64::MAX && !send.done_reported {
            send.done_reported = true;
            ctx.sender_finished();
        }
    }

    /// The next instant this connection must wake for on its own.
    fn next_wake(&self, phase: Phase) -> Option<u64> {
        if self.close_sent {
            return Some(self.close_deadline);
        }
        match phase {
            Phase::Setup if !self.ready => Some(self.ctx.setup_deadline.get()),
            Phase::Running => {
                let send = match &self.kind {
                    Kind::Request { send, .. } => send,
                    Kind::Member {
                        publish: Some((_, send)),
                        ..
                    } => send,
                    _ => return None,
                };
                let w = self.ctx.window.get();
                (send.sched.interval_ns > 0
                    && send.started
                    && send.sent < send.sched.limit
                    && send.next_due < w.measure_end)
                    .then_some(send.next_due)
            }
            _ => None,
        }
    }

    fn handle_input(&mut self, now: u64) -> Result<(), Fault> {
        let ctx = self.ctx;
        let mut recs = ctx.recorders.borrow_mut();
        let rec = &mut recs[self.group];
        let mut got_data = false;
        loop {
            let item = match self.codec.decode(&mut self.rbuf) {
                Ok(Some(i)) => i,
                Ok(None) => break,
                Err(e) => return Err(e.into()),
            };
            match item {
                Inbound::Data { stamp, .. } => {
                    got_data = true;
                    rec.received(stamp.sent_ns, now);
                    match &mut self.kind {
                        Kind::Request { in_flight, seq, .. } => {
                            if stamp.publisher == self.id {
                                seq.observe(stamp.seq);
                                if *in_flight > 0 {
                                    *in_flight -= 1;
                                    ctx.in_flight.set(ctx.in_flight.get().saturating_sub(1));
                                }
                            } else {
                                rec.fault(crate::fault::Fault::Unexpected, now);
                            }
                        }
                        Kind::Member { seqs, .. } => {
                            seqs.entry(stamp.publisher).or_default().observe(stamp.seq);
                        }
                        Kind::Idle => {}
                    }
                }
                Inbound::Joined => {
                    self.joins_pending = self.joins_pending.saturating_sub(1);
                }
                Inbound::Authenticated if self.auth_pending => {
                    self.auth_pending = false;
                    let rooms = std::mem::take(&mut self.rooms_after_auth);
                    let names: Vec<&str> = rooms.iter().map(|r| &**r).collect();
                    self.joins_pending = self.codec.encode_joins(&mut self.wbuf, &names);
                    if matches!(self.kind, Kind::Idle) {
                        self.codec.shrink();
                    }
                }
                Inbound::AuthFailed => return Err(Fault::AuthRejected),
                Inbound::ServerError if self.auth_pending => return Err(Fault::AuthRejected),
                Inbound::Left | Inbound::Connect | Inbound::Ignored | Inbound::Authenticated => {}
                Inbound::ServerError => rec.fault(Fault::ServerError, now),
                Inbound::Unrecognized => rec.fault(Fault::Unexpected, now),
                Inbound::Ping(p) => self.codec.encode_pong(&mut self.wbuf, &p),
                Inbound::Closed(code) => {
                    self.peer_closed = true;
                    if self.auth_pending {
                        rec.fault(Fault::AuthRejected, now);
                    } else if ctx.phase.get() != Phase::Closing {
                        rec.fault(Fault::ClosedByServer, now);
                    }
                    if !self.close_sent {
                        self.codec.encode_close(&mut self.wbuf, code);
                        self.close_sent = true;
                        self.close_deadline = now + CLOSE_GRACE_NS;
                    }
                    break;
                }
            }
        }
        if got_data {
            ctx.last_rx.set(now);
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 0 {
            self.rbuf = BytesMut::new();
        }
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut written = 0u64;
        let res = loop {
            if self.wbuf.is_empty() {
                break if self.tls {
                    Pin::new(&mut self.stream).poll_flush(cx)
                } else {
                    Poll::Ready(Ok(()))
                };
            }
            match Pin::new(&mut self.stream).poll_write(cx, &self.wbuf) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.wbuf.advance(n);
                    written += n as u64;
                }
                other => break other.map(|r| r.map(drop)),
            }
        };
        if written > 0 {
            self.ctx.recorders.borrow_mut()[self.group]
                .counts
                .bytes_sent += written;
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 256 * 1024 {
            self.wbuf = BytesMut::new();
        }
        res
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        let ctx = self.ctx;
        let mut budget = READ_BUDGET;
        loop {
            let now = now_ns();
            let phase = ctx.phase.get();
            if !self.ready {
                if self.joins_pending == 0 && !self.auth_pending {
                    self.ready = true;
                    ctx.recorders.borrow_mut()[self.group].counts.ready += 1;
                    ctx.setup_finished(true);
                } else if now >= ctx.setup_deadline.get() || phase != Phase::Setup {
                    return Poll::Ready(Err(Fault::JoinTimeout));
                }
            }
            match phase {
                Phase::Running if self.ready && !self.close_sent => self.generate(now),
                Phase::Closing if !self.close_sent => {
                    if !self.codec.dialect().is_ws() {
                        return Poll::Ready(Ok(()));
                    }
                    self.codec.encode_close(&mut self.wbuf, None);
                    self.close_sent = true;
                    self.close_deadline = now + CLOSE_GRACE_NS;
                }
                _ => {}
            }
            match self.poll_flush(cx) {
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(if self.close_sent {
                        Ok(())
                    } else {
                        Err(Fault::from_io(&e, false))
                    });
                }
                Poll::Ready(Ok(())) => {
                    if self.close_sent
                        && (self.codec.close_complete()
                            || self.peer_closed && !self.codec.dialect().is_ws())
                    {
                        return Poll::Ready(Ok(()));
                    }
                    if self.peer_closed && !self.codec.dialect().is_ws() {
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Pending => {}
            }
            if self.close_sent && now >= self.close_deadline {
                return Poll::Ready(Ok(()));
            }
            if budget == 0 {
                cx.waker().wake_by_ref();
                break;
            }
            budget -= 1;
            match poll_read_into(&mut self.stream, &mut self.rbuf, ctx, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(if self.close_sent || self.peer_closed {
                        Ok(())
                    } else {
                        Err(Fault::ServerEof)
                    });
                }
                Poll::Ready(Ok(n)) => {
                    ctx.recorders.borrow_mut()[self.group].counts.bytes_received += n as u64;
                    if let Err(f) = self.handle_input(now_ns()) {
                        return Poll::Ready(Err(f));
                    }
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(if self.close_sent {
                        Ok(())
                    } else {
                        Err(Fault::from_io(&e, false))
                    });
                }
                Poll::Pending => {
                    // Nothing to read. Loop again only if there is something to send now.
                    let now = now_ns();
                    let due = self.next_wake(ctx.phase.get()).is_some_and(|t| t <= now);
                    let closed_loop_ready = matches!(&self.kind, Kind::Request { send, in_flight, .. }
                        if send.sched.interval_ns == 0 && *in_flight < u64::from(send.sched.window.max(1)) && send.sent < send.sched.limit)
                        && ctx.phase.get() == Phase::Running
                        && self.ready
                        && now < ctx.window.get().measure_end;
                    if !(due || closed_loop_ready && self.wbuf.is_empty()) {
                        break;
                    }
                    if closed_loop_ready && !due {
                        // Window has room: generate() next turn fills it.
                        continue;
                    }
                }
            }
        }
        ctx.wakers.register(self.local, cx.waker());
        if let Some(at) = self.next_wake(ctx.phase.get()) {
            let now = now_ns();
            if at <= now {
                cx.waker().wake_by_ref();
            } else {
                let timer = match &mut self.timer {
                    Some((t, timer)) if *t == at => timer,
                    slot => {
                        *slot = Some((at, Timer::new(Duration::from_nanos(at - now))));
                        match slot {
                            Some((_, timer)) => timer,
                            None => return Poll::Pending,
                        }
                    }
                };
                if Pin::new(timer).poll(cx).is_ready() {
                    self.timer = None;
                    cx.waker().wake_by_ref();
                }
            }
        }
        Poll::Pending
    }

    /// Accounts for the connection's end.
    fn finish(&mut self, result: End) {
        let ctx = self.ctx;
        let now = now_ns();
        if !self.ready {
            ctx.setup_finished(false);
        }
        let mut recs = ctx.recorders.borrow_mut();
        let rec = &mut recs[self.group];
        if let Err(f) = result {
            rec.fault(f, now);
        }
        match &self.kind {
            Kind::Request {
                in_flight,
                seq,
                send,
                ..
            } => {
                rec.seq.add_window(seq);
                rec.counts.unanswered += *in_flight;
                ctx.in_flight
                    .set(ctx.in_flight.get().saturating_sub(*in_flight));
                if !send.done_reported && send.sched.limit != u64::MAX {
                    drop(recs);
                    ctx.sender_finished();
                }
            }
            Kind::Member { seqs, publish } => {
                for w in seqs.values() {
                    rec.seq.add_window(w);
                }
                if let Some((_, send)) = publish {
                    if !send.done_reported && send.sched.limit != u64::MAX {
                        drop(recs);
                        ctx.sender_finished();
                    }
                }
            }
            Kind::Idle => {}
        }
    }
}
