//! What happens to one decoded client message, whatever its transport (PROTOCOL.md §2.3,
//! §4.2, §4.3): ACK requests, built-in room events, application handlers, the relay, the
//! catch-all, and the `server:error` answer for an unknown event.
//!
//! `conn/` decodes frames and calls these functions with transport-neutral arguments (event
//! name, `data` as a verbatim `Bytes` view, ACK name and correlation id); replies are built
//! here in the caller's wire form (a WebSocket envelope, or a TCP JSON / ACK_RES frame).

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use futures_lite::FutureExt;

use super::{relay, App, Context, LocalFuture, Payload};
use crate::hub::client::Client;
use crate::hub::outgoing::Outgoing;
use crate::hub::Hub;
use crate::protocol::stelar::{names, OutFrame, TextEnvelope};
use crate::protocol::ws::codec::server_frame;
use crate::protocol::ws::frame::OpCode;
use crate::stats::{Counters, Transport};

/// An ACK request: which handler, and what to echo.
#[derive(Debug, Clone)]
pub(crate) struct AckRequest {
    /// The handler's name (`_ackName`, or the TCP ACK_REQ event field).
    pub name: String,
    /// `_correlationId`, echoed in the reply.
    pub correlation_id: Option<String>,
}

/// Everything dispatch needs from the shard.
pub(crate) struct Env<'a> {
    pub hub: &'a Rc<Hub>,
    pub app: &'a Arc<App>,
    pub client: &'a Rc<Client>,
}

impl Env<'_> {
    fn ctx(&self) -> Context {
        Context::new(self.hub.clone(), self.client.clone(), self.app.clone())
    }

    /// Sends a `server:error` to the client.
    pub(crate) fn error(&self, code: &str, message: &str, event: Option<&str>) {
        self.hub.counters.error(code_label(code));
        let msg = Outgoing::server_error(code, message, event);
        self.hub.send_to(self.client, &msg);
    }
}

/// Static counter labels for the `server:error` codes (no strings built per error).
fn code_label(code: &str) -> &'static str {
    match code {
        "unknown_event" => "app_unknown_event",
        "invalid_message" => "app_invalid_message",
        "invalid_data" => "app_invalid_data",
        "invalid_event_name" => "app_invalid_event_name",
        "invalid_room" => "app_invalid_room",
        "not_member" => "app_not_member",
        "forbidden" => "app_forbidden",
        "unknown_client" => "app_unknown_client",
        "ack_failed" => "app_ack_failed",
        _ => "app_other",
    }
}

/// Runs a handler future on this shard, catching a panic so it can't take the shard down.
pub(crate) fn spawn_handler(hub: &Rc<Hub>, fut: LocalFuture<()>) {
    let hub = hub.clone();
    glommio::spawn_local(async move {
        if AssertUnwindSafe(fut).catch_unwind().await.is_err() {
            hub.counters.error("handler_panic");
            tracing::error!(shard = hub.shard(), "an event handler panicked");
        }
    })
    .detach();
}

/// Sends the reply to an ACK request in the client's wire form: WebSocket
/// `{"event":E,"data":R,"_isAck":true,"_correlationId":C}`, TCP ACK_RES with the ACK name.
pub(crate) fn send_ack_reply(
    hub: &Hub,
    client: &Client,
    event: &str,
    ack: &AckRequest,
    result: &[u8],
) {
    let frame = match client.transport() {
        Transport::Ws => {
            let env = TextEnvelope::ack_reply(event, Some(result), ack.correlation_id.as_deref())
                .encode();
            server_frame(OpCode::Text, &env)
        }
        Transport::Tcp => match (OutFrame::AckRes {
            ack_name: &ack.name,
            result,
            correlation_id: ack.correlation_id.as_deref(),
        })
        .encode()
        {
            Ok(f) => f,
            Err(_) => {
                hub.counters.drop_message("ack_reply_unencodable");
                return;
            }
        },
    };
    hub.send_frame(client, frame);
}

/// A JSON event (WebSocket text envelope, TCP JSON frame, or the event inside a TCP ACK_REQ).
/// `data` is the JSON text of `data`, already validated, as a view of the read buffer.
pub(crate) fn event(env: &Env<'_>, event: &str, data: Option<Bytes>, ack: Option<AckRequest>) {
    Counters::add(&env.hub.counters.messages_received, 1);
    if let Some(ack) = ack {
        if let Some(handler) = env.app.acks.get(&ack.name) {
            let fut = handler(env.ctx(), Payload::json(event, data));
            let hub = env.hub.clone();
            let client = env.client.clone();
            let event = event.to_owned();
            spawn_handler(
                env.hub,
                Box::pin(async move {
                    match fut.await {
                        Ok(result) => send_ack_reply(&hub, &client, &event, &ack, &result.0),
                        Err(e) => {
                            hub.counters.error("app_ack_failed");
                            let msg = Outgoing::server_error(&e.code, &e.message, Some(&event));
                            hub.send_to(&client, &msg);
                        }
                    }
                }),
            );
            return;
        }
        if env.app.relay && relay::ack(env, event, data.as_ref(), &ack) {
            return;
        }
        // PROTOCOL.md §2.3 step 6 / §10 Q8: an unknown ACK name falls through to the plain
        // event, on both transports.
    }
    match event {
        // §2.3 step 7: liveness only (any inbound bytes already refreshed it).
        "pong" => return,
        "join-room" | "leave-room" => {
            let max = env.app.config.limits.max_room_name;
            let room = data
                .as_deref()
                .ok_or(crate::protocol::stelar::Error::RoomNameEmpty)
                .and_then(|d| names::room_from_json(d, max));
            match room {
                Ok(room) if event == "join-room" => join(env, &room),
                Ok(room) => leave(env, &room),
                // §10 Q14: falsy or unusable names are ignored (counted), as stelar does.
                Err(e) => env.hub.counters.error(e.label()),
            }
            return;
        }
        _ => {}
    }
    if let Some(handler) = env.app.handlers.get(event) {
        spawn_handler(env.hub, handler(env.ctx(), Payload::json(event, data)));
        return;
    }
    if env.app.relay && relay::event(env, event, data.as_ref()) {
        return;
    }
    if let Some(any) = &env.app.any {
        spawn_handler(env.hub, any(env.ctx(), Payload::json(event, data)));
        return;
    }
    env.error("unknown_event", "no handler for this event", Some(event));
}

/// A binary message (WebSocket binary envelope or TCP BINARY frame).
pub(crate) fn binary(env: &Env<'_>, event: &str, payload: Bytes) {
    Counters::add(&env.hub.counters.messages_received, 1);
    if let Some(handler) = env.app.binary_handlers.get(event) {
        spawn_handler(env.hub, handler(env.ctx(), Payload::binary(event, payload)));
        return;
    }
    if env.app.relay && relay::binary(env, event, payload) {
        return;
    }
    env.error(
        "unknown_event",
        "no handler for this binary event",
        Some(event),
    );
}

/// A join request (TCP JOIN frame, or `join-room`).
pub(crate) fn join(env: &Env<'_>, room: &str) {
    if let Some(hook) = &env.app.on_join {
        if !hook(&env.ctx(), room) {
            // §6 / Q15: refusals are silent on the wire, as stelar's; counted.
            env.hub.counters.refuse("join_vetoed");
            return;
        }
    }
    if let Err(refusal) = env.hub.join(env.client, room) {
        env.hub.counters.refuse(refusal.label());
    }
}

/// A leave request (TCP LEAVE frame, or `leave-room`).
pub(crate) fn leave(env: &Env<'_>, room: &str) {
    env.hub.leave(env.client, room);
}

/// Runs the connect middleware chain, then the connect hooks. `Err` = refused.
pub(crate) async fn connect(
    hub: &Rc<Hub>,
    app: &Arc<App>,
    client: &Rc<Client>,
) -> Result<(), super::Reject> {
    for mw in &app.middleware {
        let ctx = Context::new(hub.clone(), client.clone(), app.clone());
        match AssertUnwindSafe(mw(ctx)).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(reject)) => return Err(reject),
            Err(_) => {
                hub.counters.error("handler_panic");
                return Err(super::Reject {
                    code: 1011,
                    reason: "internal error".into(),
                });
            }
        }
    }
    Ok(())
}

/// Runs the connect hooks (after the client is open).
pub(crate) fn connected(hub: &Rc<Hub>, app: &Arc<App>, client: &Rc<Client>) {
    for hook in &app.on_connect {
        spawn_handler(
            hub,
            hook(Context::new(hub.clone(), client.clone(), app.clone())),
        );
    }
}

/// Runs the disconnect hooks (after the client left its rooms).
pub(crate) fn disconnected(hub: &Rc<Hub>, app: &Arc<App>, client: &Rc<Client>) {
    for hook in &app.on_disconnect {
        spawn_handler(
            hub,
            hook(Context::new(hub.clone(), client.clone(), app.clone())),
        );
    }
}
