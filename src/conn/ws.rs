//! The WebSocket + HTTP port: the HTTP phase, the upgrade, and the WebSocket open phase.
//!
//! HTTP phase: requests are read with the handshake timeout (also the keep-alive idle
//! timeout); plain requests go to `http.rs`; an upgrade is validated by
//! `protocol::ws::handshake`. After the `101`, limits and middleware run (a refusal is a
//! close frame, PROTOCOL.md §7.3 / Q9), then [`WsSession`] runs under [`super::drive`].
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

use super::{drive, fill, http, Accepted, End, Flow, Interrupted, Io, Session, Shared};
use crate::app::dispatch::{self, AckRequest, Data, Env};
use crate::app::error::ClientError;
use crate::hub::client::{Client, CloseCause, RequestInfo};
use crate::hub::outgoing::{Body, Outgoing, WsForm};
use crate::hub::Hub;
use crate::protocol::http::{parse_request, BodyDecoder, BodyKind, Request, CONTINUE_RESPONSE};
use crate::protocol::stelar::{binary, envelope};
use crate::protocol::ws::close::CloseCode;
use crate::protocol::ws::codec::{
    ClosePhase, Decoder, DecoderConfig, InflateParams, Message, Role,
};
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
}

/// Serves one socket accepted on the WebSocket/HTTP port (over TLS with `tls`).
pub(crate) async fn serve(stream: TcpStream, shared: Rc<Shared>, tls: bool) {
    let mut conn = Accepted::new(stream, &shared, Transport::Ws, tls);
    let client = conn.client.clone();
    shared.arm_timer(&client, shared.hub.config().handshake_timeout());
    // The TLS handshake and the HTTP phase share the handshake timeout.
    if tls && !super::tls::handshake(&mut conn.io, &shared, &client).await {
        conn.finish(&shared, false);
        return;
    }
    let mut opened = false;
    if let Some(req) = http_phase(&mut conn.io, &shared, &client).await {
        opened = websocket(&mut conn.io, &shared, &client, req).await;
    }
    conn.finish(&shared, opened);
}

/// Answers plain HTTP requests until one asks to upgrade (returned) or the connection ends.
async fn http_phase(io: &mut Io, shared: &Shared, client: &Rc<Client>) -> Option<Request<Bytes>> {
    let hub = &shared.hub;
    loop {
        let req = loop {
            match parse_request(&io.rbuf, &shared.http_limits) {
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
                let mut decoder = match BodyDecoder::new(kind, &shared.http_limits) {
                    Ok(d) => d,
                    Err(e) => {
                        respond_error(io, shared, client, e).await;
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
                            respond_error(io, shared, client, e).await;
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
) {
    shared.hub.counters.error(e.label());
    let mut out = BytesMut::new();
    e.write_response(&mut out);
    shared.hub.queue_control(client, out.freeze());
    let _ = io.flush(client, &shared.hub).await;
}

/// Completes the upgrade and runs the WebSocket until it ends. Returns whether the client was
/// opened (so disconnect hooks are due).
async fn websocket(
    io: &mut Io,
    shared: &Rc<Shared>,
    client: &Rc<Client>,
    req: Request<Bytes>,
) -> bool {
    let hub = &shared.hub;
    let config = hub.config().clone();
    let mode = match req.path() {
        "/echo" if config.bench_endpoints => Mode::Echo,
        "/broadcast" if config.bench_endpoints => Mode::Broadcast,
        _ => Mode::Stelar,
    };
    let mut out = BytesMut::new();
    let negotiated = match handshake::accept(&req, &shared.handshake, &[], &mut out) {
        Ok(n) => n,
        Err(e) => {
            hub.counters.error(e.label());
            e.write_response(&mut out);
            hub.queue_control(client, out.freeze());
            let _ = io.flush(client, hub).await;
            return false;
        }
    };
    io.rbuf.advance(negotiated.consumed);
    let deflate = negotiated.deflate;
    hub.queue_control(client, out.freeze());

    // PROTOCOL.md §1.1 step 7 / §7.3: limits are checked after the 101, refused with 1008.
    if hub.at_capacity() {
        hub.counters.refuse("server_full");
        refuse(io, client, hub, 1008, Cow::Borrowed("Server full")).await;
        return false;
    }
    client.set_request(RequestInfo {
        path: req.path().to_owned(),
        query: req.query().map(str::to_owned),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_vec()))
            .collect(),
    });
    if let Some(d) = deflate {
        client.set_ws_form(if d.server_to_client().max_window_bits < 15 {
            WsForm::DeflateNarrow
        } else {
            WsForm::Deflate
        });
    }
    if mode != Mode::Stelar {
        client.set_stelar(false);
    } else if let Err(reject) = dispatch::connect(hub, &shared.app, client).await {
        hub.counters.refuse("middleware");
        refuse(io, client, hub, reject.code, Cow::Owned(reject.reason)).await;
        return false;
    }
    shared.cancel_timer(client);
    hub.open(client);
    if mode == Mode::Broadcast {
        hub.join_raw_broadcast(client);
    }
    if mode == Mode::Stelar {
        dispatch::connected(hub, &shared.app, client);
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
    };
    if !io.rbuf.is_empty() {
        // Frames that arrived with the upgrade request.
        let mut buf = std::mem::take(&mut io.rbuf);
        if session.handle_input(&mut buf, shared, client) == Flow::Stop {
            session.failed = true;
        }
        io.rbuf = buf;
    }
    match drive(io, &mut session, shared, client).await {
        End::Closed | End::Abandoned => {}
        End::Failed(e) => {
            tracing::debug!(client = %client.id, error = %e, "websocket connection failed");
        }
    }
    true
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
}

impl Session for WsSession {
    fn handle_input(&mut self, buf: &mut BytesMut, shared: &Shared, client: &Rc<Client>) -> Flow {
        let hub = &shared.hub;
        let env = Env {
            hub,
            app: &shared.app,
            client,
        };
        loop {
            match self.decoder.decode(buf) {
                Ok(Some(msg)) => match msg {
                    Message::Text(b) => match self.mode {
                        Mode::Stelar => self.text(b, &env),
                        Mode::Echo => {
                            hub.send_frame(client, Outgoing::raw_ws_frame(true, &b));
                        }
                        Mode::Broadcast => hub.raw_broadcast(
                            Outgoing::new(Body::RawWs {
                                text: true,
                                payload: b,
                            }),
                            Some(client.id),
                        ),
                    },
                    Message::Binary(b) => match self.mode {
                        Mode::Stelar => self.binary(b, &env),
                        Mode::Echo => {
                            hub.send_frame(client, Outgoing::raw_ws_frame(false, &b));
                        }
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

    fn begin_close(&mut self, cause: CloseCause, client: &Client, hub: &Hub) {
        if cause == CloseCause::InputBudget {
            // Its input was discarded and is no longer read: no close reply will be seen.
            self.failed = true;
        }
        if self.decoder.phase() == ClosePhase::Open {
            hub.send_control(client, &Outgoing::closing(cause));
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
}
