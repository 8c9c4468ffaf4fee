//! StellarStack's WebSocket API (seeds/002): `{"type": …}` messages.
//!
//! | client sends | engine action | answer |
//! |---|---|---|
//! | `{"type":"auth","token":T}` | authenticate | `{"type":"auth_success","userId":U}` / `{"type":"auth_error","error":R}` (stays open) |
//! | `{"type":"subscribe","serverId":S}` | join room S | `{"type":"subscribed","serverId":S}` once confirmed |
//! | `{"type":"unsubscribe","serverId":S}` | leave room S | `{"type":"unsubscribed","serverId":S}` |
//! | `{"type":"ping"}` | — | `{"type":"pong"}` |
//! | `{"type":X,…}` | event X for the app (data: the whole message) | |
//!
//! A message published to room S reaches a subscriber as `{"type":E,"serverId":S,"data":D}`
//! (a backend's `server:sync` push); one sent to a client or user, or broadcast, as
//! `{"type":E,"data":D}`. Errors are `{"type":"error","error":M}`. A token with the upgrade
//! request (`Authorization: Bearer`, `?token=`, or the `better-auth.session_token` cookie)
//! authenticates the client as it connects.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::Value;

use super::{AuthFailure, Dialect, Encoded, Inbound, Obj, Outbound, Unauthenticated};
use crate::hub::client::RequestInfo;

/// The StellarStack dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct StellarStack;

/// The session cookie StellarStack's web app sets.
const SESSION_COOKIE: &str = "better-auth.session_token";

impl Dialect for StellarStack {
    fn name(&self) -> &str {
        "stellarstack"
    }

    fn parse(&self, msg: &Bytes) -> Inbound {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(msg) else {
            return invalid();
        };
        let Some(Value::String(kind)) = m.get("type") else {
            return invalid();
        };
        let server_id = || match m.get("serverId") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        };
        match kind.as_str() {
            "auth" => Inbound::Authenticate {
                token: match m.get("token") {
                    Some(Value::String(t)) if !t.is_empty() => Some(t.clone()),
                    _ => None,
                },
                data: None,
            },
            "subscribe" => match server_id() {
                Some(s) => Inbound::Join(vec![s]),
                None => Inbound::Invalid(Cow::Borrowed("serverId must be a non-empty string")),
            },
            "unsubscribe" => match server_id() {
                Some(s) => Inbound::Leave(vec![s]),
                None => Inbound::Invalid(Cow::Borrowed("serverId must be a non-empty string")),
            },
            "ping" => Inbound::Answer(Bytes::from_static(br#"{"type":"pong"}"#)),
            other => Inbound::Event {
                event: other.to_owned(),
                data: Some(msg.clone()),
            },
        }
    }

    fn encode(&self, out: &Outbound<'_>) -> Encoded {
        Encoded::Text(match *out {
            Outbound::Event { event, data, room } => {
                let mut o = Obj::new().str("type", event);
                if let Some(room) = room {
                    o = o.str("serverId", room);
                }
                if let Some(data) = data {
                    o = o.raw("data", data);
                }
                o.done()
            }
            Outbound::Binary { .. } => return Encoded::Unsupported,
            Outbound::Reply { request, result } => {
                Obj::new().str("type", request).raw("data", result).done()
            }
            Outbound::Error {
                code,
                message,
                about,
                room,
            } => {
                let message: Cow<'_, str> = match (code, about, room) {
                    ("not_authenticated", Some("join"), _) => {
                        "Authentication required to subscribe".into()
                    }
                    ("not_authenticated", Some("leave"), _) => {
                        "Authentication required to unsubscribe".into()
                    }
                    ("not_authenticated", ..) => "Authentication required".into(),
                    ("forbidden", _, Some(room)) => {
                        format!("Not allowed to subscribe to {room}").into()
                    }
                    ("unknown_event", Some(t), _) => format!("Unknown message type: {t}").into(),
                    _ => message.into(),
                };
                Obj::new()
                    .str("type", "error")
                    .str("error", &message)
                    .done()
            }
            Outbound::Joined { room } => Obj::new()
                .str("type", "subscribed")
                .str("serverId", room)
                .done(),
            Outbound::Left { room } => Obj::new()
                .str("type", "unsubscribed")
                .str("serverId", room)
                .done(),
            Outbound::Authenticated { id, user } => Obj::new()
                .str("type", "auth_success")
                .str("userId", user.unwrap_or(id))
                .done(),
            Outbound::AuthFailed { reason } => Obj::new()
                .str("type", "auth_error")
                .str("error", reason)
                .done(),
        })
    }

    fn token_from_request(&self, req: &RequestInfo) -> Option<String> {
        let header = |name: &str| {
            req.headers
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
        };
        if let Some(v) = header("authorization") {
            if let Some(t) = v.strip_prefix("Bearer ").map(str::trim) {
                if !t.is_empty() {
                    return Some(t.to_owned());
                }
            }
        }
        if let Some(q) = &req.query {
            for pair in q.split('&') {
                if let Some(v) = pair.strip_prefix("token=") {
                    let v = percent_encoding::percent_decode_str(v).decode_utf8().ok()?;
                    if !v.is_empty() {
                        return Some(v.into_owned());
                    }
                }
            }
        }
        let cookies = header("cookie")?;
        cookies.split(';').find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == SESSION_COOKIE && !value.is_empty()).then(|| {
                percent_encoding::percent_decode_str(value)
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    fn auth_failure(&self) -> AuthFailure {
        AuthFailure::Stay
    }

    fn unauthenticated(&self) -> Unauthenticated {
        Unauthenticated::Error
    }
}

fn invalid() -> Inbound {
    Inbound::Invalid(Cow::Borrowed("Invalid message format"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::tests::{parse_with, text};

    fn parse(s: &str) -> Inbound {
        parse_with(&StellarStack, s)
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            parse(r#"{"type":"auth","token":"session_token_abc123"}"#),
            Inbound::Authenticate {
                token: Some("session_token_abc123".into()),
                data: None
            }
        );
        assert_eq!(
            parse(r#"{"type":"subscribe","serverId":"srv_abc123"}"#),
            Inbound::Join(vec!["srv_abc123".into()])
        );
        assert_eq!(
            parse(r#"{"type":"unsubscribe","serverId":"srv_abc123"}"#),
            Inbound::Leave(vec!["srv_abc123".into()])
        );
        assert_eq!(
            parse(r#"{"type":"ping"}"#),
            Inbound::Answer(Bytes::from_static(br#"{"type":"pong"}"#))
        );
        assert!(matches!(
            parse(r#"{"type":"subscribe"}"#),
            Inbound::Invalid(_)
        ));
        assert!(matches!(parse("not json"), Inbound::Invalid(_)));
        assert!(matches!(parse(r#"{"type":1}"#), Inbound::Invalid(_)));
        let msg = r#"{"type":"console","line":"x"}"#;
        assert_eq!(
            parse(msg),
            Inbound::Event {
                event: "console".into(),
                data: Some(Bytes::from(msg))
            }
        );
    }

    #[test]
    fn server_messages_in_the_documents_shapes() {
        let e = |o| text(StellarStack.encode(&o));
        assert_eq!(
            e(Outbound::Event {
                event: "server:sync",
                data: Some(br#"{"id":"srv_abc123"}"#),
                room: Some("srv_abc123")
            }),
            r#"{"type":"server:sync","serverId":"srv_abc123","data":{"id":"srv_abc123"}}"#
        );
        assert_eq!(
            e(Outbound::Event {
                event: "notice",
                data: None,
                room: None
            }),
            r#"{"type":"notice"}"#
        );
        assert_eq!(
            e(Outbound::Authenticated {
                id: "c",
                user: Some("user_123")
            }),
            r#"{"type":"auth_success","userId":"user_123"}"#
        );
        assert_eq!(
            e(Outbound::AuthFailed {
                reason: "Invalid or expired session"
            }),
            r#"{"type":"auth_error","error":"Invalid or expired session"}"#
        );
        assert_eq!(
            e(Outbound::Error {
                code: "not_authenticated",
                message: "x",
                about: Some("join"),
                room: None
            }),
            r#"{"type":"error","error":"Authentication required to subscribe"}"#
        );
        assert_eq!(
            e(Outbound::Error {
                code: "forbidden",
                message: "x",
                about: Some("join"),
                room: Some("other_1")
            }),
            r#"{"type":"error","error":"Not allowed to subscribe to other_1"}"#
        );
        assert_eq!(
            e(Outbound::Error {
                code: "unknown_event",
                message: "x",
                about: Some("bogus"),
                room: None
            }),
            r#"{"type":"error","error":"Unknown message type: bogus"}"#
        );
        assert_eq!(
            e(Outbound::Joined { room: "srv_abc123" }),
            r#"{"type":"subscribed","serverId":"srv_abc123"}"#
        );
        assert_eq!(
            e(Outbound::Left { room: "srv_abc123" }),
            r#"{"type":"unsubscribed","serverId":"srv_abc123"}"#
        );
        assert_eq!(
            StellarStack.encode(&Outbound::Binary {
                event: "b",
                payload: b"x",
                room: None
            }),
            Encoded::Unsupported
        );
    }

    #[test]
    fn tokens_from_the_upgrade_request() {
        let req = |headers: &[(&str, &str)], query: Option<&str>| RequestInfo {
            path: "/api/ws".into(),
            query: query.map(str::to_owned),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
                .collect(),
        };
        let t = |r: RequestInfo| StellarStack.token_from_request(&r);
        assert_eq!(
            t(req(&[("authorization", "Bearer abc")], None)),
            Some("abc".into())
        );
        assert_eq!(t(req(&[], Some("a=1&token=x%20y"))), Some("x y".into()));
        assert_eq!(
            t(req(
                &[("cookie", "theme=dark; better-auth.session_token=s3ss")],
                None
            )),
            Some("s3ss".into())
        );
        assert_eq!(t(req(&[("cookie", "theme=dark")], None)), None);
    }
}
