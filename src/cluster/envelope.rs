//! What crosses Redis: channel names and the message envelope, encoded and decoded without
//! I/O (README "Cluster" documents both for outside publishers).
//!
//! Channels (`P` is `cluster.prefix`), all Redis 7 sharded pub/sub:
//!
//! | channel | carries | a node is subscribed |
//! |---|---|---|
//! | `P:room:{room}` | a room's messages | while it has members in the room |
//! | `P:broadcast` | broadcasts | always |
//! | `P:user:{user}` | messages to a user | while it holds a connection of the user |
//! | `P:node:{tag}` | messages to client ids of one node | always (its own tag) |
//!
//! The tag is the 4 hex digits at characters 24..28 of a client id (`hub/id.rs`).
//!
//! Envelope, one JSON object: `{"node":N,"event":E,"data":D}`, optionally `"to":ID` (required
//! on `P:node:*`), `"binary":"BASE64"` instead of `data`, and `"exclude":[ID,...]` (clients
//! not to deliver to). `D` is kept byte for byte: a client receives `{"event":E,"data":D}` as
//! if the message had been published on its own node. `node` (the publishing node's id) lets a
//! node skip what it published itself; outside publishers may leave it out.
//!
//! ignis compatibility (`cluster.compat = "ignis"`): its `WebSocketEmitter` PUBLISHes (classic
//! pub/sub) `IRedisSocketMessage` — `{"serverId","type","target","event","data","exclude"}` —
//! to `ws:room:{room}`, `ws:broadcast`, `ws:client:{id}` and `ws:user:{id}`. The same decoder
//! reads it: unknown members are ignored, `exclude` may be a string or an array.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::hub::id::ClientId;
use crate::hub::outgoing::Body;
use crate::protocol::stelar::json::write_quoted;
use crate::protocol::stelar::names;

/// Which channel a message came in on.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Channel<'a> {
    /// `P:room:{room}` (or `ws:room:{room}`).
    Room(&'a str),
    /// `P:broadcast` (or `ws:broadcast`).
    Broadcast,
    /// `P:user:{user}` (or `ws:user:{user}`).
    User(&'a str),
    /// `P:node:{tag}`.
    Node(u16),
    /// `ws:client:{id}`.
    Client(&'a str),
}

/// The channel names of one prefix.
#[derive(Clone, Debug)]
pub(crate) struct Channels {
    room: String,
    broadcast: String,
    user: String,
    node: String,
}

/// ignis' channel names (fixed: its emitter has no prefix).
pub(crate) const IGNIS_ROOM: &str = "ws:room:";
/// ignis' broadcast channel.
pub(crate) const IGNIS_BROADCAST: &str = "ws:broadcast";
/// ignis' client channels (a pattern subscription).
pub(crate) const IGNIS_CLIENT_PATTERN: &str = "ws:client:*";
/// ignis' user channels (a pattern subscription).
pub(crate) const IGNIS_USER_PATTERN: &str = "ws:user:*";

impl Channels {
    /// Names under `prefix`.
    pub(crate) fn new(prefix: &str) -> Channels {
        Channels {
            room: format!("{prefix}:room:"),
            broadcast: format!("{prefix}:broadcast"),
            user: format!("{prefix}:user:"),
            node: format!("{prefix}:node:"),
        }
    }

    /// A room's channel.
    pub(crate) fn room(&self, room: &str) -> String {
        format!("{}{room}", self.room)
    }

    /// The broadcast channel.
    pub(crate) fn broadcast(&self) -> &str {
        &self.broadcast
    }

    /// A user's channel.
    pub(crate) fn user(&self, user: &str) -> String {
        format!("{}{user}", self.user)
    }

    /// The channel of the node with `tag`.
    pub(crate) fn node(&self, tag: u16) -> String {
        format!("{}{tag:04x}", self.node)
    }

    /// Which of our channels (or ignis' when `ignis`) `name` is.
    pub(crate) fn parse<'a>(&self, name: &'a str, ignis: bool) -> Option<Channel<'a>> {
        if let Some(room) = name.strip_prefix(self.room.as_str()) {
            return Some(Channel::Room(room));
        }
        if name == self.broadcast {
            return Some(Channel::Broadcast);
        }
        if let Some(user) = name.strip_prefix(self.user.as_str()) {
            return Some(Channel::User(user));
        }
        if let Some(tag) = name.strip_prefix(self.node.as_str()) {
            return u16::from_str_radix(tag, 16).ok().map(Channel::Node);
        }
        if !ignis {
            return None;
        }
        if let Some(room) = name.strip_prefix(IGNIS_ROOM) {
            return Some(Channel::Room(room));
        }
        if name == IGNIS_BROADCAST {
            return Some(Channel::Broadcast);
        }
        if let Some(id) = name.strip_prefix("ws:client:") {
            return Some(Channel::Client(id));
        }
        name.strip_prefix("ws:user:").map(Channel::User)
    }
}

/// Builds the envelope for a message of this node. `None` for bodies that do not cross nodes
/// (ACK replies, bench frames, control frames: they only ever go to a local client).
pub(crate) fn encode(node: &str, to: Option<&ClientId>, body: &Body) -> Option<Bytes> {
    let mut out = BytesMut::with_capacity(64 + node.len() + body_len(body));
    out.extend_from_slice(b"{\"node\":");
    write_quoted(&mut out, node);
    if let Some(to) = to {
        out.extend_from_slice(b",\"to\":\"");
        out.extend_from_slice(&to.to_text());
        out.extend_from_slice(b"\"");
    }
    match body {
        Body::Event { event, data } => {
            out.extend_from_slice(b",\"event\":");
            write_quoted(&mut out, event);
            if let Some(d) = data {
                out.extend_from_slice(b",\"data\":");
                out.extend_from_slice(d);
            }
        }
        Body::Binary { event, payload } => {
            out.extend_from_slice(b",\"event\":");
            write_quoted(&mut out, event);
            out.extend_from_slice(b",\"binary\":\"");
            let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
            out.extend_from_slice(b64.as_bytes());
            out.extend_from_slice(b"\"");
        }
        _ => return None,
    }
    out.extend_from_slice(b"}");
    Some(out.freeze())
}

fn body_len(body: &Body) -> usize {
    match body {
        Body::Event { event, data } => event.len() + data.as_ref().map_or(0, Bytes::len),
        Body::Binary { event, payload } => event.len() + payload.len() * 4 / 3 + 4,
        _ => 0,
    }
}

/// A decoded envelope.
#[derive(Debug)]
pub(crate) struct Envelope {
    /// The publishing node (`node`, or ignis' `serverId`), when given.
    pub(crate) node: Option<String>,
    /// The message to deliver.
    pub(crate) body: Body,
    /// `to` (required on a node channel).
    pub(crate) to: Option<ClientId>,
    /// Clients not to deliver to (ids that are not ours are ignored).
    pub(crate) exclude: Vec<ClientId>,
}

/// Why an envelope was refused (counted as `bad_envelope`, logged at debug).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    /// Not UTF-8 JSON of the expected shape.
    NotJson,
    /// `event` is missing or not a name stelar clients accept.
    BadEvent,
    /// `binary` is not base64.
    BadBinary,
    /// `to` is not a client id.
    BadTo,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<'a> {
    #[serde(borrow)]
    One(Cow<'a, str>),
    #[serde(borrow)]
    Many(Vec<Cow<'a, str>>),
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow, default)]
    node: Option<Cow<'a, str>>,
    #[serde(borrow, default, rename = "serverId")]
    server_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    binary: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    to: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    exclude: Option<OneOrMany<'a>>,
}

/// Decodes an envelope; `data` stays a slice of `payload` (no copy).
pub(crate) fn decode(payload: &Bytes) -> Result<Envelope, EnvelopeError> {
    let text = std::str::from_utf8(payload).map_err(|_| EnvelopeError::NotJson)?;
    let raw: Raw<'_> = serde_json::from_str(text).map_err(|_| EnvelopeError::NotJson)?;
    names::validate_outbound_event(&raw.event).map_err(|_| EnvelopeError::BadEvent)?;
    let event: Box<str> = raw.event.as_ref().into();
    let body = match (raw.binary, raw.data) {
        (Some(b64), _) => Body::Binary {
            event,
            payload: base64::engine::general_purpose::STANDARD
                .decode(b64.as_bytes())
                .map_err(|_| EnvelopeError::BadBinary)?
                .into(),
        },
        (None, data) => Body::Event {
            event,
            data: data.map(|d| {
                let start = d.get().as_ptr() as usize - text.as_ptr() as usize;
                payload.slice(start..start + d.get().len())
            }),
        },
    };
    let to = match raw.to {
        Some(t) => Some(ClientId::parse(t.as_bytes()).ok_or(EnvelopeError::BadTo)?),
        None => None,
    };
    let exclude = match raw.exclude {
        None => Vec::new(),
        Some(OneOrMany::One(id)) => ClientId::parse(id.as_bytes()).into_iter().collect(),
        Some(OneOrMany::Many(ids)) => ids
            .iter()
            .filter_map(|id| ClientId::parse(id.as_bytes()))
            .collect(),
    };
    Ok(Envelope {
        node: raw.node.or(raw.server_id).map(Cow::into_owned),
        body,
        to,
        exclude,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::id::NODE_TAG_TEXT;

    fn data_of(body: &Body) -> Option<&[u8]> {
        match body {
            Body::Event { data, .. } => data.as_deref(),
            _ => None,
        }
    }

    #[test]
    fn channel_names_round_trip() {
        let c = Channels::new("sc");
        assert_eq!(c.room("lobby:1"), "sc:room:lobby:1");
        assert_eq!(
            c.parse("sc:room:lobby:1", false),
            Some(Channel::Room("lobby:1"))
        );
        assert_eq!(c.parse("sc:broadcast", false), Some(Channel::Broadcast));
        assert_eq!(c.parse(&c.user("u 1"), false), Some(Channel::User("u 1")));
        assert_eq!(c.node(0xab), "sc:node:00ab");
        assert_eq!(c.parse("sc:node:00ab", false), Some(Channel::Node(0xab)));
        assert_eq!(c.parse("sc:node:zz", false), None);
        assert_eq!(c.parse("ws:room:a", false), None);
        assert_eq!(c.parse("ws:room:a", true), Some(Channel::Room("a")));
        assert_eq!(c.parse("ws:broadcast", true), Some(Channel::Broadcast));
        assert_eq!(c.parse("ws:client:x", true), Some(Channel::Client("x")));
        assert_eq!(c.parse("ws:user:7", true), Some(Channel::User("7")));
        assert_eq!(c.parse("other", true), None);
    }

    #[test]
    fn event_round_trips_with_data_verbatim() {
        let data = Bytes::from_static(b"{ \"a\" : [1, 2.50, \"\\u00e9\"] }");
        let body = Body::Event {
            event: "chat".into(),
            data: Some(data.clone()),
        };
        let wire = encode("node \"a\"", None, &body).unwrap();
        let env = decode(&wire).unwrap();
        assert_eq!(env.node.as_deref(), Some("node \"a\""));
        assert_eq!(data_of(&env.body), Some(&data[..]));
        assert!(env.to.is_none() && env.exclude.is_empty());
    }

    #[test]
    fn binary_and_to_round_trip() {
        let id = ClientId::new(0x1234, 1, 9, crate::hub::id::random_bytes());
        let body = Body::Binary {
            event: "room:x".into(),
            payload: Bytes::from_static(&[0, 1, 2, 255]),
        };
        let wire = encode("n", Some(&id), &body).unwrap();
        let env = decode(&wire).unwrap();
        assert_eq!(env.to, Some(id));
        match env.body {
            Body::Binary { event, payload } => {
                assert_eq!(&*event, "room:x");
                assert_eq!(&payload[..], &[0, 1, 2, 255]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&id.to_string()[NODE_TAG_TEXT], "1234");
        assert_eq!(Channels::new("p").node(id.node()), "p:node:1234");
    }

    #[test]
    fn ignis_envelope_decodes() {
        let id = ClientId::new(1, 0, 0, crate::hub::id::random_bytes());
        let text = format!(
            "{{\"serverId\":\"emitter\",\"type\":\"room\",\"target\":\"lobby\",\"event\":\"news\",\
             \"data\":{{\"x\":1}},\"exclude\":[\"{id}\",\"not-an-id\"]}}"
        );
        let env = decode(&Bytes::from(text)).unwrap();
        assert_eq!(env.node.as_deref(), Some("emitter"));
        assert_eq!(data_of(&env.body), Some(&b"{\"x\":1}"[..]));
        assert_eq!(env.exclude, vec![id]);
    }

    #[test]
    fn bad_envelopes_are_refused() {
        let bad = |s: &'static str| decode(&Bytes::from_static(s.as_bytes())).unwrap_err();
        assert_eq!(bad("not json"), EnvelopeError::NotJson);
        assert_eq!(bad("{\"data\":1}"), EnvelopeError::NotJson);
        assert_eq!(bad("{\"event\":\"\",\"data\":1}"), EnvelopeError::BadEvent);
        assert_eq!(
            bad("{\"event\":\"e\",\"binary\":\"!!\"}"),
            EnvelopeError::BadBinary
        );
        assert_eq!(
            bad("{\"event\":\"e\",\"to\":\"nope\"}"),
            EnvelopeError::BadTo
        );
        // Control and reply bodies never cross nodes.
        assert!(encode("n", None, &Body::Ping).is_none());
    }
}
