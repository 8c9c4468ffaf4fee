//! ignis' `WebSocketServerHelper` (seeds/003): the `{"event":E,"data":D}` envelope.
//!
//! | client sends | engine action | answer |
//! |---|---|---|
//! | `{"event":"authenticate","data":{"token":T}}` | authenticate; then the default rooms and the client-id room | `{"event":"connected","data":{"id","userId","time"}}`, or `error` + close 4003 |
//! | `{"event":"heartbeat"}` | liveness | — |
//! | `{"event":"join","data":{"rooms":[…]}}` | join each | — |
//! | `{"event":"leave","data":{"rooms":[…]}}` | leave each | — |
//! | `{"event":E,"data":D}` | event E (handlers, relay, catch-all) | |
//!
//! Events to a client are `{"event":E,"data":D}`: byte for byte stelar's WebSocket event, so
//! the frame is shared with stelar clients. Errors are `{"event":"error","data":{"message":M,
//! "code":C}}`. Close codes: 4001 no authentication in time, 4002 heartbeat timeout, 4003
//! authentication refused.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{AuthFailure, Dialect, Encoded, Inbound, Obj, Outbound, Unauthenticated};
use crate::hub::client::CloseCause;
use crate::protocol::stelar::envelope;

/// The ignis dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ignis;

/// ignis' default rooms (`WebSocketDefaults.ROOM`, `.NOTIFICATION_ROOM`).
pub const DEFAULT_ROOMS: [&str; 2] = ["ws-default", "ws-notification"];

impl Dialect for Ignis {
    fn name(&self) -> &str {
        "ignis"
    }

    fn parse(&self, msg: &Bytes) -> Inbound {
        let Ok(e) = envelope::parse(msg) else {
            return Inbound::Invalid(Cow::Borrowed("Invalid message format"));
        };
        let data = e.data_range(msg).map(|r| msg.slice(r));
        match &*e.event {
            "authenticate" => Inbound::Authenticate {
                token: crate::auth::token_from_data(data.as_deref()).ok(),
                data,
            },
            "heartbeat" => Inbound::Alive,
            "join" | "leave" => {
                #[derive(serde::Deserialize)]
                struct Rooms {
                    rooms: Vec<String>,
                }
                let rooms = data
                    .as_deref()
                    .and_then(|d| serde_json::from_slice::<Rooms>(d).ok());
                match rooms {
                    Some(r) if e.event == "join" => Inbound::Join(r.rooms),
                    Some(r) => Inbound::Leave(r.rooms),
                    None => Inbound::Invalid(Cow::Borrowed(
                        "join and leave take {\"rooms\": [room, ...]}",
                    )),
                }
            }
            _ => Inbound::Event {
                event: e.event.into_owned(),
                data,
            },
        }
    }

    fn encode(&self, out: &Outbound<'_>) -> Encoded {
        Encoded::Text(match *out {
            Outbound::Event { .. } => return Encoded::AsStelar,
            Outbound::Binary { .. } => return Encoded::Unsupported,
            Outbound::Reply { request, result } => {
                Obj::new().str("event", request).raw("data", result).done()
            }
            Outbound::Error {
                code,
                message,
                about,
                ..
            } => {
                // ignis' own errors are `{message}`; the engine's (relay, unknown event) also
                // say which code and event.
                let data = match code {
                    "not_authenticated" => Obj::new().str("message", "Not authenticated"),
                    "invalid_message" => Obj::new().str("message", message),
                    _ => {
                        let mut data = Obj::new().str("message", message).str("code", code);
                        if let Some(e) = about {
                            data = data.str("event", e);
                        }
                        data
                    }
                };
                Obj::new()
                    .str("event", "error")
                    .raw("data", &data.done_vec())
                    .done()
            }
            Outbound::Joined { .. } | Outbound::Left { .. } => return Encoded::Nothing,
            Outbound::Authenticated { id, user } => {
                let data = Obj::new()
                    .str("id", id)
                    .str_or_null("userId", user)
                    .str("time", &iso_now())
                    .done_vec();
                Obj::new()
                    .str("event", "connected")
                    .raw("data", &data)
                    .done()
            }
            Outbound::AuthFailed { reason } => {
                let data = Obj::new().str("message", reason).done_vec();
                Obj::new().str("event", "error").raw("data", &data).done()
            }
        })
    }

    fn auth_failure(&self) -> AuthFailure {
        AuthFailure::Close(4003)
    }

    fn unauthenticated(&self) -> Unauthenticated {
        Unauthenticated::Error
    }

    fn joins_own_room(&self) -> bool {
        true
    }

    fn join_refusals_silent(&self) -> bool {
        true
    }

    fn default_rooms(&self) -> &[&str] {
        &DEFAULT_ROOMS
    }

    fn close_code(&self, cause: CloseCause) -> Option<(u16, &'static str)> {
        match cause {
            CloseCause::HeartbeatTimeout => Some((4002, "Heartbeat timeout")),
            _ => None,
        }
    }
}

/// Now as `2026-12-06T04:00:00.000Z` (JavaScript's `Date.prototype.toISOString`).
fn iso_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    super::iso_utc(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::tests::{parse_with, text};

    fn parse(s: &str) -> Inbound {
        parse_with(&Ignis, s)
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            parse(r#"{"event":"authenticate","data":{"token":"t1","publicKey":"k"}}"#),
            Inbound::Authenticate {
                token: Some("t1".into()),
                data: Some(Bytes::from_static(br#"{"token":"t1","publicKey":"k"}"#))
            }
        );
        assert_eq!(parse(r#"{"event":"heartbeat"}"#), Inbound::Alive);
        assert_eq!(
            parse(r#"{"event":"join","data":{"rooms":["a","b"]}}"#),
            Inbound::Join(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse(r#"{"event":"leave","data":{"rooms":["a"]}}"#),
            Inbound::Leave(vec!["a".into()])
        );
        assert!(matches!(
            parse(r#"{"event":"join","data":["a"]}"#),
            Inbound::Invalid(_)
        ));
        assert_eq!(
            parse(r#"{"event":"chat","data":{"t":1},"id":"m1"}"#),
            Inbound::Event {
                event: "chat".into(),
                data: Some(Bytes::from_static(br#"{"t":1}"#))
            }
        );
        assert!(matches!(parse("{"), Inbound::Invalid(_)));
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            Ignis.encode(&Outbound::Event {
                event: "e",
                data: None,
                room: Some("r")
            }),
            Encoded::AsStelar
        );
        let c = text(Ignis.encode(&Outbound::Authenticated {
            id: "id-1",
            user: Some("u1"),
        }));
        assert!(
            c.starts_with(r#"{"event":"connected","data":{"id":"id-1","userId":"u1","time":""#),
            "{c}"
        );
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["data"]["time"].as_str().unwrap().len(), 24);
        assert_eq!(
            text(Ignis.encode(&Outbound::AuthFailed {
                reason: "bad token"
            })),
            r#"{"event":"error","data":{"message":"bad token"}}"#
        );
        assert_eq!(
            text(Ignis.encode(&Outbound::Error {
                code: "not_authenticated",
                message: "x",
                about: Some("chat"),
                room: None
            })),
            r#"{"event":"error","data":{"message":"Not authenticated"}}"#
        );
        assert_eq!(
            text(Ignis.encode(&Outbound::Error {
                code: "unknown_event",
                message: "m",
                about: Some("chat"),
                room: None
            })),
            r#"{"event":"error","data":{"message":"m","code":"unknown_event","event":"chat"}}"#
        );
        assert_eq!(
            Ignis.encode(&Outbound::Joined { room: "r" }),
            Encoded::Nothing
        );
        assert_eq!(
            Ignis.close_code(CloseCause::HeartbeatTimeout),
            Some((4002, "Heartbeat timeout"))
        );
    }
}
