//! @stonyx/sockets (seeds/004): `{"request":R,"data":D}` → `{"request":R,"response":X}`.
//!
//! A request goes to the application's request handler of that name
//! (`Server::builder().on_request(R, …)`), whose return value is the response (`null`: none),
//! or, in the standalone server, to the relay (`echo`, `time`, `whoami`, `stats`, `members`,
//! `join-room`, `leave-room`, `publish`, `broadcast`, `direct`). `auth` comes first: an
//! application's `auth` handler decides (a result other than `null` / `false` lets the client
//! in), else the token in its data (`token` or `authKey`) is checked by the authenticator and
//! answered `"success"`. Until then any other request closes the connection (4003), unless its
//! handler skips auth. `heartBeat` is answered `true`. Messages pushed to a client are
//! `{"request":E,"data":D}`.
//!
//! stonyx' optional per-session AES-256-GCM is not spoken: TLS (`wss://`) protects the same
//! traffic on the wire (README, "Dialects").

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{span, AuthFailure, Dialect, Encoded, Inbound, Obj, Outbound, Unauthenticated};

/// The stonyx dialect.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stonyx;

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(borrow)]
    request: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct AuthData {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "authKey")]
    auth_key: Option<String>,
}

impl Dialect for Stonyx {
    fn name(&self) -> &str {
        "stonyx"
    }

    fn parse(&self, msg: &Bytes) -> Inbound {
        let Ok(r) = serde_json::from_slice::<Request<'_>>(msg) else {
            return Inbound::Invalid(Cow::Borrowed("Invalid message format"));
        };
        let data = r.data.map(|d| msg.slice(span(msg, d.get().as_bytes())));
        match &*r.request {
            "auth" => {
                let token = data
                    .as_deref()
                    .and_then(|d| serde_json::from_slice::<AuthData>(d).ok())
                    .and_then(|a| a.token.or(a.auth_key))
                    .filter(|t| !t.is_empty() && t.len() <= crate::auth::MAX_TOKEN_LEN);
                Inbound::Authenticate { token, data }
            }
            "heartBeat" => Inbound::Answer(Bytes::from_static(
                br#"{"request":"heartBeat","response":true}"#,
            )),
            name => Inbound::Request {
                name: name.to_owned(),
                data,
            },
        }
    }

    fn encode(&self, out: &Outbound<'_>) -> Encoded {
        Encoded::Text(match *out {
            Outbound::Event { event, data, .. } => {
                let o = Obj::new().str("request", event);
                match data {
                    Some(d) => o.raw("data", d),
                    None => o,
                }
                .done()
            }
            Outbound::Binary { .. } => return Encoded::Unsupported,
            // "Return undefined/null to send no response."
            Outbound::Reply { result, .. } if result == b"null" => return Encoded::Nothing,
            Outbound::Reply { request, result } => Obj::new()
                .str("request", request)
                .raw("response", result)
                .done(),
            Outbound::Error {
                code,
                message,
                about,
                ..
            } => {
                let mut data = Obj::new().str("code", code).str("message", message);
                if let Some(r) = about {
                    data = data.str("request", r);
                }
                Obj::new()
                    .str("request", "error")
                    .raw("data", &data.done_vec())
                    .done()
            }
            Outbound::Joined { room } => Obj::new()
                .str("request", "join-room")
                .str("response", room)
                .done(),
            Outbound::Left { room } => Obj::new()
                .str("request", "leave-room")
                .str("response", room)
                .done(),
            Outbound::Authenticated { .. } => {
                Bytes::from_static(br#"{"request":"auth","response":"success"}"#)
            }
            // A falsy auth handler sends no response; the connection is closed.
            Outbound::AuthFailed { .. } => return Encoded::Nothing,
        })
    }

    fn auth_request(&self) -> Option<&str> {
        Some("auth")
    }

    fn auth_failure(&self) -> AuthFailure {
        AuthFailure::Close(4003)
    }

    fn unauthenticated(&self) -> Unauthenticated {
        Unauthenticated::Close(4003)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::tests::{parse_with, text};

    fn parse(s: &str) -> Inbound {
        parse_with(&Stonyx, s)
    }

    #[test]
    fn client_messages() {
        assert_eq!(
            parse(r#"{"request":"auth","data":{"authKey":"k1"}}"#),
            Inbound::Authenticate {
                token: Some("k1".into()),
                data: Some(Bytes::from_static(br#"{"authKey":"k1"}"#))
            }
        );
        assert!(matches!(
            parse(r#"{"request":"auth","data":{"token":"t"}}"#),
            Inbound::Authenticate { token: Some(t), .. } if t == "t"
        ));
        assert!(matches!(
            parse(r#"{"request":"auth"}"#),
            Inbound::Authenticate { token: None, .. }
        ));
        assert_eq!(
            parse(r#"{"request":"heartBeat"}"#),
            Inbound::Answer(Bytes::from_static(
                br#"{"request":"heartBeat","response":true}"#
            ))
        );
        assert_eq!(
            parse(r#"{ "data" : {"msg":"hello"}, "request":"echo"}"#),
            Inbound::Request {
                name: "echo".into(),
                data: Some(Bytes::from_static(br#"{"msg":"hello"}"#))
            }
        );
        assert!(matches!(parse(r#"{"data":1}"#), Inbound::Invalid(_)));
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            text(Stonyx.encode(&Outbound::Reply {
                request: "echo",
                result: br#"{"msg":"hello"}"#
            })),
            r#"{"request":"echo","response":{"msg":"hello"}}"#
        );
        assert_eq!(
            Stonyx.encode(&Outbound::Reply {
                request: "x",
                result: b"null"
            }),
            Encoded::Nothing
        );
        assert_eq!(
            text(Stonyx.encode(&Outbound::Event {
                event: "scanGames",
                data: Some(b"[1,2]"),
                room: Some("r")
            })),
            r#"{"request":"scanGames","data":[1,2]}"#
        );
        assert_eq!(
            text(Stonyx.encode(&Outbound::Authenticated {
                id: "i",
                user: None
            })),
            r#"{"request":"auth","response":"success"}"#
        );
        assert_eq!(
            text(Stonyx.encode(&Outbound::Joined { room: "srv_1" })),
            r#"{"request":"join-room","response":"srv_1"}"#
        );
        assert_eq!(
            text(Stonyx.encode(&Outbound::Error {
                code: "unknown_event",
                message: "m",
                about: Some("nope"),
                room: None
            })),
            r#"{"request":"error","data":{"code":"unknown_event","message":"m","request":"nope"}}"#
        );
    }
}
