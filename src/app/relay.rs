//! The standalone relay: what `shardcast serve` does with no Rust code (DESIGN.md "The
//! standalone relay", README "Relay events"), and the one place where a publish / broadcast /
//! send request is checked, whoever sends it ([`Request::parse`]: a client's relay event here,
//! a backend's HTTP API call in `conn/http.rs`).
//!
//! | event | data | effect |
//! |---|---|---|
//! | `publish` | `{"room": R, "event": E, "data": D}` | every other member of R receives `{"event": E, "data": D}` |
//! | `broadcast` | `{"event": E, "data": D}` | every other client receives it |
//! | `direct` | `{"to": ID, "event": E, "data": D}` | client ID receives it, wherever it is |
//! | `direct` | `{"user": U, "event": E, "data": D}` | every connection of user U (but the sender's) receives it, on every shard |
//! | `echo` | D | the sender receives `{"event": "echo", "data": D}` |
//!
//! ACKs: `echo` (returns its data), `time` (server clock, ms since the epoch), `whoami` (the
//! caller's id), `stats` (the `/health` object). Binary messages whose event is
//! `ROOM:NAME` (split at the last `:`) go, unchanged, to every other member of ROOM.
//!
//! `D` is forwarded byte for byte: the request's members were located by the scan that
//! validated the message ([`Members`]), and the outgoing envelope is built around the
//! original bytes. Bad requests get a `server:error` event naming the problem.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::dispatch::{send_ack_reply, spawn_handler, AckRequest, Data, Env};
use super::error::{ClientError, Forbidden, RequestError};
use crate::auth::{self, Action};
use crate::hub::id::ClientId;
use crate::hub::outgoing::Outgoing;
use crate::hub::users::MAX_USER_ID;
use crate::hub::Hub;
use crate::protocol::stelar::{names, Members};

/// Which request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// To a room's members.
    Publish,
    /// To every client.
    Broadcast,
    /// To one client.
    Send,
}

/// Where a request's message goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// A room's members.
    Room(String),
    /// Every client.
    All,
    /// One client.
    Client(ClientId),
    /// Every connection of a user.
    User(String),
}

/// A checked publish / broadcast / send request: its target and its message.
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) target: Target,
    pub(crate) msg: Arc<Outgoing>,
}

impl Request {
    /// Checks a request object — `text` is its JSON, `members` its routing members — and
    /// builds the message: `event` must be a name stelar clients accept, `room` (publish) a
    /// non-empty string of at most `max_room` bytes, `to` (send) a client id or else `user`
    /// a user id of 1-256 bytes; `data` goes out verbatim.
    pub(crate) fn parse(
        kind: Kind,
        text: &Bytes,
        members: Option<&Members>,
        max_room: usize,
    ) -> Result<Request, RequestError> {
        let m = members.ok_or(RequestError::NotObject)?;
        let event = m.event(text).ok_or(RequestError::EventNotString)?;
        names::validate_outbound_event(&event).map_err(|_| RequestError::InvalidEventName)?;
        let target = match kind {
            Kind::Publish => match m.room(text) {
                Some(r) if !r.is_empty() && r.len() <= max_room => Target::Room(r.into_owned()),
                _ => return Err(RequestError::InvalidRoom),
            },
            Kind::Broadcast => Target::All,
            Kind::Send if m.to(text).is_none() && m.has_user() => match m.user(text) {
                Some(u) if !u.is_empty() && u.len() <= MAX_USER_ID => Target::User(u.into_owned()),
                _ => return Err(RequestError::InvalidUser),
            },
            Kind::Send => {
                let to = m.to(text).and_then(|t| ClientId::parse(t.as_bytes()));
                Target::Client(to.ok_or(RequestError::InvalidTo)?)
            }
        };
        let data = m.data_range().map(|r| text.slice(r));
        let msg = match &target {
            Target::Room(room) => Outgoing::event_in(Arc::from(room.as_str()), &event, data),
            _ => Outgoing::event(&event, data),
        };
        Ok(Request { target, msg })
    }

    /// Carries the request out from this shard, `from` excluded (and told if a direct
    /// recipient is gone).
    pub(crate) fn execute(self, hub: &Hub, from: Option<ClientId>) {
        match self.target {
            Target::Room(room) => {
                hub.publish(&room, self.msg, from);
            }
            Target::All => {
                hub.broadcast(self.msg, from);
            }
            Target::Client(to) => {
                hub.direct(to, self.msg, from);
            }
            Target::User(user) => {
                hub.to_user(&user, self.msg, from);
            }
        }
    }
}

/// A relay event. Returns false if `event` is not one of the relay's.
pub(crate) fn event(env: &Env<'_>, event: &str, data: Option<&Data>) -> bool {
    let config = env.hub.config();
    let relay = &config.relay;
    let kind = match event {
        "echo" => {
            let msg = Outgoing::event("echo", data.map(|d| d.text.clone()));
            env.hub.send_to(env.client, &msg);
            return true;
        }
        "publish" => Kind::Publish,
        "broadcast" => Kind::Broadcast,
        "direct" => Kind::Send,
        _ => return false,
    };
    let allowed = match kind {
        Kind::Publish => relay.publish,
        Kind::Broadcast => relay.broadcast,
        Kind::Send => relay.direct,
    };
    if !allowed {
        env.error(ClientError::RelayDisabled, Some(event));
        return true;
    }
    // The client's credentials (auth/): `broadcast` / `direct` claims.
    let config = env.hub.config();
    let denied = match kind {
        Kind::Broadcast if !auth::may(&config, env.client, Action::Broadcast) => {
            Some(Forbidden::Broadcast)
        }
        Kind::Send if !auth::may(&config, env.client, Action::Direct) => Some(Forbidden::Direct),
        _ => None,
    };
    if let Some(f) = denied {
        env.error(ClientError::Forbidden(f), Some(event));
        return true;
    }
    let request = match data {
        Some(d) => Request::parse(
            kind,
            &d.text,
            d.members.as_ref(),
            config.limits.max_room_name,
        ),
        None => Err(RequestError::NotObject),
    };
    match request {
        Ok(req) => {
            if let Target::Room(room) = &req.target {
                if !auth::may(&config, env.client, Action::Publish(room)) {
                    env.error(ClientError::Forbidden(Forbidden::Publish), Some(event));
                    return true;
                }
                if relay.publish_requires_membership && !is_member(env, room) {
                    env.error(ClientError::NotMember, Some(event));
                    return true;
                }
            }
            req.execute(env.hub, Some(env.client.id));
        }
        Err(e) => env.error(e.into(), Some(event)),
    }
    true
}

fn is_member(env: &Env<'_>, room: &str) -> bool {
    env.client.in_room(room)
}

/// A built-in ACK. Returns false if `ack.name` is not one of the relay's.
pub(crate) fn ack(env: &Env<'_>, event: &str, data: Option<&Data>, ack: &AckRequest) -> bool {
    let reply = |result: Bytes| send_ack_reply(env.hub, env.client, event, ack, result);
    match ack.name.as_str() {
        "echo" => reply(data.map_or(Bytes::from_static(b"null"), |d| d.text.clone())),
        "time" => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            reply(Bytes::from(ms.to_string()));
        }
        "whoami" => {
            let id = env.client.id.to_text();
            let mut quoted = Vec::with_capacity(id.len() + 2);
            quoted.push(b'"');
            quoted.extend_from_slice(&id);
            quoted.push(b'"');
            reply(Bytes::from(quoted));
        }
        "stats" => reply_later(env, event, ack, |hub| async move {
            let snapshot = hub.stats().await;
            let process = crate::stats::Process::read(hub.now_ms());
            Bytes::from(crate::stats::health_json(&snapshot, &process))
        }),
        "members" if env.hub.config().relay.members => {
            let room = data.and_then(|d| serde_json::from_slice::<String>(&d.text).ok());
            let Some(room) = room.filter(|r| !r.is_empty()) else {
                env.error(ClientError::Request(RequestError::InvalidRoom), Some(event));
                return true;
            };
            if !is_member(env, &room) {
                env.error(ClientError::NotMember, Some(event));
                return true;
            }
            reply_later(env, event, ack, |hub| async move {
                let found = hub.room_members(&room).await;
                members_json(&room, &found)
            });
        }
        _ => return false,
    }
    true
}

/// Answers an ACK from a task of its own: the answer (`body`) needs other shards or nodes.
fn reply_later<F>(
    env: &Env<'_>,
    event: &str,
    ack: &AckRequest,
    body: impl FnOnce(std::rc::Rc<Hub>) -> F,
) where
    F: std::future::Future<Output = Bytes> + 'static,
{
    let hub = env.hub.clone();
    let client = env.client.clone();
    let event = event.to_owned();
    let ack = ack.clone();
    let answer = body(hub.clone());
    spawn_handler(
        env.hub,
        Box::pin(async move {
            let result = answer.await;
            send_ack_reply(&hub, &client, &event, &ack, result);
        }),
    );
}

/// `{"room":R,"members":[ids],"users":[distinct user ids]}` (`"partial":true` when other
/// nodes could not be asked).
fn members_json(room: &str, found: &crate::hub::Members) -> Bytes {
    let users: std::collections::BTreeSet<&str> = found
        .members
        .iter()
        .filter_map(|(_, u)| u.as_deref())
        .collect();
    let value = serde_json::json!({
        "room": room,
        "members": found.members.iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "users": users,
    });
    let mut value = value;
    if found.partial {
        value["partial"] = serde_json::Value::Bool(true);
    }
    Bytes::from(value.to_string())
}

/// A binary relay: event `ROOM:NAME` goes to the other members of ROOM, unchanged.
pub(crate) fn binary(env: &Env<'_>, event: &str, payload: Bytes) -> bool {
    let config = env.hub.config();
    if !config.relay.publish {
        return false;
    }
    let Some(colon) = event.rfind(':') else {
        return false;
    };
    let room = &event[..colon];
    if room.is_empty() || room.len() > config.limits.max_room_name {
        return false;
    }
    if !auth::may(&config, env.client, Action::Publish(room)) {
        env.error(ClientError::Forbidden(Forbidden::Publish), Some(event));
        return true;
    }
    if config.relay.publish_requires_membership && !is_member(env, room) {
        env.error(ClientError::NotMember, Some(event));
        return true;
    }
    env.hub.publish(
        room,
        Outgoing::binary_in(Arc::from(room), event, payload),
        Some(env.client.id),
    );
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::stelar::envelope;

    fn parse(kind: Kind, text: &'static str) -> Result<Request, RequestError> {
        let text = Bytes::from_static(text.as_bytes());
        let members = envelope::members(&text).map_err(|_| RequestError::NotJson)?;
        Request::parse(kind, &text, members.as_ref(), 8)
    }

    #[test]
    fn one_check_for_every_request() {
        let r = parse(
            Kind::Publish,
            r#"{"data": {"x": [1, 2]}, "room":"r1","event":"e"}"#,
        )
        .unwrap();
        assert!(matches!(&r.target, Target::Room(room) if room == "r1"));
        assert_eq!(
            &r.msg.ws_plain().unwrap()[2..],
            br#"{"event":"e","data":{"x": [1, 2]}}"#,
            "data verbatim"
        );
        assert!(matches!(
            parse(Kind::Broadcast, r#"{"event":"e"}"#).unwrap().target,
            Target::All
        ));
        let id = "00000000-0000-4000-8000-000000000000";
        let text: &'static str = Box::leak(format!(r#"{{"to":"{id}","event":"e"}}"#).into());
        assert!(matches!(
            parse(Kind::Send, text).unwrap().target,
            Target::Client(_)
        ));
        assert!(matches!(
            parse(Kind::Send, r#"{"user":"u-1","event":"e"}"#).unwrap().target,
            Target::User(u) if u == "u-1"
        ));
        for (kind, text, want) in [
            (Kind::Publish, "[1]", RequestError::NotObject),
            (Kind::Publish, "{", RequestError::NotJson),
            (
                Kind::Publish,
                r#"{"room":"r"}"#,
                RequestError::EventNotString,
            ),
            (
                Kind::Publish,
                r#"{"room":"r","event":1}"#,
                RequestError::EventNotString,
            ),
            (
                Kind::Publish,
                r#"{"room":"r","event":"a b"}"#,
                RequestError::InvalidEventName,
            ),
            (
                Kind::Publish,
                r#"{"room":"r","event":"ping"}"#,
                RequestError::InvalidEventName,
            ),
            (Kind::Publish, r#"{"event":"e"}"#, RequestError::InvalidRoom),
            (
                Kind::Publish,
                r#"{"room":"","event":"e"}"#,
                RequestError::InvalidRoom,
            ),
            (
                Kind::Publish,
                r#"{"room":"123456789","event":"e"}"#,
                RequestError::InvalidRoom,
            ),
            (
                Kind::Send,
                r#"{"to":"nobody","event":"e"}"#,
                RequestError::InvalidTo,
            ),
            (Kind::Send, r#"{"event":"e"}"#, RequestError::InvalidTo),
            (
                Kind::Send,
                r#"{"user":"","event":"e"}"#,
                RequestError::InvalidUser,
            ),
            (
                Kind::Send,
                r#"{"user":7,"event":"e"}"#,
                RequestError::InvalidUser,
            ),
        ] {
            assert_eq!(parse(kind, text).unwrap_err(), want, "{text}");
        }
    }
}
