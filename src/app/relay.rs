//! The standalone relay: what `shardcast serve` does with no Rust code (DESIGN.md "The
//! standalone relay", README "Relay events").
//!
//! | event | data | effect |
//! |---|---|---|
//! | `publish` | `{"room": R, "event": E, "data": D}` | every other member of R receives `{"event": E, "data": D}` |
//! | `broadcast` | `{"event": E, "data": D}` | every other client receives it |
//! | `direct` | `{"to": ID, "event": E, "data": D}` | client ID receives it, wherever it is |
//! | `echo` | D | the sender receives `{"event": "echo", "data": D}` |
//!
//! ACKs: `echo` (returns its data), `time` (server clock, ms since the epoch), `whoami` (the
//! caller's id), `stats` (the `/health` object). Binary messages whose event is
//! `ROOM:NAME` (split at the last `:`) go, unchanged, to every other member of ROOM.
//!
//! `D` is forwarded byte for byte: the fields are located by the span-keeping scanner and
//! the outgoing envelope is built around the original bytes. Bad requests get a
//! `server:error` event naming the problem.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::dispatch::{send_ack_reply, spawn_handler, AckRequest, Env};
use crate::hub::id::ClientId;
use crate::hub::outgoing::Outgoing;
use crate::protocol::stelar::json::{self, Document, Kind, Value};
use crate::protocol::stelar::names;

/// The members of a publish / broadcast / direct request object (from a client's relay event
/// or the HTTP API's body), as spans of the request text.
#[derive(Default)]
pub(crate) struct Fields {
    pub room: Option<Value>,
    pub event: Option<Value>,
    pub data: Option<Value>,
    pub to: Option<Value>,
}

/// Why a request object was refused.
pub(crate) enum FieldsError {
    /// Not valid JSON.
    Json,
    /// Valid JSON, not an object.
    NotObject,
}

impl Fields {
    /// Scans a request object, validating all of it.
    pub(crate) fn parse(data: &[u8]) -> Result<Fields, FieldsError> {
        let mut f = Fields::default();
        let doc = json::walk(data, |key, v| {
            match key {
                b"room" => f.room = Some(v),
                b"event" => f.event = Some(v),
                b"data" => f.data = Some(v),
                b"to" => f.to = Some(v),
                _ => {}
            }
            Ok(())
        })
        .map_err(|_| FieldsError::Json)?;
        if doc == Document::Object {
            Ok(f)
        } else {
            Err(FieldsError::NotObject)
        }
    }
}

/// A member's value if it is a JSON string, unescaped.
pub(crate) fn string<'a>(input: &'a [u8], v: Option<Value>) -> Option<std::borrow::Cow<'a, str>> {
    let v = v?;
    if v.kind != Kind::String {
        return None;
    }
    json::decode_str(input, v).ok()
}

/// A relay event. Returns false if `event` is not one of the relay's.
pub(crate) fn event(env: &Env<'_>, event: &str, data: Option<&Bytes>) -> bool {
    let relay = &env.app.config.relay;
    match event {
        "echo" => {
            let msg = Outgoing::event("echo", data.cloned());
            env.hub.send_to(env.client, &msg);
        }
        "publish" | "broadcast" | "direct" => {
            let allowed = match event {
                "publish" => relay.publish,
                "broadcast" => relay.broadcast,
                _ => relay.direct,
            };
            if !allowed {
                env.error(
                    "forbidden",
                    "this relay event is disabled on this server",
                    Some(event),
                );
                return true;
            }
            let Some(raw) = data else {
                env.error("invalid_data", "data must be an object", Some(event));
                return true;
            };
            let Ok(f) = Fields::parse(raw) else {
                env.error("invalid_data", "data must be an object", Some(event));
                return true;
            };
            let Some(inner) = string(raw, f.event) else {
                env.error("invalid_data", "data.event must be a string", Some(event));
                return true;
            };
            if names::validate_outbound_event(&inner).is_err() {
                env.error(
                    "invalid_event_name",
                    "data.event must be 1-256 of A-Z a-z 0-9 - . / : and not reserved",
                    Some(event),
                );
                return true;
            }
            // The forwarded data: the exact bytes of data.data, as a view of the message.
            let inner_data = f.data.map(|v| raw.slice(v.start..v.end));
            let msg = Outgoing::event(&inner, inner_data);
            match event {
                "publish" => {
                    let max = env.app.config.limits.max_room_name;
                    let room = match string(raw, f.room) {
                        Some(r) if !r.is_empty() && r.len() <= max => r,
                        _ => {
                            env.error("invalid_room", "data.room must be a non-empty string of at most max_room_name bytes", Some(event));
                            return true;
                        }
                    };
                    if relay.publish_requires_membership
                        && !env.client.rooms().iter().any(|r| **r == *room)
                    {
                        env.error(
                            "not_member",
                            "publishing requires membership of the room",
                            Some(event),
                        );
                        return true;
                    }
                    env.hub.publish(&room, msg, Some(env.client.id));
                }
                "broadcast" => {
                    env.hub.broadcast(msg, Some(env.client.id));
                }
                _ => {
                    let to = string(raw, f.to).and_then(|t| ClientId::parse(t.as_bytes()));
                    let Some(to) = to else {
                        env.error("invalid_data", "data.to must be a client id", Some(event));
                        return true;
                    };
                    env.hub.direct(to, msg, Some(env.client.id));
                }
            }
        }
        _ => return false,
    }
    true
}

/// A built-in ACK. Returns false if `ack.name` is not one of the relay's.
pub(crate) fn ack(env: &Env<'_>, event: &str, data: Option<&Bytes>, ack: &AckRequest) -> bool {
    let reply = |result: &[u8]| send_ack_reply(env.hub, env.client, event, ack, result);
    match ack.name.as_str() {
        "echo" => reply(data.map_or(&b"null"[..], |d| &d[..])),
        "time" => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            reply(ms.to_string().as_bytes());
        }
        "whoami" => {
            let id = env.client.id.to_text();
            let mut quoted = Vec::with_capacity(38);
            quoted.push(b'"');
            quoted.extend_from_slice(&id);
            quoted.push(b'"');
            reply(&quoted);
        }
        "stats" => {
            let hub = env.hub.clone();
            let client = env.client.clone();
            let event = event.to_owned();
            let ack = ack.clone();
            spawn_handler(
                env.hub,
                Box::pin(async move {
                    let snapshot = hub.stats().await;
                    let process = crate::stats::Process::read(hub.now_ms());
                    let body = crate::stats::health_json(&snapshot, &process);
                    send_ack_reply(&hub, &client, &event, &ack, body.as_bytes());
                }),
            );
        }
        _ => return false,
    }
    true
}

/// A binary relay: event `ROOM:NAME` goes to the other members of ROOM, unchanged.
pub(crate) fn binary(env: &Env<'_>, event: &str, payload: Bytes) -> bool {
    if !env.app.config.relay.publish {
        return false;
    }
    let Some(colon) = event.rfind(':') else {
        return false;
    };
    let room = &event[..colon];
    if room.is_empty() || room.len() > env.app.config.limits.max_room_name {
        return false;
    }
    if env.app.config.relay.publish_requires_membership
        && !env.client.rooms().iter().any(|r| &**r == room)
    {
        env.error(
            "not_member",
            "publishing requires membership of the room",
            Some(event),
        );
        return true;
    }
    env.hub
        .publish(room, Outgoing::binary(event, payload), Some(env.client.id));
    true
}
