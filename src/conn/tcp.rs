//! The stelar TCP port (PROTOCOL.md §4): CONNECT first, then frames both ways.
//!
//! The server's first bytes are a CONNECT frame with the client's id (§4.3), sent before any
//! handler runs; then limits and middleware (a refusal is an ERROR frame and a close, Q10),
//! then [`TcpSession`] under [`super::drive`]. Parser faults are answered with stelar's ERROR
//! frame and a close (§4.3); faults in one message are answered with a `server:error` event
//! (Q12) and the connection carries on.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use glommio::net::TcpStream;

use super::{drive, Accepted, End, Flow, Io, Session, Shared};
use crate::app::dispatch::{self, AckRequest, Env};
use crate::hub::client::{Client, CloseCause};
use crate::hub::Hub;
use crate::protocol::stelar::{envelope, json, names, FrameDecoder, FrameType, OutFrame};
use crate::stats::Transport;

/// Serves one socket accepted on the TCP port.
pub(crate) async fn serve(stream: TcpStream, shared: Rc<Shared>) {
    let mut conn = Accepted::new(stream, &shared, Transport::Tcp);
    let hub = shared.hub.clone();
    let client = conn.client.clone();
    let io = &mut conn.io;
    let id = client.id.to_text();
    // §4.3: the CONNECT frame is the first thing on the wire. The id is 36 ASCII bytes.
    if let Ok(frame) = (OutFrame::Connect {
        id: std::str::from_utf8(&id).unwrap_or_default(),
    })
    .encode()
    {
        hub.queue_control(&client, frame);
    }
    let config = hub.config().clone();
    let max = config.limits.max_connections;
    let mut opened = false;
    if max > 0 && hub.process_clients() >= max {
        hub.counters.refuse("server_full");
        refuse(io, &client, &shared, "Server full").await;
    } else if let Err(reject) = dispatch::connect(&hub, &shared.app, &client).await {
        hub.counters.refuse("middleware");
        refuse(io, &client, &shared, &reject.reason).await;
    } else {
        hub.open(&client);
        opened = true;
        dispatch::connected(&hub, &shared.app, &client);
        let mut session = TcpSession {
            decoder: FrameDecoder::new(config.limits.max_frame_size),
            done: false,
        };
        match drive(io, &mut session, &shared, &client).await {
            End::Closed | End::Abandoned => {}
            End::Failed(e) => {
                tracing::debug!(client = %client.id, error = %e, "tcp connection failed");
            }
        }
    }
    conn.finish(&shared, opened);
}

async fn refuse(io: &mut Io, client: &Client, shared: &Shared, reason: &str) {
    if let Ok(frame) = (OutFrame::Error { text: reason }).encode() {
        shared.hub.queue_control(client, frame);
    }
    let _ = io.flush(client, &shared.hub).await;
}

/// The TCP open phase.
struct TcpSession {
    decoder: FrameDecoder,
    /// An ERROR frame (or DISCONNECT) is queued; close once it is flushed.
    done: bool,
}

impl Session for TcpSession {
    fn handle_input(&mut self, buf: &mut BytesMut, shared: &Shared, client: &Rc<Client>) -> Flow {
        let hub = &shared.hub;
        let env = Env {
            hub,
            app: &shared.app,
            client,
        };
        let max_room = shared.app.config.limits.max_room_name;
        loop {
            let frame = match self.decoder.decode(buf) {
                Ok(Some(f)) => f,
                Ok(None) => return Flow::Continue,
                Err(e) => {
                    hub.counters.error(e.label());
                    if let Some(frame) = e.error_frame() {
                        hub.queue_control(client, frame);
                    }
                    buf.clear();
                    self.done = true;
                    return Flow::Stop;
                }
            };
            match frame.frame_type {
                // One pending PONG at most, however many PINGs arrive unanswered.
                FrameType::Ping => {
                    hub.queue_pong(client, Bytes::from_static(&[0, 0, 0, 7, 0x04, 0, 0]));
                }
                FrameType::Pong | FrameType::Connect => {}
                FrameType::Json | FrameType::Binary | FrameType::AckReq => {
                    let name = match frame.event_name() {
                        Ok(n) => n,
                        Err(e) => {
                            hub.counters.error(e.label());
                            env.error(
                                "invalid_message",
                                "event names are 1-256 bytes of UTF-8",
                                None,
                            );
                            continue;
                        }
                    };
                    match frame.frame_type {
                        FrameType::Json => {
                            // Never forward what is not JSON.
                            if json::validate(&frame.payload).is_err() {
                                hub.counters.error("tcp_invalid_json");
                                env.error(
                                    "invalid_message",
                                    "a JSON frame's payload must be valid JSON",
                                    Some(name),
                                );
                                continue;
                            }
                            let data = (!frame.payload.is_empty()).then(|| frame.payload.clone());
                            dispatch::event(&env, name, data, None);
                        }
                        FrameType::Binary => dispatch::binary(&env, name, frame.payload.clone()),
                        _ => self.ack_request(&env, name, &frame.payload),
                    }
                }
                FrameType::Join | FrameType::Leave => {
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
        let frame = match cause {
            CloseCause::Shutdown => Ok(Bytes::from_static(&[0, 0, 0, 7, 0x08, 0, 0])),
            CloseCause::SlowConsumer | CloseCause::OutputBudget => OutFrame::Error {
                text: "Slow consumer",
            }
            .encode(),
            CloseCause::InputBudget => OutFrame::Error {
                text: "Server busy",
            }
            .encode(),
            CloseCause::HeartbeatTimeout => OutFrame::Error {
                text: "Heartbeat timeout",
            }
            .encode(),
            CloseCause::HandshakeTimeout => OutFrame::Error {
                text: "Handshake timeout",
            }
            .encode(),
            CloseCause::Kicked { reason, .. } => OutFrame::Error { text: reason }.encode(),
        };
        if matches!(cause, CloseCause::SlowConsumer | CloseCause::OutputBudget) {
            hub.discard_queue(client);
        }
        if let Ok(f) = frame {
            hub.queue_control(client, f);
        }
        self.done = true;
    }

    fn ping(&self) -> Bytes {
        Bytes::from_static(&[0, 0, 0, 7, 0x03, 0, 0])
    }

    fn done(&self) -> bool {
        self.done
    }

    fn buffered(&self) -> usize {
        // Frames are decoded where they lie in the read buffer; nothing is reassembled.
        0
    }

    fn discard_input(&mut self) {}
}

impl TcpSession {
    /// ACK_REQ (§4.4): the event field names the handler; the payload is
    /// `{"event":E,"data":D,"_correlationId":C}`.
    fn ack_request(&self, env: &Env<'_>, ack_name: &str, payload: &Bytes) {
        match envelope::parse(payload) {
            Ok(e) => {
                let data = e.data_range(payload).map(|r| payload.slice(r));
                let ack = AckRequest {
                    name: ack_name.to_owned(),
                    correlation_id: e.correlation_id.as_ref().map(|c| c.to_string()),
                };
                dispatch::event(env, &e.event, data, Some(ack));
            }
            Err(_) => match envelope::parse_ack_payload(payload) {
                // No inner event: the ACK name stands for it.
                Ok(p) => {
                    // `p.data` is a subslice of `payload` (the parser returns verbatim spans).
                    let data = (!p.data.is_empty()).then(|| payload.slice_ref(p.data));
                    let ack = AckRequest {
                        name: ack_name.to_owned(),
                        correlation_id: p.correlation_id.as_ref().map(|c| c.to_string()),
                    };
                    dispatch::event(env, ack_name, data, Some(ack));
                }
                Err(e) => {
                    env.hub.counters.error(e.label());
                    env.error(
                        "invalid_message",
                        "an ACK request's payload must be valid JSON",
                        Some(ack_name),
                    );
                }
            },
        }
    }
}
