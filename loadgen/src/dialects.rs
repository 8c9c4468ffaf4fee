//! The client side of the dialects other than stelar (issue 12, ../notes contract): what a
//! receiving connection writes to authenticate and join, and how it reads what the server
//! pushes, for StellarStack, ignis and stonyx clients. Sans-IO: JSON text in, JSON text
//! out; `wire.rs` frames it.
//!
//! | dialect | auth | join | join confirmed by | delivery |
//! |---|---|---|---|---|
//! | StellarStack | `{"type":"auth","token":T}` → `auth_success` / `auth_error` | `{"type":"subscribe","serverId":R}` | `{"type":"subscribed","serverId":R}` | `{"type":E,"serverId":R,"data":D}` (`{"type":E,"data":D}` for a broadcast) |
//! | ignis | `{"event":"authenticate","data":{"token":T}}` → `connected` (or `error` + close 4003) | `{"event":"join","data":{"rooms":[R,…]}}` | no message: an `echo` sent after the join comes back once the server has processed it ([`IGNIS_BARRIER`]) | `{"event":E,"data":D}` |
//! | stonyx | `{"request":"auth","data":{"token":T}}` → `{"request":"auth","response":"success"}` (or close 4003) | `{"request":"join-room","data":R}` | `{"request":"join-room","response":R}` | `{"request":E,"data":D}` |
//!
//! Measured deliveries travel under the event [`EVENT`] with a stamp
//! as their data (a JSON string). The fast path reads the name off the front
//! (`{"type":"lg"`, `{"event":"lg"`, `{"request":"lg"`) and finds the stamp after it;
//! everything else (setup answers, errors, another key order) goes through `serde_json`.

use bytes::{BufMut, BytesMut};
use serde_json::Value;

use crate::stamp::Stamp;
use crate::wire::{Inbound, EVENT};

/// The data of the `echo` an ignis receiver sends after its `join`: ignis confirms no join,
/// but the server handles one connection's messages in order, so when this echo comes back
/// the join before it has been applied on the client's shard.
pub const IGNIS_BARRIER: &str = "lg-joined";

/// A dialect a receiving connection can speak besides stelar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// StellarStack's WebSocket API (seed 002).
    StellarStack,
    /// ignis' WebSocketServerHelper (seed 003).
    Ignis,
    /// @stonyx/sockets (seed 004).
    Stonyx,
}

impl Kind {
    /// The member naming the message: `type`, `event` or `request`.
    pub fn key(self) -> &'static str {
        match self {
            Kind::StellarStack => "type",
            Kind::Ignis => "event",
            Kind::Stonyx => "request",
        }
    }

    /// The dialect's name, as the server's `--dialect PATH=NAME` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::StellarStack => "stellarstack",
            Kind::Ignis => "ignis",
            Kind::Stonyx => "stonyx",
        }
    }
}

/// `value` as a JSON string.
pub fn write_json_string(dst: &mut BytesMut, value: &str) {
    dst.put_u8(b'"');
    for b in value.bytes() {
        match b {
            b'"' => dst.extend_from_slice(b"\\\""),
            b'\\' => dst.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                dst.extend_from_slice(b"\\u00");
                dst.put_u8(HEX[usize::from(b >> 4)]);
                dst.put_u8(HEX[usize::from(b & 0xf)]);
            }
            _ => dst.put_u8(b),
        }
    }
    dst.put_u8(b'"');
}

/// `{"<key>":"<name>"` (no closing brace).
fn open(dst: &mut BytesMut, kind: Kind, name: &str) {
    dst.put_u8(b'{');
    write_json_string(dst, kind.key());
    dst.put_u8(b':');
    write_json_string(dst, name);
}

/// The authentication message carrying `token`.
pub fn auth(dst: &mut BytesMut, kind: Kind, token: &str) {
    match kind {
        Kind::StellarStack => {
            open(dst, kind, "auth");
            dst.extend_from_slice(b",\"token\":");
            write_json_string(dst, token);
            dst.put_u8(b'}');
        }
        Kind::Ignis | Kind::Stonyx => {
            open(
                dst,
                kind,
                if kind == Kind::Ignis {
                    "authenticate"
                } else {
                    "auth"
                },
            );
            dst.extend_from_slice(b",\"data\":{\"token\":");
            write_json_string(dst, token);
            dst.extend_from_slice(b"}}");
        }
    }
}

/// The messages that join (or leave) `rooms`, one `Vec` entry per message, and how many
/// confirmations to wait for.
pub fn joins(kind: Kind, rooms: &[&str], leave: bool) -> (Vec<BytesMut>, usize) {
    let mut out = Vec::new();
    match kind {
        Kind::StellarStack | Kind::Stonyx => {
            for room in rooms {
                let mut m = BytesMut::new();
                if kind == Kind::StellarStack {
                    open(
                        &mut m,
                        kind,
                        if leave { "unsubscribe" } else { "subscribe" },
                    );
                    m.extend_from_slice(b",\"serverId\":");
                } else {
                    open(&mut m, kind, if leave { "leave-room" } else { "join-room" });
                    m.extend_from_slice(b",\"data\":");
                }
                write_json_string(&mut m, room);
                m.put_u8(b'}');
                out.push(m);
            }
            let n = out.len();
            (out, n)
        }
        Kind::Ignis => {
            if rooms.is_empty() {
                return (out, 0);
            }
            let mut m = BytesMut::new();
            open(&mut m, kind, if leave { "leave" } else { "join" });
            m.extend_from_slice(b",\"data\":{\"rooms\":[");
            for (i, room) in rooms.iter().enumerate() {
                if i > 0 {
                    m.put_u8(b',');
                }
                write_json_string(&mut m, room);
            }
            m.extend_from_slice(b"]}}");
            out.push(m);
            let mut barrier = BytesMut::new();
            open(&mut barrier, kind, "echo");
            barrier.extend_from_slice(b",\"data\":");
            write_json_string(&mut barrier, IGNIS_BARRIER);
            barrier.put_u8(b'}');
            out.push(barrier);
            (out, 1)
        }
    }
}

/// A request in the dialect's own shape, for the requests it has: stonyx
/// `{"request":NAME,"data":DATA}`, ignis `{"event":NAME,"data":DATA}` (the relay's events
/// keep their stelar names in both). StellarStack clients have no way to publish: `false`.
pub fn request(dst: &mut BytesMut, kind: Kind, name: &str, data: &[u8]) -> bool {
    if kind == Kind::StellarStack {
        return false;
    }
    open(dst, kind, name);
    dst.extend_from_slice(b",\"data\":");
    dst.extend_from_slice(data);
    dst.put_u8(b'}');
    true
}

/// Classifies one text message from the server.
#[inline]
pub fn classify(kind: Kind, msg: &[u8]) -> Inbound {
    // Fast path: `{"<key>":"lg"` then the stamp.
    let key = kind.key().as_bytes();
    if let Some(rest) = msg
        .strip_prefix(b"{\"")
        .and_then(|m| m.strip_prefix(key))
        .and_then(|m| m.strip_prefix(b"\":\""))
        .and_then(|m| m.strip_prefix(EVENT.as_bytes()))
        .and_then(|m| m.strip_prefix(b"\""))
    {
        if let Some(stamp) = Stamp::find(rest) {
            return Inbound::Data { stamp, ack: false };
        }
    }
    match serde_json::from_slice::<Value>(msg) {
        Ok(v) => classify_value(kind, &v),
        Err(_) => Inbound::Unrecognized,
    }
}

fn stamp_in(v: Option<&Value>) -> Option<Stamp> {
    v.and_then(Value::as_str)
        .and_then(|s| Stamp::parse(s.as_bytes()))
}

fn classify_value(kind: Kind, v: &Value) -> Inbound {
    let Some(name) = v.get(kind.key()).and_then(Value::as_str) else {
        return Inbound::Unrecognized;
    };
    let data = v.get("data");
    let response = v.get("response");
    let delivery = || match stamp_in(data) {
        Some(stamp) => Inbound::Data { stamp, ack: false },
        None => Inbound::Unrecognized,
    };
    match (kind, name) {
        (_, "error") => Inbound::ServerError,
        (Kind::StellarStack, "auth_success") => Inbound::Authenticated,
        (Kind::StellarStack, "auth_error") => Inbound::AuthFailed,
        (Kind::StellarStack, "subscribed") => Inbound::Joined,
        (Kind::StellarStack, "unsubscribed") => Inbound::Left,
        (Kind::StellarStack, "pong") => Inbound::Ignored,
        (Kind::Ignis, "connected") => Inbound::Authenticated,
        (Kind::Ignis, "echo") if data.and_then(Value::as_str) == Some(IGNIS_BARRIER) => {
            Inbound::Joined
        }
        (Kind::Stonyx, _) if response.is_some() => match (name, response) {
            ("auth", Some(Value::Null | Value::Bool(false))) => Inbound::AuthFailed,
            ("auth", _) => Inbound::Authenticated,
            ("join-room", _) => Inbound::Joined,
            ("leave-room", _) => Inbound::Left,
            ("heartBeat", _) => Inbound::Ignored,
            _ => match stamp_in(response) {
                Some(stamp) => Inbound::Data { stamp, ack: true },
                None => Inbound::Unrecognized,
            },
        },
        _ => delivery(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Stamp = Stamp {
        publisher: 7,
        seq: 99,
        sent_ns: 123_456,
    };

    fn stamp_json() -> String {
        format!("\"{}xxxx\"", std::str::from_utf8(&S.encode()).unwrap())
    }

    fn text(b: &BytesMut) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn auth_and_join_messages_are_the_documented_shapes() {
        let mut m = BytesMut::new();
        auth(&mut m, Kind::StellarStack, "t.o.k");
        assert_eq!(text(&m), r#"{"type":"auth","token":"t.o.k"}"#);
        let mut m = BytesMut::new();
        auth(&mut m, Kind::Ignis, "t");
        assert_eq!(text(&m), r#"{"event":"authenticate","data":{"token":"t"}}"#);
        let mut m = BytesMut::new();
        auth(&mut m, Kind::Stonyx, "t");
        assert_eq!(text(&m), r#"{"request":"auth","data":{"token":"t"}}"#);

        let (msgs, n) = joins(Kind::StellarStack, &["srv_1", "a\"b"], false);
        assert_eq!(n, 2);
        assert_eq!(text(&msgs[0]), r#"{"type":"subscribe","serverId":"srv_1"}"#);
        assert_eq!(text(&msgs[1]), r#"{"type":"subscribe","serverId":"a\"b"}"#);
        let (msgs, n) = joins(Kind::StellarStack, &["s"], true);
        assert_eq!(
            (text(&msgs[0]), n),
            (r#"{"type":"unsubscribe","serverId":"s"}"#, 1)
        );
        let (msgs, n) = joins(Kind::Ignis, &["r1", "r2"], false);
        assert_eq!(n, 1, "one barrier for the whole join");
        assert_eq!(
            text(&msgs[0]),
            r#"{"event":"join","data":{"rooms":["r1","r2"]}}"#
        );
        assert_eq!(text(&msgs[1]), r#"{"event":"echo","data":"lg-joined"}"#);
        assert_eq!(joins(Kind::Ignis, &[], false).1, 0);
        let (msgs, n) = joins(Kind::Stonyx, &["r"], false);
        assert_eq!(
            (text(&msgs[0]), n),
            (r#"{"request":"join-room","data":"r"}"#, 1)
        );

        let mut m = BytesMut::new();
        assert!(request(&mut m, Kind::Stonyx, "echo", b"\"x\""));
        assert_eq!(text(&m), r#"{"request":"echo","data":"x"}"#);
        assert!(!request(
            &mut BytesMut::new(),
            Kind::StellarStack,
            "publish",
            b"{}"
        ));
    }

    #[test]
    fn deliveries_are_found_fast_and_in_any_key_order() {
        let d = stamp_json();
        let data = Inbound::Data {
            stamp: S,
            ack: false,
        };
        for (kind, msg) in [
            (
                Kind::StellarStack,
                format!(r#"{{"type":"lg","serverId":"lg-0-1","data":{d}}}"#),
            ),
            (Kind::StellarStack, format!(r#"{{"type":"lg","data":{d}}}"#)),
            (
                Kind::StellarStack,
                format!(r#"{{"serverId":"r","data":{d},"type":"lg"}}"#),
            ),
            (Kind::Ignis, format!(r#"{{"event":"lg","data":{d}}}"#)),
            (Kind::Ignis, format!(r#"{{"data":{d},"event":"other"}}"#)),
            (Kind::Stonyx, format!(r#"{{"request":"lg","data":{d}}}"#)),
        ] {
            assert_eq!(classify(kind, msg.as_bytes()), data, "{kind:?} {msg}");
        }
        assert_eq!(
            classify(
                Kind::Stonyx,
                format!(r#"{{"request":"echo","response":{d}}}"#).as_bytes()
            ),
            Inbound::Data {
                stamp: S,
                ack: true
            }
        );
    }

    #[test]
    fn setup_answers_and_errors() {
        use Inbound::*;
        for (kind, msg, want) in [
            (
                Kind::StellarStack,
                r#"{"type":"auth_success","userId":"u"}"#,
                Authenticated,
            ),
            (
                Kind::StellarStack,
                r#"{"type":"auth_error","error":"bad"}"#,
                AuthFailed,
            ),
            (
                Kind::StellarStack,
                r#"{"type":"subscribed","serverId":"s"}"#,
                Joined,
            ),
            (
                Kind::StellarStack,
                r#"{"type":"unsubscribed","serverId":"s"}"#,
                Left,
            ),
            (Kind::StellarStack, r#"{"type":"pong"}"#, Ignored),
            (
                Kind::StellarStack,
                r#"{"type":"error","error":"Authentication required to subscribe"}"#,
                ServerError,
            ),
            (
                Kind::StellarStack,
                r#"{"type":"server:sync","serverId":"s","data":{}}"#,
                Unrecognized,
            ),
            (
                Kind::Ignis,
                r#"{"event":"connected","data":{"id":"x","userId":"u","time":"t"}}"#,
                Authenticated,
            ),
            (
                Kind::Ignis,
                r#"{"event":"echo","data":"lg-joined"}"#,
                Joined,
            ),
            (
                Kind::Ignis,
                r#"{"event":"error","data":{"message":"Not authenticated"}}"#,
                ServerError,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"auth","response":"success"}"#,
                Authenticated,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"auth","response":false}"#,
                AuthFailed,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"join-room","response":"r"}"#,
                Joined,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"leave-room","response":"r"}"#,
                Left,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"heartBeat","response":true}"#,
                Ignored,
            ),
            (
                Kind::Stonyx,
                r#"{"request":"error","data":{"code":"unknown_event"}}"#,
                ServerError,
            ),
            (Kind::Stonyx, "not json", Unrecognized),
            (Kind::Ignis, r#"{"type":"lg"}"#, Unrecognized),
        ] {
            assert_eq!(classify(kind, msg.as_bytes()), want, "{kind:?} {msg}");
        }
    }
}
