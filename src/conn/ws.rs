//! The WebSocket + HTTP port: the HTTP phase, the upgrade, and the WebSocket open phase.
//!
//! HTTP phase: requests are read with the handshake timeout (also the keep-alive idle
//! timeout); plain requests go to `http.rs`; an upgrade is validated by
//! `protocol::ws::handshake`. After the `101`, limits and middleware run (a refusal is a
//! close frame, PROTOCOL.md §7.3 / Q9), then [`WsSession`] runs under [`super::Drive`]
//! (served from the shard's table, `open.rs`).
//!
//! [`WsSession`] decodes with `protocol::ws::codec` (in place, limits, UTF-8, inflate) and,
//! for stelar clients, parses envelopes with `protocol::stelar` and hands them to
//! `app::dispatch`. On the bench endpoints (`--bench-endpoints`) `/echo` returns every
//! message as it came (the Autobahn suite runs against it) and `/broadcast` sends every
//! message to every other `/broadcast` client.

use std::borrow::Cow;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use glommio::net::TcpStream;

use super::auth::{FirstMessage, Outcome};
use super::{fill, http, Accepted, Flow, Interrupted, Io, Session, Shared};
use crate::app::dispatch::{self, AckRequest, Data, Env};
use crate::app::error::ClientError;
use crate::dialect::DialectId;
use crate::hub::client::{Client, CloseCause};
use crate::hub::outgoing::{Body, Outgoing, WsForm};
use crate::hub::Hub;
use crate::protocol::http::{parse_request, BodyDecoder, BodyKind, Request, CONTINUE_RESPONSE};
use crate::protocol::stelar::{binary, envelope};
use crate::protocol::ws::close::CloseCode;
use crate::protocol::ws::codec::{
    ClosePhase, Decoder, DecoderConfig, InflateParams, Message, Role,
};
use crate::protocol::ws::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::protocol::ws::handshake;
use crate::stats::Transport;

/// What a WebSocket path speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// stelar JSON / binary envelopes.
    Stelar,
    /// Raw `/echo`.
    Echo,
    /// Raw `/broadcast`.
    Broadcast,
    /// Another dialect (`dialect/`), chosen by the path.
    Dialect(DialectId),
}

/// `/echo`'s answers to one batch of input, framed back to back into one buffer and queued as
/// one frame: one allocation and one queue entry per batch (16 answers at echo 100 × 16 in
/// flight) instead of one per message.
#[derive(Default)]
struct Echoes {
    out: Vec<u8>,
    count: u64,
}

impl Echoes {
    /// Most bytes reserved ahead for the rest of a batch.
    const AHEAD: usize = 16 * 1024;

    /// Frames `payload` as the answer to a message; `rest` is the input still buffered.
    fn push(&mut self, opcode: OpCode, payload: &[u8], rest: &[u8]) {
        let mut header = [0u8; MAX_HEADER_LEN];
        let header_len = FrameHeader::new(opcode, payload.len() as u64).encode(&mut header);
        let need = header_len + payload.len();
        if self.out.capacity() - self.out.len() < need {
            // Room for this answer and those to the whole messages already buffered behind
            // it, counted exactly, so the buffer becomes a `Bytes` as it is (no shrinking
            // reallocation, no second allocation for a header of spare room).
            self.out.reserve_exact(need + Self::answers_ahead(rest));
        }
        self.out.extend_from_slice(&header[..header_len]);
        self.out.extend_from_slice(payload);
        self.count += 1;
    }

    /// The length of the answers to the whole, unfragmented, uncompressed data frames at the
    /// front of `input` (control frames skipped), up to [`Echoes::AHEAD`]: a server's header
    /// is a client's without the mask key, so this reads headers only.
    fn answers_ahead(mut input: &[u8]) -> usize {
        let mut total = 0;
        while let Ok(Some((h, len))) = FrameHeader::parse(input) {
            let Some(frame) = len
                .checked_add(h.payload_len as usize)
                .filter(|&f| f <= input.len())
            else {
                break;
            };
            match h.opcode {
                OpCode::Text | OpCode::Binary if h.fin && !h.rsv1 => {
                    total += FrameHeader::new(h.opcode, h.payload_len).encoded_len()
                        + h.payload_len as usize;
                    if total >= Self::AHEAD {
                        return Self::AHEAD;
                    }
                }
                OpCode::Ping | OpCode::Pong => {}
                _ => break,
            }
            input = &input[frame..];
        }
        total
    }

    /// Queues what was framed so far.
    fn queue(&mut self, hub: &Hub, client: &Client) {
        if self.count > 0 {
            let mut out = std::mem::take(&mut self.out);
            // A buffer with spare room would become a `Bytes` with a header of its own (a
            // second allocation); sized exactly (the usual case, see `push`) it becomes one as
            // it is. Only a lot of spare room (the batch ended in a fault) is given back.
            if out.capacity() - out.len() > out.len() / 4 {
                out.shrink_to_fit();
            }
            hub.send_frames(client, Bytes::from(out), self.count);
            self.count = 0;
        }
    }
}

/// Serves one socket accepted on the WebSocket/HTTP port (over TLS with `tls`).
///
/// An idle connection's memory is mostly its task's future, so that future holds only what the
/// open phase needs: the socket is handed to the shard's ring before the future is made (an
/// `async fn`'s arguments stay in its future for its whole life), and the TLS handshake, the
/// HTTP phase and the upgrade run as boxed futures of their own, freed once the connection is
/// open.
pub(crate) fn serve(
    stream: TcpStream,
    shared: Rc<Shared>,
    tls: bool,
) -> impl std::future::Future<Output = ()> {
    let accepted = std::time::Instant::now();
    let conn = Accepted::new(stream, &shared, Transport::Ws, tls);
    serve_accepted(conn, shared, tls, accepted)
}

async fn serve_accepted(
    mut conn: Accepted,
    shared: Rc<Shared>,
    tls: bool,
    accepted: std::time::Instant,
) {
    let client = conn.client.clone();
    shared.arm_timer(&client, shared.hub.config().handshake_timeout());
    // The TLS handshake and the HTTP phase share the handshake timeout.
    if tls && !Box::pin(super::tls::handshake(&mut conn.io, &shared, &client)).await {
        conn.finish(&shared, false);
        return;
    }
    let upgraded = Box::pin(http_then_upgrade(&mut conn.io, &shared, &client, accepted)).await;
    match upgraded {
        Some(Opened {
            mut session,
            _ip_slot,
        }) => {
            if !conn.io.rbuf.is_empty() {
                // Frames that arrived with the upgrade request (or behind the `auth` message).
                let mut buf = std::mem::take(&mut conn.io.rbuf);
                if session.handle_input(&mut buf, &shared, &client) == Flow::Stop {
                    session.failed = true;
                }
                conn.io.rbuf = buf;
            }
            // From here the shard's table serves it; this task ends.
            conn.into_open(session, _ip_slot, &shared);
        }
        None => conn.finish(&shared, false),
    }
}

/// The HTTP phase, then the upgrade when a request asks for it.
async fn http_then_upgrade(
    io: &mut Io,
    shared: &Rc<Shared>,
    client: &Rc<Client>,
    accepted: std::time::Instant,
) -> Option<Opened> {
    let req = http_phase(io, shared, client).await?;
    upgrade(io, shared, client, req, accepted).await
}

/// An upgraded, open WebSocket connection.
struct Opened {
    session: WsSession,
    /// This client's place in the per-IP count, held until the connection ends.
    _ip_slot: crate::protect::IpSlot,
}

/// Answers plain HTTP requests until one asks to upgrade (returned) or the connection ends.
async fn http_phase(io: &mut Io, shared: &Shared, client: &Rc<Client>) -> Option<Request<Bytes>> {
    let hub = &shared.hub;
    loop {
        let req = loop {
            match parse_request(&io.rbuf, &shared.http_limits()) {
                Ok(Some(req)) => break req.into_owned(),
                Ok(None) => match fill(io, shared, client).await {
                    Ok(_) => {}
                    Err(Interrupted::Timeout) => {
                        if !io.rbuf.is_empty() {
                            hub.counters.disconnect("handshake_timeout");
                        }
                        return None;
                    }
                    Err(_) => return None,
                },
                Err(e) => {
                    hub.counters.error(e.label());
                    let mut out = BytesMut::new();
                    e.write_response(&mut out);
                    hub.queue_control(client, out.freeze());
                    let _ = io.flush(client, hub).await;
                    return None;
                }
            }
        };
        if req.wants_upgrade() {
            return Some(req);
        }
        io.rbuf.advance(req.head_len());
        let body = match req.body_kind() {
            BodyKind::Empty => Bytes::new(),
            kind => {
                if req.expects_continue() {
                    hub.queue_control(client, Bytes::from_static(CONTINUE_RESPONSE));
                    if io.flush(client, hub).await.is_err() {
                        return None;
                    }
                }
                // API callers get their errors in the API's JSON shape.
                let api = req.path().starts_with("/api/");
                let mut decoder = match BodyDecoder::new(kind, &shared.http_limits()) {
                    Ok(d) => d,
                    Err(e) => {
                        respond_error(io, shared, client, e, api).await;
                        return None;
                    }
                };
                loop {
                    match decoder.decode(&mut io.rbuf) {
                        Ok(Some(body)) => break body,
                        Ok(None) => {
                            if fill(io, shared, client).await.is_err() {
                                return None;
                            }
                        }
                        Err(e) => {
                            respond_error(io, shared, client, e, api).await;
                            return None;
                        }
                    }
                }
            }
        };
        let keep_alive = req.keep_alive();
        let response = http::respond(shared, &req, body, keep_alive).await;
        crate::stats::Counters::add(&hub.counters.http_requests, 1);
        hub.queue_control(client, response);
        if io.flush(client, hub).await.is_err() || !keep_alive {
            return None;
        }
        io.release_if_empty();
        hub.set_input_held(client, io.rbuf.len());
        shared.arm_timer(client, hub.config().handshake_timeout());
    }
}

async fn respond_error(
    io: &mut Io,
    shared: &Shared,
    client: &Client,
    e: crate::protocol::http::HttpError,
    api: bool,
) {
    shared.hub.counters.error(e.label());
    let response = if api {
        http::api_error_response(e)
    } else {
        let mut out = BytesMut::new();
        e.write_response(&mut out);
        out.freeze()
    };
    shared.hub.queue_control(client, response);
    let _ = io.flush(client, &shared.hub).await;
}

/// Completes the upgrade (protection, the 101, limits, authentication, middleware) and opens
/// the client. `None` when it was refused or went away (no disconnect hooks are due then).
async fn upgrade(
    io: &mut Io,
    shared: &Rc<Shared>,
    client: &Rc<Client>,
    req: Request<Bytes>,
    accepted: std::time::Instant,
) -> Option<Opened> {
    let hub = &shared.hub;
    let config = hub.config();
    let mode = match req.path() {
        "/echo" if config.bench_endpoints => Mode::Echo,
        "/broadcast" if config.bench_endpoints => Mode::Broadcast,
        path => match config
            .dialects
            .iter()
            .find(|r| r.path == path)
            .and_then(|r| hub.dialects().id(&r.name))
        {
            Some(id) if !id.is_stelar() => Mode::Dialect(id),
            _ => Mode::Stelar,
        },
    };
    let mut out = BytesMut::new();
    // Protection, before the 101 and before any client state: handshake rate, origin,
    // connections per IP, the application's vetoes. The slot holds this client's place in
    // the per-IP count until the connection ends.
    let ip_slot = match crate::protect::admit_ws(hub, &shared.app, client.peer(), &req) {
        Ok(slot) => slot,
        Err(refusal) => {
            crate::protect::write_refusal(&refusal, &mut out);
            hub.queue_control(client, out.freeze());
            let _ = io.flush(client, hub).await;
            return None;
        }
    };
    let offer = shared.handshake();
    let negotiated = match handshake::accept(&req, &offer, &[], &mut out) {
        Ok(n) => n,
        Err(e) => {
            hub.counters.error(e.label());
            e.write_response(&mut out);
            hub.queue_control(client, out.freeze());
            let _ = io.flush(client, hub).await;
            return None;
        }
    };
    io.rbuf.advance(negotiated.consumed);
    let deflate = negotiated.deflate;
    hub.queue_control(client, out.freeze());
    // The 101 goes out now, so that the handshake histogram measures it written (and the
    // client learns of the upgrade before the checks and hooks that follow).
    if io.flush(client, hub).await.is_err() {
        return None;
    }
    let micros = u64::try_from(accepted.elapsed().as_micros()).unwrap_or(u64::MAX);
    hub.counters.observe_handshake_micros(micros);

    // PROTOCOL.md §1.1 step 7 / §7.3: limits are checked after the 101, refused with 1008.
    if hub.at_capacity() {
        hub.counters.refuse("server_full");
        refuse(io, client, hub, 1008, Cow::Borrowed("Server full")).await;
        return None;
    }
    // Kept (as its raw head, ≈ 160 bytes) only where something may ask for it: application
    // code, a dialect (its authentication reads the path and headers), or an authenticator
    // (until it has run).
    let authenticates = mode == Mode::Stelar && config.auth.mode != crate::config::AuthMode::Off;
    let keeps_request = match mode {
        Mode::Echo | Mode::Broadcast => false,
        Mode::Dialect(_) => true,
        Mode::Stelar => shared.app.sees_clients() || authenticates,
    };
    if keeps_request {
        client.set_request(req.head());
    }
    if let Some(d) = deflate {
        client.set_ws_form(if d.server_to_client().max_window_bits < 15 {
            WsForm::DeflateNarrow
        } else {
            WsForm::Deflate
        });
    }
    let limits = &config.limits;
    let mut session = WsSession {
        decoder: Decoder::new(DecoderConfig {
            role: Role::Server,
            max_frame_size: limits.max_frame_size,
            max_message_size: limits.max_message_size,
            inflate: deflate.map(|d| InflateParams {
                no_context_takeover: d.client_to_server().no_context_takeover,
            }),
        }),
        mode,
        failed: false,
        awaiting_first: false,
        first: None,
    };
    // Authentication (`conn/auth.rs`) comes first: the middleware sees who the client is.
    let mut user = None;
    if authenticates {
        let presented = crate::auth::token_from_request(&req);
        match super::auth::authenticate(io, &mut session, shared, client, presented).await {
            Outcome::Open(u) => user = u,
            Outcome::Refused | Outcome::Gone => return None,
        }
        if !shared.app.sees_clients() {
            // Only the authenticator could read it, and it has run.
            client.drop_request();
        }
    }
    if let Mode::Dialect(id) = mode {
        // Dialects authenticate in their own way once open (`dialect/engine.rs`).
        client.set_dialect(id);
    }
    if matches!(mode, Mode::Echo | Mode::Broadcast) {
        client.set_stelar(false);
    } else if let Err(reject) = dispatch::connect(hub, &shared.app, client).await {
        hub.counters.refuse("middleware");
        refuse(io, client, hub, reject.code, Cow::Owned(reject.reason)).await;
        return None;
    }
    shared.cancel_timer(client);
    hub.open(client);
    if let Some(user) = &user {
        // Before any connect hook speaks: the first thing an authenticated client hears.
        hub.send_to(
            client,
            &Outgoing::auth_ok(&client.id.to_string(), Some(user)),
        );
    }
    if mode == Mode::Broadcast {
        hub.join_raw_broadcast(client);
    }
    if mode == Mode::Stelar {
        dispatch::connected(hub, &shared.app, client);
    }
    if let Mode::Dialect(_) = mode {
        let env = Env {
            hub,
            app: &shared.app,
            client,
        };
        crate::dialect::engine::opened(&env);
    }
    Some(Opened {
        session,
        _ip_slot: ip_slot,
    })
}

/// Sends a close frame with `code` and `reason` after the 101 and flushes it.
async fn refuse(
    io: &mut Io,
    client: &Client,
    hub: &crate::hub::Hub,
    code: u16,
    reason: Cow<'static, str>,
) {
    let code = CloseCode::new(code).unwrap_or(CloseCode::POLICY);
    hub.send_control(client, &Outgoing::close(code, reason));
    let _ = io.flush(client, hub).await;
}

/// The WebSocket open phase.
struct WsSession {
    decoder: Decoder,
    mode: Mode,
    /// A protocol fault failed the connection; the close frame is queued.
    failed: bool,
    /// Authentication waits for the first message (`conn/auth.rs`): it is not dispatched.
    awaiting_first: bool,
    /// That first message, once it came; nothing more is decoded until it is taken.
    first: Option<Box<FirstMessage>>,
}

impl WsSession {
    /// A stelar text message: envelope → dispatch.
    fn text(&self, msg: Bytes, env: &Env<'_>) {
        // One scan validates the message and finds `data`'s members for the relay.
        match envelope::parse_with_members(&msg) {
            Ok((e, members)) => {
                let data = e.data_range(&msg).map(|r| Data {
                    text: msg.slice(r),
                    members,
                });
                let ack = e.ack_name.as_ref().map(|name| AckRequest {
                    name: name.to_string(),
                    correlation_id: e.correlation_id.as_ref().map(|c| c.to_string()),
                    received: std::time::Instant::now(),
                });
                dispatch::event(env, &e.event, data, ack);
            }
            Err(err) => env.error(ClientError::InvalidEnvelope(err), None),
        }
    }

    /// A stelar binary message: envelope → dispatch.
    fn binary(&self, msg: Bytes, env: &Env<'_>) {
        match binary::parse(&msg) {
            Ok(b) => match b.event.as_deref() {
                Some(event) => {
                    let payload = msg.slice(b.payload_range());
                    dispatch::binary(env, event, payload);
                }
                None => env.error(ClientError::BinaryWithoutEvent, None),
            },
            Err(err) => env.error(ClientError::InvalidBinaryEnvelope(err), None),
        }
    }

    /// Decodes and dispatches every complete message in `buf`; `/echo`'s answers are
    /// gathered in `echoes` (queued by the caller, or here before a close).
    fn handle_messages(&mut self, buf: &mut BytesMut, env: &Env<'_>, echoes: &mut Echoes) -> Flow {
        let (hub, client) = (env.hub, env.client);
        loop {
            if self.first.is_some() {
                // Authentication has the first message; the rest waits in `buf`.
                return Flow::Continue;
            }
            match self.decoder.decode(buf) {
                Ok(Some(msg)) => match msg {
                    Message::Text(b) if self.awaiting_first => self.first_text(&b),
                    Message::Binary(_) if self.awaiting_first => {
                        self.awaiting_first = false;
                        self.first =
                            Some(Box::new(FirstMessage::Refused(crate::auth::Fault::Missing)));
                    }
                    Message::Text(b) => match self.mode {
                        Mode::Stelar => self.text(b, env),
                        Mode::Dialect(id) => crate::dialect::engine::text(env, id, &b),
                        Mode::Echo => echoes.push(OpCode::Text, &b, buf),
                        Mode::Broadcast => hub.raw_broadcast(
                            Outgoing::new(Body::RawWs {
                                text: true,
                                payload: b,
                            }),
                            Some(client.id),
                        ),
                    },
                    Message::Binary(b) => match self.mode {
                        Mode::Stelar => self.binary(b, env),
                        Mode::Dialect(id) => crate::dialect::engine::binary(env, id, &b),
                        Mode::Echo => echoes.push(OpCode::Binary, &b, buf),
                        Mode::Broadcast => hub.raw_broadcast(
                            Outgoing::new(Body::RawWs {
                                text: false,
                                payload: b,
                            }),
                            Some(client.id),
                        ),
                    },
                    // RFC 6455 §5.5.2: a pong with the ping's payload, as soon as practical;
                    // §5.5.3: past a few waiting pongs only the most recent ping is answered.
                    Message::Ping(p) => hub.send_pong(client, &Outgoing::new(Body::Pong(p))),
                    Message::Pong(_) => {}
                    Message::Close(_) => {
                        // The answers to the messages before the close go out first.
                        echoes.queue(hub, client);
                        if let ClosePhase::CloseReceived { reply } = self.decoder.phase() {
                            // §5.5.1: echo the status code.
                            let close = Outgoing::new(Body::Close {
                                code: reply,
                                reason: Cow::Borrowed(""),
                                disconnect: false,
                            });
                            hub.send_control(client, &close);
                            self.decoder.handle_close_sent();
                        }
                        return Flow::Stop;
                    }
                },
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    hub.counters.error(e.label());
                    echoes.queue(hub, client);
                    // §7.1.7: fail the connection — send a close with the code, then close.
                    // Answers to the messages before the faulty frame still go out first.
                    hub.send_control(client, &Outgoing::close(e.close_code(), e.to_string()));
                    self.decoder.handle_close_sent();
                    self.failed = true;
                    return Flow::Stop;
                }
            }
        }
    }
}

impl Session for WsSession {
    fn handle_input(&mut self, buf: &mut BytesMut, shared: &Shared, client: &Rc<Client>) -> Flow {
        let hub = &shared.hub;
        let env = Env {
            hub,
            app: &shared.app,
            client,
        };
        let mut echoes = Echoes::default();
        let flow = self.handle_messages(buf, &env, &mut echoes);
        echoes.queue(hub, client);
        flow
    }

    fn begin_close(&mut self, cause: CloseCause, client: &Client, hub: &Hub) {
        if cause == CloseCause::InputBudget {
            // Its input was discarded and is no longer read: no close reply will be seen.
            self.failed = true;
        }
        if self.decoder.phase() == ClosePhase::Open {
            let own = match self.mode {
                Mode::Dialect(id) => hub.dialects().get(id).and_then(|d| d.close_code(cause)),
                _ => None,
            };
            hub.send_control(client, &Outgoing::closing_in(client, cause, own));
            self.decoder.handle_close_sent();
        }
    }

    fn done(&self) -> bool {
        self.failed || self.decoder.phase() == ClosePhase::Closed
    }

    fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    fn discard_input(&mut self) {
        self.decoder.discard_partial();
    }

    fn await_first_message(&mut self) {
        self.awaiting_first = true;
    }

    fn take_first_message(&mut self) -> Option<FirstMessage> {
        self.first.take().map(|f| *f)
    }
}

impl WsSession {
    /// A text message while authentication waits: `auth` carries the token, a `pong`
    /// heartbeat is let through, anything else is refused (nothing is processed before auth).
    fn first_text(&mut self, msg: &Bytes) {
        // An `auth` message is a token and a little JSON; a larger one is not parsed.
        let first = if msg.len() > crate::auth::MAX_TOKEN_LEN + 1024 {
            FirstMessage::Refused(crate::auth::Fault::Malformed)
        } else {
            match envelope::parse_with_members(msg) {
                Ok((e, _)) => match &*e.event {
                    "pong" => return,
                    "auth" => FirstMessage::auth(e.data_range(msg).map(|r| &msg[r])),
                    _ => FirstMessage::Refused(crate::auth::Fault::Missing),
                },
                Err(_) => FirstMessage::Refused(crate::auth::Fault::Malformed),
            }
        };
        self.awaiting_first = false;
        self.first = Some(Box::new(first));
    }
}

#[cfg(test)]
mod tests {
    use super::Echoes;
    use crate::protocol::ws::frame::{FrameHeader, OpCode};

    /// A client frame: header with a mask key (zero key: the payload reads as is).
    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut h = FrameHeader::new(opcode, payload.len() as u64);
        h.fin = fin;
        h.mask = Some([0; 4]);
        let mut header = [0u8; 14];
        let n = h.encode(&mut header);
        let mut out = header[..n].to_vec();
        out.extend_from_slice(payload);
        out
    }

    /// `/echo` sizes a batch's buffer from the whole data frames already buffered, so it
    /// becomes a `Bytes` without reallocating: exact for a run of messages of every header
    /// size with a ping among them, stopping at a partial frame, a fragment or a compressed
    /// frame (whose answer the headers cannot tell).
    #[test]
    fn echo_sizes_a_batch_exactly_from_the_buffered_frames() {
        let sizes = [0usize, 5, 125, 126, 300, 65_535, 65_536];
        let mut input = Vec::new();
        let mut answers = 0;
        for (i, &n) in sizes.iter().enumerate() {
            input.extend(client_frame(OpCode::Binary, true, &vec![b'x'; n]));
            answers += FrameHeader::new(OpCode::Binary, n as u64).encoded_len() + n;
            if i == 2 {
                input.extend(client_frame(OpCode::Ping, true, b"p"));
            }
        }
        // Capped: the largest frames pass the cap.
        assert_eq!(Echoes::answers_ahead(&input), Echoes::AHEAD);
        // Under the cap: exact.
        let small: Vec<u8> = input[..input.len() - (65_536 + 14) - (65_535 + 8)].to_vec();
        let small_answers = answers - (65_536 + 10) - (65_535 + 4);
        assert_eq!(Echoes::answers_ahead(&small), small_answers);
        // A partial frame, a fragment, a compressed frame end the count.
        let mut partial = small.clone();
        partial.extend(&client_frame(OpCode::Text, true, b"hello")[..7]);
        assert_eq!(Echoes::answers_ahead(&partial), small_answers);
        let mut fragment = small.clone();
        fragment.extend(client_frame(OpCode::Text, false, b"hel"));
        fragment.extend(client_frame(OpCode::Continuation, true, b"lo"));
        assert_eq!(Echoes::answers_ahead(&fragment), small_answers);
        let mut compressed = client_frame(OpCode::Text, true, b"zz");
        compressed[0] |= 0x40;
        assert_eq!(Echoes::answers_ahead(&compressed), 0);
        // A batch framed with it is exactly the size it reserved.
        let mut echoes = Echoes::default();
        let first = b"first message";
        echoes.push(OpCode::Text, first, &small);
        assert_eq!(echoes.out.capacity(), 2 + first.len() + small_answers);
    }
    /// What an idle connection holds (PERF.md, "Memory per idle connection"): an open
    /// WebSocket connection's state must fit jemalloc's 160-byte size class.
    #[test]
    fn an_open_connection_fits_its_size_class() {
        let size = std::mem::size_of::<super::super::open::Open<super::WsSession>>();
        assert!(size <= 160, "{size}");
    }
}
