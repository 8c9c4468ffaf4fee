//! The stelar TCP port (PROTOCOL.md §4): CONNECT first, then frames both ways.
//!
//! The server's first bytes are a CONNECT frame with the client's id (§4.3), sent before any
//! handler runs; then limits and middleware (a refusal is an ERROR frame and a close, Q10),
//! then [`TcpSession`] under [`super::Drive`] (served from the shard's table, `open.rs`).
//! Parser faults are answered with stelar's ERROR frame and a close (§4.3); faults in one
//! message are answered with a `server:error` event (Q12) and the connection carries on.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;

use super::auth::{FirstMessage, Outcome};
use super::{Accepted, Flow, Io, Session, Shared};
use crate::app::dispatch::{self, AckRequest, Data, Env};
use crate::app::error::ClientError;
use crate::hub::client::{Client, CloseCause};
use crate::hub::outgoing::{Body, Outgoing};
use crate::hub::Hub;
use crate::protocol::stelar::{envelope, names, Answer, FrameDecoder, FrameType, OutFrame};
use crate::protocol::ws::close::CloseCode;
use crate::stats::Transport;

/// Serves one socket accepted on the TCP port (over TLS with `tls`).
pub(crate) fn serve(
    stream: TcpStream,
    shared: Rc<Shared>,
    tls: bool,
) -> impl std::future::Future<Output = ()> {
    // Protection, before any client state: handshake rate and connections per IP. The slot
    // holds this client's place in the per-IP count until the task ends.
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    // The socket goes to the shard's ring before the task's future is made: an `async fn`'s
    // arguments stay in its future for its whole life, and an idle connection's memory is
    // mostly that future (see `ws::serve`).
    let admitted = match crate::protect::admit_tcp(&shared.hub, &shared.app, peer) {
        Ok(slot) => Ok((slot, Accepted::new(stream, &shared, Transport::Tcp, tls))),
        Err(refusal) => Err(Box::pin(refuse_unregistered(
            stream,
            shared.clone(),
            refusal.reason.into_owned(),
        ))),
    };
    async move {
        match admitted {
            Ok((slot, conn)) => serve_accepted(conn, slot, shared, tls).await,
            Err(refusing) => refusing.await,
        }
    }
}

async fn serve_accepted(
    mut conn: Accepted,
    _ip_slot: crate::protect::IpSlot,
    shared: Rc<Shared>,
    tls: bool,
) {
    let hub = shared.hub.clone();
    let client = conn.client.clone();
    if tls {
        // Before CONNECT: the client's first frame comes after the handshake.
        shared.arm_timer(&client, hub.config().handshake_timeout());
        if !Box::pin(super::tls::handshake(&mut conn.io, &shared, &client)).await {
            conn.finish(&shared, false);
            return;
        }
    }
    let io = &mut conn.io;
    // §4.3: the CONNECT frame is the first thing on the wire.
    let connect = Outgoing::new(Body::Connect(client.id.to_string().into()));
    hub.send_control(&client, &connect);
    let config = hub.config();
    if hub.at_capacity() {
        hub.counters.refuse("server_full");
        Box::pin(refuse(io, &client, &shared, "Server full")).await;
    } else {
        let mut session = TcpSession {
            decoder: FrameDecoder::new(config.limits.max_frame_size),
            done: false,
            awaiting_first: false,
            first: None,
        };
        // Authentication (`conn/auth.rs`): TCP clients present their token in a first JSON
        // frame `auth` (required mode); in optional mode they are anonymous.
        let outcome = if config.auth.mode != crate::config::AuthMode::Off {
            Box::pin(super::auth::authenticate(
                io,
                &mut session,
                &shared,
                &client,
                None,
            ))
            .await
        } else {
            Outcome::Open(None)
        };
        if let Outcome::Open(user) = outcome {
            if let Err(reject) = Box::pin(dispatch::connect(&hub, &shared.app, &client)).await {
                hub.counters.refuse("middleware");
                Box::pin(refuse(io, &client, &shared, &reject.reason)).await;
            } else {
                hub.open(&client);
                if let Some(user) = &user {
                    hub.send_to(
                        &client,
                        &Outgoing::auth_ok(&client.id.to_string(), Some(user)),
                    );
                }
                dispatch::connected(&hub, &shared.app, &client);
                if !io.rbuf.is_empty() {
                    // Frames the client sent behind its `auth` frame.
                    let mut buf = std::mem::take(&mut io.rbuf);
                    session.handle_input(&mut buf, &shared, &client);
                    io.rbuf = buf;
                }
                // From here the shard's table serves it; this task ends.
                conn.into_open(session, _ip_slot, &shared);
                return;
            }
        }
    }
    // Refused or gone before it opened (an open one ended in the table).
    conn.finish(&shared, false);
}

/// An ERROR frame with `reason`, then the close, for a connection refused before it became
/// a client (no CONNECT, no id).
async fn refuse_unregistered(mut stream: TcpStream, shared: Rc<Shared>, reason: String) {
    use futures_lite::AsyncWriteExt;
    let _live = super::Live::new(&shared);
    if let Ok(frame) = (OutFrame::Error { text: &reason }).encode() {
        // A few dozen bytes into an empty socket buffer: this does not wait on the peer.
        let _ = stream.write_all(&frame).await;
        crate::stats::Counters::add(&shared.hub.counters.bytes_sent, frame.len() as u64);
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
}

async fn refuse(io: &mut Io, client: &Client, shared: &Shared, reason: &str) {
    let refusal = Outgoing::close(CloseCode::POLICY, reason.to_owned());
    shared.hub.send_control(client, &refusal);
    let _ = io.flush(client, &shared.hub).await;
}

/// The TCP open phase.
struct TcpSession {
    decoder: FrameDecoder,
    /// An ERROR frame (or DISCONNECT) is queued; close once it is flushed.
    done: bool,
    /// Authentication waits for the first frame (`conn/auth.rs`): it is not dispatched.
    awaiting_first: bool,
    /// That first frame's meaning, once it came; nothing more is decoded until it is taken.
    first: Option<Box<FirstMessage>>,
}

impl Session for TcpSession {
    fn handle_input(&mut self, buf: &mut BytesMut, shared: &Shared, client: &Rc<Client>) -> Flow {
        let hub = &shared.hub;
        let env = Env {
            hub,
            app: &shared.app,
            client,
        };
        let max_room = hub.config().limits.max_room_name;
        loop {
            if self.first.is_some() {
                // Authentication has the first frame; the rest waits in `buf`.
                return Flow::Continue;
            }
            let frame = match self.decoder.decode(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    hub.counters.error(e.label());
                    if e.answer() == Answer::ErrorFrameAndClose {
                        // The ERROR frame's text is stelar's (the error's Display).
                        hub.send_control(
                            client,
                            &Outgoing::close(CloseCode::PROTOCOL, e.to_string()),
                        );
                    }
                    buf.clear();
                    self.done = true;
                    return Flow::Stop;
                }
            };
            match frame.frame_type {
                // A few pending PONGs at most, however many PINGs arrive unanswered.
                FrameType::Ping => hub.send_pong(client, &Outgoing::new(Body::Pong(Bytes::new()))),
                FrameType::Pong | FrameType::Connect => {}
                _ if self.awaiting_first => {
                    // Only a JSON frame `auth` may come first; nothing else is processed.
                    self.awaiting_first = false;
                    self.first = Some(Box::new(
                        if frame.frame_type == FrameType::Json && frame.event_name() == Ok("auth") {
                            FirstMessage::auth(Some(&frame.payload))
                        } else {
                            FirstMessage::Refused(crate::auth::Fault::Missing)
                        },
                    ));
                }
                FrameType::Json | FrameType::Binary | FrameType::AckReq => {
                    let name = match frame.event_name() {
                        Ok(n) => n,
                        Err(e) => {
                            env.error(ClientError::InvalidFrameEvent(e), None);
                            continue;
                        }
                    };
                    match frame.frame_type {
                        FrameType::Json => {
                            // Never forward what is not JSON; the one scan that validates
                            // the payload also finds the members the relay routes on.
                            match envelope::members(&frame.payload) {
                                Ok(members) => {
                                    let data = Data {
                                        text: frame.payload.clone(),
                                        members,
                                    };
                                    dispatch::event(&env, name, Some(data), None);
                                }
                                Err(e) => {
                                    env.error(ClientError::InvalidJsonPayload(e), Some(name));
                                    continue;
                                }
                            }
                        }
                        FrameType::Binary => dispatch::binary(&env, name, frame.payload.clone()),
                        _ => self.ack_request(&env, name, &frame.payload),
                    }
                }
                FrameType::Join | FrameType::Leave => {
                    let event = if frame.frame_type == FrameType::Join {
                        "join-room"
                    } else {
                        "leave-room"
                    };
                    if !crate::protect::admit_message(&env, event) {
                        continue;
                    }
                    match names::room_from_raw(&frame.payload, max_room) {
                        Ok(room) if frame.frame_type == FrameType::Join => {
                            dispatch::join(&env, room)
                        }
                        Ok(room) => dispatch::leave(&env, room),
                        // §4.2: an empty payload is ignored; others counted.
                        Err(e) => hub.counters.error(e.label()),
                    }
                }
                // Frames only a server sends, and unknown types: ignored (§4.3), counted.
                _ => hub.counters.error("tcp_unexpected_frame_type"),
            }
        }
    }

    fn begin_close(&mut self, cause: CloseCause, client: &Client, hub: &Hub) {
        hub.send_control(client, &Outgoing::closing_for(client, cause));
        self.done = true;
    }

    fn done(&self) -> bool {
        self.done
    }

    fn buffered(&self) -> usize {
        // Frames are decoded where they lie in the read buffer; nothing is reassembled.
        0
    }

    fn discard_input(&mut self) {}

    fn await_first_message(&mut self) {
        self.awaiting_first = true;
    }

    fn take_first_message(&mut self) -> Option<FirstMessage> {
        self.first.take().map(|f| *f)
    }
}

impl TcpSession {
    /// ACK_REQ (§4.4): the event field names the handler; the payload is
    /// `{"event":E,"data":D,"_correlationId":C}`.
    fn ack_request(&self, env: &Env<'_>, ack_name: &str, payload: &Bytes) {
        match envelope::parse_with_members(payload) {
            Ok((e, members)) => {
                let data = e.data_range(payload).map(|r| Data {
                    text: payload.slice(r),
                    members,
                });
                let ack = AckRequest {
                    name: ack_name.to_owned(),
                    correlation_id: e.correlation_id.as_ref().map(|c| c.to_string()),
                    received: std::time::Instant::now(),
                };
                dispatch::event(env, &e.event, data, Some(ack));
            }
            Err(_) => match envelope::parse_ack_payload(payload) {
                // No inner event: the ACK name stands for it.
                Ok(p) => {
                    // `p.data` is a subslice of `payload` (the parser returns verbatim spans).
                    // This fallback (no inner envelope) is rare: its members take a second
                    // scan of data rather than a second kind of ACK payload parser.
                    let data = (!p.data.is_empty()).then(|| Data {
                        text: payload.slice_ref(p.data),
                        members: envelope::members(p.data).ok().flatten(),
                    });
                    let ack = AckRequest {
                        name: ack_name.to_owned(),
                        correlation_id: p.correlation_id.as_ref().map(|c| c.to_string()),
                        received: std::time::Instant::now(),
                    };
                    dispatch::event(env, ack_name, data, Some(ack));
                }
                Err(e) => env.error(ClientError::InvalidAckPayload(e), Some(ack_name)),
            },
        }
    }
}
