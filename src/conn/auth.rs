//! A connection's authentication phase (`auth.mode` optional / required): after the
//! WebSocket upgrade (or the TCP CONNECT frame), before the client opens.
//!
//! The token comes from the upgrade request (the caller passes it), or — in `required` mode,
//! when the request carried none — from the client's first message, which the session
//! decodes and reports without dispatching it ([`Session::take_first_message`]); anything
//! but `auth` (a `pong` heartbeat aside) refuses the client with 4003 "Authentication
//! required". Then the app's [`crate::app::Authenticator`] runs on this connection's task.
//! Until it answers nothing else is read: messages the client sent after `auth` wait in the
//! read buffer and are handled once the client is open, in order. The whole phase is bounded
//! by `auth.timeout_ms` (4001, TCP ERROR "Authentication timeout").
//!
//! While it lasts the connection is in the hub's `Handshake` phase: it is not an open client,
//! receives no broadcast, and counts for no room.

use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::FutureExt;

use super::{fill, Flow, Interrupted, Io, Session, Shared};
use crate::app::Context;
use crate::auth::{self, AuthReject, Fault};
use crate::config::AuthMode;
use crate::hub::client::{Client, CloseCause};
use crate::hub::outgoing::Outgoing;
use crate::hub::Hub;

/// What a client sent first while authentication waited for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FirstMessage {
    /// An `auth` message carrying a token.
    Token(String),
    /// An `auth` message without a usable token, or another message before `auth`.
    Refused(Fault),
}

impl FirstMessage {
    /// The first message for an `auth` event with `data`.
    pub(crate) fn auth(data: Option<&[u8]>) -> FirstMessage {
        match auth::token_from_data(data) {
            Ok(t) => FirstMessage::Token(t),
            Err(f) => FirstMessage::Refused(f),
        }
    }
}

/// How the authentication phase ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The client may open: as this user (answer `auth-ok`), or anonymous (`None`).
    Open(Option<Rc<str>>),
    /// Refused; the answer (close 4003 / 4001, TCP ERROR) has been flushed.
    Refused,
    /// The peer went away, or the server is closing it.
    Gone,
}

/// Authenticates `client` with the token `presented` with its upgrade request, or, in
/// `required` mode without one, with the token of its first message.
pub(crate) async fn authenticate<S: Session>(
    io: &mut Io,
    session: &mut S,
    shared: &Shared,
    client: &Rc<Client>,
    presented: Option<String>,
) -> Outcome {
    let hub = &shared.hub;
    let config = hub.config().clone();
    let timeout = Duration::from_millis(config.auth.timeout_ms);
    let deadline = Instant::now() + timeout;
    let token = match presented {
        Some(t) => Some(t),
        None if config.auth.mode == AuthMode::Required => {
            shared.arm_timer(client, timeout);
            session.await_first_message();
            let first = first_message(io, session, shared, client).await;
            shared.cancel_timer(client);
            match first {
                Ok(FirstMessage::Token(t)) => Some(t),
                Ok(FirstMessage::Refused(f)) => return refuse(io, shared, client, f.into()).await,
                Err(Interrupted::Timeout) => {
                    return refuse(io, shared, client, Fault::Timeout.into()).await
                }
                Err(_) => return Outcome::Gone,
            }
        }
        None => None,
    };
    let started = Instant::now();
    let Some(authenticator) = shared.app.authenticator.clone() else {
        // `server::start` installs the JWT check whenever the app brings none.
        tracing::error!("authentication is on but no authenticator is installed");
        return refuse(io, shared, client, Fault::Failed.into()).await;
    };
    let ctx = Context::new(hub.clone(), client.clone(), shared.app.clone());
    let check = AssertUnwindSafe(authenticator(ctx, token)).catch_unwind();
    let remaining = deadline.saturating_duration_since(started);
    let result = async { Some(check.await) }
        .or(async {
            glommio::timer::sleep(remaining).await;
            None
        })
        .await;
    hub.counters
        .observe_auth_micros(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
    let identity = match result {
        None => return refuse(io, shared, client, Fault::Timeout.into()).await,
        Some(Err(_)) => {
            hub.counters.error("handler_panic");
            tracing::error!(shard = hub.shard(), "the authenticator panicked");
            return refuse(io, shared, client, Fault::Failed.into()).await;
        }
        Some(Ok(Err(reject))) => return refuse(io, shared, client, reject).await,
        Some(Ok(Ok(identity))) => identity,
    };
    if client.close_requested().is_some() {
        return Outcome::Gone;
    }
    if let Some(user) = identity.user.as_deref() {
        if let Err(reject) = cluster_user_cap(hub, user).await {
            return refuse(io, shared, client, reject).await;
        }
    }
    if client.close_requested().is_some() {
        return Outcome::Gone;
    }
    if let Err(reject) = auth::accept(hub, client, identity) {
        return refuse(io, shared, client, reject).await;
    }
    let user = client.user();
    hub.counters
        .auth_result(if user.is_some() { "ok" } else { "anonymous" });
    Outcome::Open(user)
}

/// Reads until the session reports the client's first message, the auth deadline (the
/// client's timer) passes, or the connection ends. Pings are answered meanwhile.
async fn first_message<S: Session>(
    io: &mut Io,
    session: &mut S,
    shared: &Shared,
    client: &Rc<Client>,
) -> Result<FirstMessage, Interrupted> {
    loop {
        if !io.rbuf.is_empty() {
            let flow = session.handle_input(&mut io.rbuf, shared, client);
            if let Some(first) = session.take_first_message() {
                return Ok(first);
            }
            if flow == Flow::Stop {
                // A close or a protocol fault: its answer is queued.
                let _ = io.flush(client, &shared.hub).await;
                return Err(Interrupted::Gone);
            }
        }
        if io.flush(client, &shared.hub).await.is_err() {
            return Err(Interrupted::Gone);
        }
        fill(io, shared, client).await?;
    }
}

/// Answers a refusal (4003 with the reason, 4001 for a timeout; TCP: ERROR) and counts it.
async fn refuse(io: &mut Io, shared: &Shared, client: &Client, reject: AuthReject) -> Outcome {
    let hub = &shared.hub;
    hub.counters.auth_result(reject.fault.label());
    tracing::debug!(client = %client.id, result = reject.fault.label(), reason = reject.reason(), "authentication refused");
    let msg = if reject.fault == Fault::Timeout {
        Outgoing::closing(CloseCause::AuthTimeout)
    } else {
        Outgoing::auth_refused(reject.into_reason())
    };
    hub.send_control(client, &msg);
    let _ = io.flush(client, hub).await;
    Outcome::Refused
}

/// In a cluster, `limits.max_connections_per_user` counts the user's connections on every
/// live node (presence in Redis), checked before the connection is counted here. Nodes that
/// admit the same user at the same moment can each pass the check (the cap may be exceeded by
/// the number of simultaneous logins); while Redis is away the cap holds per node.
pub(crate) async fn cluster_user_cap(hub: &Rc<Hub>, user: &str) -> Result<(), AuthReject> {
    let cap = hub.config().limits.max_connections_per_user;
    if cap == 0 || hub.cluster().is_none() {
        return Ok(());
    }
    let remote = match hub
        .ask_cluster(crate::cluster::Query::UserConnections(user.into()))
        .await
    {
        Some(crate::cluster::Answer::Count(n)) => n,
        _ => return Ok(()),
    };
    if remote + hub.user_connections(user) >= cap {
        let refusal = crate::hub::users::UserRefusal::TooManyConnections;
        hub.counters.refuse(refusal.label());
        return Err(AuthReject::new(refusal.to_string()));
    }
    Ok(())
}
