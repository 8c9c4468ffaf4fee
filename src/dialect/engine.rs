//! Carries a dialect's [`Inbound`] actions out on the engine: authentication (the dialect's
//! own step, after the upgrade), rooms, events and requests through `app::dispatch`, direct
//! answers. The rules are the same for every dialect; what differs (the answers' shapes, what
//! a failed or missing authentication does) the dialect says through its trait.
//!
//! A dialect client opens at the upgrade but is *unauthenticated* ([`DialectAuth::None`]):
//! it receives no pushes and may only authenticate, ping and make the requests its dialect
//! or the application allows before authentication. `auth.timeout_ms` after the upgrade an
//! unauthenticated client is closed (4001).

use std::panic::AssertUnwindSafe;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::FutureExt;

use super::{AuthFailure, Dialect, DialectId, Inbound, Unauthenticated};
use crate::app::dispatch::{self, AckRequest, Data, Env};
use crate::app::error::{ClientError, Forbidden};
use crate::app::{Context, Payload};
use crate::auth::Action;
use crate::auth::AuthReject;
use crate::hub::client::{Client, CloseCause, DialectAuth};
use crate::hub::outgoing::Outgoing;
use crate::hub::Hub;
use crate::protocol::stelar::envelope;
use crate::stats::Counters;

/// The dialect a client speaks.
fn dialect_of(hub: &Hub, client: &Client) -> Option<Arc<dyn Dialect>> {
    hub.dialects().get(client.dialect()).cloned()
}

/// One inbound text message from a client of dialect `id`.
pub(crate) fn text(env: &Env<'_>, id: DialectId, msg: &Bytes) {
    if let Some(d) = env.hub.dialects().get(id) {
        act(env, d, d.parse(msg));
    }
}

/// One inbound binary message from a client of dialect `id`.
pub(crate) fn binary(env: &Env<'_>, id: DialectId, msg: &Bytes) {
    if let Some(d) = env.hub.dialects().get(id) {
        act(env, d, d.parse_binary(msg));
    }
}

fn authenticated(client: &Client) -> bool {
    client.dialect_auth() == DialectAuth::Done
}

fn act(env: &Env<'_>, d: &Arc<dyn Dialect>, inbound: Inbound) {
    let hub = env.hub;
    // The rate limits count what the engine acts on, as for stelar clients (events and
    // requests are counted in `dispatch::event`); answers and heartbeats are like pings.
    let limited = match &inbound {
        Inbound::Authenticate { .. } => Some("auth"),
        Inbound::Join(_) => Some("join"),
        Inbound::Leave(_) => Some("leave"),
        Inbound::Invalid(_) => Some("invalid"),
        _ => None,
    };
    if let Some(name) = limited {
        if !crate::protect::admit_message(env, name) {
            return;
        }
    }
    match inbound {
        Inbound::Alive => {}
        Inbound::Answer(text) => {
            hub.send_text(env.client, &text);
        }
        Inbound::Invalid(why) => {
            Counters::add(&hub.counters.messages_received, 1);
            hub.counters.error("dialect_invalid_message");
            hub.send_to(
                env.client,
                &Outgoing::server_error("invalid_message", &why, None, None),
            );
        }
        Inbound::Authenticate { token, data } => {
            Counters::add(&hub.counters.messages_received, 1);
            authenticate(env, d, token, data);
        }
        Inbound::Join(_) if !authenticated(env.client) => unauthenticated(env, d, "join"),
        Inbound::Leave(_) if !authenticated(env.client) => unauthenticated(env, d, "leave"),
        Inbound::Join(rooms) => {
            Counters::add(&hub.counters.messages_received, 1);
            let max = hub.config().limits.max_room_name;
            for room in rooms {
                if room.is_empty() || room.len() > max {
                    hub.counters.error("room_name_invalid");
                    hub.send_to(
                        env.client,
                        &Outgoing::server_error(
                            "invalid_room",
                            "room names are 1 to limits.max_room_name bytes",
                            Some("join"),
                            None,
                        ),
                    );
                    continue;
                }
                if !crate::auth::may(&hub.config(), env.client, Action::Join(&room)) {
                    let err = ClientError::Forbidden(Forbidden::Join);
                    hub.counters.error(err.label());
                    if !d.join_refusals_silent() {
                        hub.send_to(
                            env.client,
                            &Outgoing::server_error(
                                err.code(),
                                err.message(),
                                Some("join"),
                                Some(("room", &room)),
                            ),
                        );
                    }
                    continue;
                }
                dispatch::join(env, &room);
            }
        }
        Inbound::Leave(rooms) => {
            Counters::add(&hub.counters.messages_received, 1);
            for room in rooms {
                dispatch::leave(env, &room);
            }
        }
        Inbound::Event { event, .. } if !authenticated(env.client) => {
            unauthenticated(env, d, &event);
        }
        Inbound::Event { event, data } => {
            dispatch::event(env, &event, data.map(data_with_members), None);
        }
        Inbound::Request { name, .. }
            if !authenticated(env.client) && !env.app.skip_auth.contains(&name) =>
        {
            unauthenticated(env, d, &name);
        }
        Inbound::Request { name, data } => {
            let ack = AckRequest {
                name: name.clone(),
                correlation_id: None,
                received: std::time::Instant::now(),
            };
            dispatch::event(env, &name, data.map(data_with_members), Some(ack));
        }
    }
}

/// `data` with the members the relay routes on, found by one scan.
fn data_with_members(text: Bytes) -> Data {
    let members = envelope::members(&text).ok().flatten();
    Data { text, members }
}

/// A message that needs authentication, from a client without it.
fn unauthenticated(env: &Env<'_>, d: &Arc<dyn Dialect>, about: &str) {
    env.hub.counters.error("not_authenticated");
    match d.unauthenticated() {
        Unauthenticated::Error => {
            env.hub.send_to(
                env.client,
                &Outgoing::server_error(
                    "not_authenticated",
                    "Authentication required",
                    Some(about),
                    None,
                ),
            );
        }
        Unauthenticated::Close(_) => {
            env.client.set_close_reason("Authentication required");
            env.client.request_close(CloseCause::AuthRefused);
        }
    }
}

/// Called when a dialect client opens: bounds its time to authenticate, and authenticates it
/// at once when its upgrade request carried a token its dialect accepts there.
pub(crate) fn opened(env: &Env<'_>) {
    let Some(d) = dialect_of(env.hub, env.client) else {
        return;
    };
    let timeout = Duration::from_millis(env.hub.config().auth.timeout_ms);
    let weak: Weak<Client> = Rc::downgrade(env.client);
    glommio::spawn_local(async move {
        glommio::timer::sleep(timeout).await;
        if let Some(client) = weak.upgrade() {
            if client.dialect_auth() != DialectAuth::Done && client.close_requested().is_none() {
                client.request_close(CloseCause::AuthTimeout);
            }
        }
    })
    .detach();
    let token = env
        .client
        .request()
        .and_then(|req| d.token_from_request(&req));
    if let Some(token) = token {
        authenticate(env, &d, Some(token), None);
    }
}

/// The dialect's authentication step: the application's own auth request handler when the
/// dialect's auth is a request it answers (stonyx `auth`), else the authenticator with the
/// token.
fn authenticate(env: &Env<'_>, d: &Arc<dyn Dialect>, token: Option<String>, data: Option<Bytes>) {
    let (hub, client) = (env.hub.clone(), env.client.clone());
    match client.dialect_auth() {
        DialectAuth::Pending => {
            hub.counters.error("auth_in_progress");
            return;
        }
        DialectAuth::Done => {
            // Already in (e.g. a session cookie authenticated it at the upgrade, and the
            // client sends its token as well): answered as a success again, not re-checked.
            let user = client.user();
            hub.send_to(
                &client,
                &Outgoing::auth_ok(&client.id.to_string(), user.as_deref()),
            );
            return;
        }
        DialectAuth::None => {}
    }
    client.set_dialect_auth(DialectAuth::Pending);
    let app = env.app.clone();
    let d = d.clone();
    let ctx = Context::new(hub.clone(), client.clone(), app.clone());
    // An application's own auth request (stonyx): its result decides.
    if let Some(name) = d.auth_request().map(str::to_owned) {
        if let Some(handler) = app.acks.get(&name).cloned() {
            let fut = handler(ctx, Payload::json(&name, data));
            dispatch::spawn_handler(
                &hub.clone(),
                Box::pin(async move {
                    let result = AssertUnwindSafe(fut).catch_unwind().await;
                    let env = Env {
                        hub: &hub,
                        app: &app,
                        client: &client,
                    };
                    match result {
                        Ok(Ok(json)) if !matches!(json.as_bytes(), b"null" | b"false") => {
                            let reply = Outgoing::ack_reply(&name, &name, None, json.into_bytes());
                            succeeded(&env, &d, Some(reply));
                        }
                        Ok(_) => failed(&env, &d, "rejected", "Authentication failed".into()),
                        Err(_) => {
                            hub.counters.error("handler_panic");
                            failed(&env, &d, "error", "Authentication failed".into());
                        }
                    }
                }),
            );
            return;
        }
    }
    let Some(token) = token else {
        failed(env, &d, "missing", "Authentication token missing".into());
        return;
    };
    let Some(authenticator) = app.authenticator.clone() else {
        failed(env, &d, "error", "No authenticator is configured".into());
        return;
    };
    let check = AssertUnwindSafe(authenticator(ctx, Some(token))).catch_unwind();
    let started = std::time::Instant::now();
    glommio::spawn_local(async move {
        let result = check.await;
        hub.counters
            .observe_auth_micros(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        let env = Env {
            hub: &hub,
            app: &app,
            client: &client,
        };
        let identity = match result {
            Err(_) => {
                hub.counters.error("handler_panic");
                tracing::error!(shard = hub.shard(), "the authenticator panicked");
                return failed(&env, &d, "error", "Authentication failed".into());
            }
            Ok(Err(reject)) => {
                return failed(&env, &d, reject.fault.label(), reject.reason().to_owned())
            }
            Ok(Ok(identity)) => identity,
        };
        if client.close_requested().is_some() {
            return;
        }
        if let Some(user) = identity.user.as_deref() {
            if let Err(reject) = crate::conn::auth::cluster_user_cap(&hub, user).await {
                return failed(&env, &d, reject.fault.label(), reject.reason().to_owned());
            }
        }
        if client.close_requested().is_some() {
            return;
        }
        if let Err(reject) = crate::auth::accept(&hub, &client, identity) {
            let reject: AuthReject = reject;
            return failed(&env, &d, reject.fault.label(), reject.reason().to_owned());
        }
        succeeded(&env, &d, None);
    })
    .detach();
}

/// The client is in: it is told (`reply`, or the dialect's `Authenticated`), joins its
/// default rooms (and its own, for dialects that have one), and the connect hooks run.
fn succeeded(env: &Env<'_>, d: &Arc<dyn Dialect>, reply: Option<Arc<Outgoing>>) {
    let (hub, client) = (env.hub, env.client);
    if client.close_requested().is_some() || !client.is_open() {
        return;
    }
    client.set_dialect_auth(DialectAuth::Done);
    let user = client.user();
    hub.counters
        .auth_result(if user.is_some() { "ok" } else { "anonymous" });
    let config = hub.config();
    let path = client.request().map(|r| r.path.clone()).unwrap_or_default();
    let route = config.dialects.iter().find(|r| r.path == path);
    let mut rooms: Vec<String> = match route.and_then(|r| r.default_rooms.clone()) {
        Some(rooms) => rooms,
        None => d.default_rooms().iter().map(|r| (*r).to_owned()).collect(),
    };
    if d.joins_own_room() {
        rooms.push(client.id.to_string());
    }
    for room in &rooms {
        // Rooms the server gives; not the client's asking, so no permission check.
        match hub.join(client, room) {
            Ok(true) => dispatch::member_joined(env, room),
            Ok(false) => {}
            Err(refusal) => hub.counters.refuse(refusal.label()),
        }
    }
    let answer =
        reply.unwrap_or_else(|| Outgoing::auth_ok(&client.id.to_string(), user.as_deref()));
    hub.send_to(client, &answer);
    dispatch::connected(hub, env.app, client);
}

/// The client is refused: told (if its dialect says so), then closed or left to retry.
fn failed(env: &Env<'_>, d: &Arc<dyn Dialect>, label: &'static str, reason: String) {
    let (hub, client) = (env.hub, env.client);
    client.set_dialect_auth(DialectAuth::None);
    hub.counters.auth_result(label);
    tracing::debug!(client = %client.id, reason = %reason, "dialect authentication refused");
    hub.send_to(client, &Outgoing::auth_failed(&reason));
    if let AuthFailure::Close(_) = d.auth_failure() {
        client.set_close_reason(&reason);
        client.request_close(CloseCause::AuthRefused);
    }
}
