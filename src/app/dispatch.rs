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

use super::error::{ClientError, Forbidden};
use super::{relay, App, Context, LocalFuture, Payload};
use crate::auth::{self, Action};
use crate::hub::client::Client;
use crate::hub::outgoing::Outgoing;
use crate::hub::Hub;
use crate::protocol::stelar::{names, Members};
use crate::stats::Counters;

/// An ACK request: which handler, and what to echo.
#[derive(Debug, Clone)]
pub(crate) struct AckRequest {
    /// The handler's name (`_ackName`, or the TCP ACK_REQ event field).
    pub name: String,
    /// `_correlationId`, echoed in the reply.
    pub correlation_id: Option<String>,
    /// When the request was received (for the ACK latency histogram).
    pub received: std::time::Instant,
}

/// A JSON event's `data`: its text, verbatim (a view of the read buffer), and, when it is an
/// object, the members the relay routes on, found by the scan that validated it.
#[derive(Debug, Clone)]
pub(crate) struct Data {
    pub(crate) text: Bytes,
    pub(crate) members: Option<Members>,
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

    /// Answers `err` with a `server:error` event (about `event`, if given) and counts it.
    pub(crate) fn error(&self, err: ClientError, event: Option<&str>) {
        self.hub.counters.error(err.label());
        let msg = Outgoing::server_error(err.code(), err.message(), event, None);
        self.hub.send_to(self.client, &msg);
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

/// Sends the reply to an ACK request (`result` is its JSON text).
pub(crate) fn send_ack_reply(
    hub: &Hub,
    client: &Client,
    event: &str,
    ack: &AckRequest,
    result: Bytes,
) {
    let msg = Outgoing::ack_reply(event, &ack.name, ack.correlation_id.as_deref(), result);
    hub.send_to(client, &msg);
    let micros = ack.received.elapsed().as_micros();
    hub.counters
        .observe_ack_micros(u64::try_from(micros).unwrap_or(u64::MAX));
}

/// A JSON event (WebSocket text envelope, TCP JSON frame, or the event inside a TCP ACK_REQ).
/// `data` is the JSON text of `data`, already validated, as a view of the read buffer.
pub(crate) fn event(env: &Env<'_>, event: &str, data: Option<Data>, ack: Option<AckRequest>) {
    Counters::add(&env.hub.counters.messages_received, 1);
    if !crate::protect::admit_message(env, event) {
        return;
    }
    let payload = |data: Option<Data>| Payload::json(event, data.map(|d| d.text));
    if let Some(ack) = ack {
        if let Some(handler) = env.app.acks.get(&ack.name) {
            let fut = handler(env.ctx(), payload(data));
            let hub = env.hub.clone();
            let client = env.client.clone();
            let event = event.to_owned();
            spawn_handler(
                env.hub,
                Box::pin(async move {
                    match fut.await {
                        Ok(result) => send_ack_reply(&hub, &client, &event, &ack, result.0),
                        Err(e) => {
                            hub.counters.error("app_ack_failed");
                            let msg =
                                Outgoing::server_error(&e.code, &e.message, Some(&event), None);
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
            let max = env.hub.config().limits.max_room_name;
            let room = data
                .as_ref()
                .ok_or(crate::protocol::stelar::Error::RoomNameEmpty)
                .and_then(|d| names::room_from_json(&d.text, max));
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
        spawn_handler(env.hub, handler(env.ctx(), payload(data)));
        return;
    }
    if env.app.relay && relay::event(env, event, data.as_ref()) {
        return;
    }
    if let Some(any) = &env.app.any {
        spawn_handler(env.hub, any(env.ctx(), payload(data)));
        return;
    }
    env.error(ClientError::UnknownEvent, Some(event));
}

/// A binary message (WebSocket binary envelope or TCP BINARY frame).
pub(crate) fn binary(env: &Env<'_>, event: &str, payload: Bytes) {
    Counters::add(&env.hub.counters.messages_received, 1);
    if !crate::protect::admit_message(env, event) {
        return;
    }
    if let Some(handler) = env.app.binary_handlers.get(event) {
        spawn_handler(env.hub, handler(env.ctx(), Payload::binary(event, payload)));
        return;
    }
    if env.app.relay && relay::binary(env, event, payload) {
        return;
    }
    env.error(ClientError::UnknownBinaryEvent, Some(event));
}

/// A join request (TCP JOIN frame, or `join-room`).
pub(crate) fn join(env: &Env<'_>, room: &str) {
    if !auth::may(&env.hub.config(), env.client, Action::Join(room)) {
        // Unlike a vetoed join (silent, Q15), the client is told: its token decides.
        env.error(ClientError::Forbidden(Forbidden::Join), Some("join-room"));
        return;
    }
    if let Some(hook) = &env.app.on_join {
        if !hook(&env.ctx(), room) {
            // §6 / Q15: refusals are silent on the wire, as stelar's; counted.
            env.hub.counters.refuse("join_vetoed");
            return;
        }
    }
    match env.hub.join(env.client, room) {
        Ok(true) => member_joined(env, room),
        Ok(false) => {}
        Err(refusal) => env.hub.counters.refuse(refusal.label()),
    }
}

/// A leave request (TCP LEAVE frame, or `leave-room`).
pub(crate) fn leave(env: &Env<'_>, room: &str) {
    if env.hub.leave(env.client, room) {
        left(env.hub, env.app, env.client, room);
    }
}

/// Whether `room`'s members hear of joins and leaves (`relay.member_events`).
fn member_events(hub: &Hub, room: &str) -> bool {
    hub.config()
        .relay
        .member_events
        .iter()
        .any(|p| auth::pattern_matches(p, room))
}

/// `member-joined` / `member-left` with `{"room","id","user"}`.
fn member_event(hub: &Hub, client: &Client, room: &str, joined: bool) {
    let user = client.user();
    let data = crate::dialect::Obj::new()
        .str("room", room)
        .str("id", &client.id.to_string())
        .str_or_null("user", user.as_deref())
        .done();
    let event = if joined {
        "member-joined"
    } else {
        "member-left"
    };
    let msg = Outgoing::event_in(Arc::from(room), event, Some(data));
    hub.publish(room, msg, Some(client.id));
}

/// `client` became a member of `room`: its other members are told, if configured.
pub(crate) fn member_joined(env: &Env<'_>, room: &str) {
    if member_events(env.hub, room) {
        member_event(env.hub, env.client, room, true);
    }
}

/// `client` left `room` (asked, or disconnected): the other members are told, if
/// configured, and the leave hooks run.
pub(crate) fn left(hub: &Rc<Hub>, app: &Arc<App>, client: &Rc<Client>, room: &str) {
    if member_events(hub, room) {
        member_event(hub, client, room, false);
    }
    if !app.on_leave.is_empty() {
        let ctx = Context::new(hub.clone(), client.clone(), app.clone());
        for hook in &app.on_leave {
            if std::panic::catch_unwind(AssertUnwindSafe(|| hook(&ctx, room))).is_err() {
                hub.counters.error("handler_panic");
            }
        }
    }
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
