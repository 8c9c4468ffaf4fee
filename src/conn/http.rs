//! Plain HTTP on the WebSocket port: `/health`, `/metrics`, and the server API for backends.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET, HEAD | `/health` (query ignored) | | stelar-compatible JSON (PROTOCOL.md §1.3) |
//! | GET, HEAD | `/metrics` | | Prometheus text |
//! | POST | `/api/publish` | `{"room":R,"event":E,"data":D}` | 202 `{"ok":true}` |
//! | POST | `/api/broadcast` | `{"event":E,"data":D}` | 202 |
//! | POST | `/api/send` | `{"to":ID,"event":E,"data":D}` | 202, or 404 if ID is gone (asked of the shard that owns ID) |
//! | POST | `/api/send` | `{"user":U,"event":E,"data":D}` | 202 `{"ok":true,"delivered":N}` (every connection of U, all shards), or 404 if U has none |
//! | POST | `/api/disconnect` | `{"client":ID}` or `{"user":U}`, optional `"code"` (default 1008), `"reason"` (≤ 123 bytes) | 200 `{"ok":true,"disconnected":N}` (WebSocket close frame, TCP ERROR frame), or 404 if none |
//! | GET, HEAD | `/api/rooms` | | `{"rooms":[{"name":R,"members":N}]}` |
//! | GET, HEAD | `/api/rooms/{room}` | | `{"room":R,"members":[ID…],"clients":[{"id":ID,"user":U or null}…]}` (only with an API key: ids are the capability for direct messages) |
//! | GET, HEAD | `/api/stats` | | the `/health` object |
//! | OPTIONS | any | | CORS preflight (204), for configured origins only |
//!
//! Secure by default: the API answers only when an API key is configured (`api_key` and / or
//! `api_keys`; the request carries `Authorization: Bearer KEY` or `X-API-Key: KEY`, else 401
//! with `WWW-Authenticate: Bearer`), or when the operator opened it without one with
//! `api_insecure` (no member listings or disconnects then); otherwise every `/api/*` request is
//! a 403 that says how to turn it on. Keys are read from `hub.config()` for each request (a
//! reload rotates them) and compared in constant time (`subtle`), every key each time. CORS
//! headers go only to origins listed in `api_cors_origins`.
//!
//! Every 4xx answer has the body `{"error":{"code":C,"message":M}}`: `C` a stable machine code
//! (`not_found`, `method_not_allowed`, `api_disabled`, `unauthorized`, `forbidden`,
//! `origin_not_allowed`, `invalid_data`, `invalid_event_name`, `invalid_room`,
//! `unknown_client`, `unknown_user`, …), `M` a sentence for people.
//! Requests are checked by the same function as the relay's (`app::relay::Request::parse`);
//! `D` is forwarded verbatim, as from a client. A response to `HEAD` has the `GET` response's
//! head and no body.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::Shared;
use crate::app::error::RequestError;
use crate::app::relay::{Kind, Request, Target};
use std::sync::Arc;

use crate::hub::id::ClientId;
use crate::hub::users::MAX_USER_ID;
use crate::hub::{DisconnectTarget, Query, Reply};
use crate::protocol::http::{
    percent_decode, Method, Request as HttpRequest, ResponseWriter, StatusCode, CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROMETHEUS,
};
use crate::protocol::stelar::{envelope, json};
use crate::protocol::ws::close::CloseCode;
use crate::stats::{health_json, prometheus_text, Process};

/// A plain HTTP request being answered.
struct Exchange<'a> {
    shared: &'a Shared,
    req: &'a HttpRequest<Bytes>,
    keep_alive: bool,
    /// The request's `Origin`, when it is one the operator allowed (CORS).
    allowed_origin: Option<&'a [u8]>,
}

impl Exchange<'_> {
    /// A response with `body` (no body bytes for `HEAD`), CORS headers for an allowed origin.
    fn respond(&self, status: StatusCode, content_type: &str, body: &[u8]) -> Bytes {
        self.respond_with(status, content_type, body, None)
    }

    /// [`Exchange::respond`] with one more header.
    fn respond_with(
        &self,
        status: StatusCode,
        content_type: &str,
        body: &[u8],
        extra: Option<(&str, &[u8])>,
    ) -> Bytes {
        let mut out = BytesMut::with_capacity(body.len() + 192);
        let mut w = ResponseWriter::for_request(&mut out, self.req, status);
        w.keep_alive(self.keep_alive);
        if let Some((name, value)) = extra {
            w.header(name, value);
        }
        if let Some(origin) = self.allowed_origin {
            w.header("Access-Control-Allow-Origin", origin)
                .header("Vary", b"Origin");
        }
        if w.body(content_type, body).is_err() {
            // Only a header value that cannot be sent gets here (the allowed origins are
            // checked at start-up): answer without the optional headers.
            out.clear();
            let mut w = ResponseWriter::for_request(&mut out, self.req, status);
            w.keep_alive(self.keep_alive);
            let _ = w.body(content_type, body);
        }
        out.freeze()
    }

    fn json(&self, status: StatusCode, body: &[u8]) -> Bytes {
        self.respond(status, CONTENT_TYPE_JSON, body)
    }

    /// `{"error":{"code":code,"message":message}}` with `status`.
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Bytes {
        self.respond_with(status, CONTENT_TYPE_JSON, &error_body(code, message), None)
    }

    fn request_error(&self, e: RequestError) -> Bytes {
        self.shared.hub.counters.error(e.label());
        self.error(e.status(), e.code(), e.message())
    }
}

/// The body of every 4xx answer: `{"error":{"code":C,"message":M}}`.
fn error_body(code: &str, message: &str) -> BytesMut {
    let mut body = BytesMut::with_capacity(code.len() + message.len() + 40);
    body.extend_from_slice(b"{\"error\":{\"code\":");
    json::write_quoted(&mut body, code);
    body.extend_from_slice(b",\"message\":");
    json::write_quoted(&mut body, message);
    body.extend_from_slice(b"}}");
    body
}

/// The answer to an API request whose body could not be read (too large, bad chunking), in
/// the API's error shape; the connection closes after it.
pub(crate) fn api_error_response(e: crate::protocol::http::HttpError) -> Bytes {
    let status = e.status();
    let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "body_too_large"
    } else {
        "bad_request"
    };
    crate::protocol::http::json_response(status, &error_body(code, &e.to_string()), false)
}

/// Who may use the API, as this request presents itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// The right key.
    Key,
    /// No key configured, and the operator opened the API without one.
    Insecure,
}

/// Answers one plain HTTP request.
pub(crate) async fn respond(
    shared: &Shared,
    req: &HttpRequest<Bytes>,
    body: Bytes,
    keep_alive: bool,
) -> Bytes {
    let config = shared.hub.config();
    let origin = req.header("origin");
    let allowed_origin = origin.filter(|o| {
        config
            .api_cors_origins
            .iter()
            .any(|allowed| allowed.as_bytes() == *o)
    });
    let x = Exchange {
        shared,
        req,
        keep_alive,
        allowed_origin,
    };
    let method = req.method();
    if method == Method::Options {
        return preflight(&x, origin.is_some());
    }
    let readable = method == Method::Get || method == Method::Head;
    match req.path() {
        "/health" if readable => {
            let s = shared.hub.clone().stats().await;
            let body = health_json(&s, &Process::read(shared.hub.now_ms()));
            return x.json(StatusCode::OK, body.as_bytes());
        }
        "/metrics" if readable => {
            let s = shared.hub.clone().stats().await;
            let text = prometheus_text(&s, &Process::read(shared.hub.now_ms()));
            return x.respond(StatusCode::OK, CONTENT_TYPE_PROMETHEUS, text.as_bytes());
        }
        _ => {}
    }
    let Some(api_path) = req.path().strip_prefix("/api/") else {
        return x.error(StatusCode::NOT_FOUND, "not_found", "not found");
    };
    let access = match access(&x) {
        Ok(a) => a,
        Err(response) => return response,
    };
    match (method, api_path) {
        (Method::Post, "publish") => api_send(&x, Kind::Publish, &body).await,
        (Method::Post, "broadcast") => api_send(&x, Kind::Broadcast, &body).await,
        (Method::Post, "send") => api_send(&x, Kind::Send, &body).await,
        (Method::Post, "disconnect") => {
            if access != Access::Key {
                shared.hub.counters.refuse("api_disconnect_without_key");
                return x.error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "disconnecting clients needs an API key (--api-key)",
                );
            }
            disconnect(&x, &body).await
        }
        (Method::Get | Method::Head, "rooms") => rooms(&x).await,
        (Method::Get | Method::Head, p) if p.starts_with("rooms/") => {
            if access != Access::Key {
                shared.hub.counters.refuse("api_members_without_key");
                return x.error(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "member listings need an API key (--api-key)",
                );
            }
            members(&x, &p["rooms/".len()..]).await
        }
        (Method::Get | Method::Head, "stats") => {
            let s = shared.hub.clone().stats().await;
            let body = health_json(&s, &Process::read(shared.hub.now_ms()));
            x.json(StatusCode::OK, body.as_bytes())
        }
        (_, "publish" | "broadcast" | "send" | "disconnect" | "rooms" | "stats") => x.error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        ),
        _ => x.error(StatusCode::NOT_FOUND, "not_found", "not found"),
    }
}

/// A CORS preflight: allowed for configured origins, refused for others.
fn preflight(x: &Exchange<'_>, has_origin: bool) -> Bytes {
    if has_origin && x.allowed_origin.is_none() {
        x.shared.hub.counters.refuse("cors_origin");
        return x.error(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            "origin not allowed",
        );
    }
    let mut out = BytesMut::new();
    let mut w = ResponseWriter::for_request(&mut out, x.req, StatusCode::NO_CONTENT);
    w.keep_alive(x.keep_alive);
    if let Some(origin) = x.allowed_origin {
        w.header("Access-Control-Allow-Origin", origin)
            .header("Vary", b"Origin")
            .header("Access-Control-Allow-Methods", b"GET, HEAD, POST, OPTIONS")
            .header(
                "Access-Control-Allow-Headers",
                b"Content-Type, Authorization, X-API-Key",
            )
            .header("Access-Control-Max-Age", b"86400");
    }
    let _ = w.empty();
    out.freeze()
}

/// Whether this request may use the API, or the response refusing it.
fn access(x: &Exchange<'_>) -> Result<Access, Bytes> {
    // At use time: a reload that changes the keys applies to the next request.
    let config = x.shared.hub.config();
    if config.all_api_keys().next().is_none() {
        if config.api_insecure {
            return Ok(Access::Insecure);
        }
        x.shared.hub.counters.refuse("api_disabled");
        return Err(x.error(
            StatusCode::FORBIDDEN,
            "api_disabled",
            "the HTTP API is off: start the server with --api-key KEY (or --api-insecure, \
             which lets anyone who can reach this port publish)",
        ));
    }
    let bearer = x
        .req
        .header("authorization")
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .map(|v| v.trim_ascii());
    let given = bearer.or_else(|| x.req.header("x-api-key").map(|v| v.trim_ascii()));
    let (challenge, message): (&[u8], &str) = match given {
        Some(given) if key_matches(given, config.all_api_keys()) => return Ok(Access::Key),
        Some(_) => (b"Bearer error=\"invalid_token\"", "wrong API key"),
        None => (
            b"Bearer",
            "missing API key: send Authorization: Bearer KEY or X-API-Key: KEY",
        ),
    };
    x.shared.hub.counters.refuse("api_unauthorized");
    Err(x.respond_with(
        StatusCode::UNAUTHORIZED,
        CONTENT_TYPE_JSON,
        &error_body("unauthorized", message),
        Some(("WWW-Authenticate", challenge)),
    ))
}

/// Whether `given` is one of `keys`, in time independent of where they differ and of which
/// key matched (every key is compared).
fn key_matches<'k>(given: &[u8], keys: impl Iterator<Item = &'k str>) -> bool {
    use subtle::ConstantTimeEq;
    let mut found = subtle::Choice::from(0);
    for key in keys {
        found |= given.ct_eq(key.as_bytes());
    }
    found.into()
}

/// `POST /api/publish | broadcast | send`.
async fn api_send(x: &Exchange<'_>, kind: Kind, body: &Bytes) -> Bytes {
    let hub = &x.shared.hub;
    let parsed = envelope::members(body)
        .map_err(|_| RequestError::NotJson)
        .and_then(|members| {
            Request::parse(
                kind,
                body,
                members.as_ref(),
                hub.config().limits.max_room_name,
            )
        });
    let request = match parsed {
        Ok(r) => r,
        Err(e) => return x.request_error(e),
    };
    if let Target::User(user) = &request.target {
        // Other nodes may hold connections of the user: they get it through Redis.
        if let Some(c) = hub.cluster() {
            c.forward(&request.msg, || {
                crate::cluster::Target::User(Arc::from(user.as_str()))
            });
        }
        // Every shard may hold connections of the user: ask them all how many got it.
        let replies = hub
            .gather(Query::DeliverUser {
                user: Arc::from(user.as_str()),
                msg: request.msg,
            })
            .await;
        let delivered: usize = replies
            .iter()
            .map(|r| match r {
                Reply::DeliveredTo(n) => *n,
                _ => 0,
            })
            .sum();
        if hub.cluster().is_some() {
            // Whether another node holds the user is not known here.
            let body = format!("{{\"ok\":true,\"delivered\":{delivered},\"forwarded\":true}}");
            return x.json(StatusCode::ACCEPTED, body.as_bytes());
        }
        if delivered == 0 {
            return x.request_error(RequestError::UnknownUser);
        }
        let body = format!("{{\"ok\":true,\"delivered\":{delivered}}}");
        return x.json(StatusCode::ACCEPTED, body.as_bytes());
    }
    if let Target::Client(to) = request.target {
        if hub.is_remote(to) && hub.cluster().is_some() {
            // Another node's client: sent through Redis; that node drops it (counted) if
            // the client is gone.
            hub.direct(to, request.msg, None);
            return x.json(StatusCode::ACCEPTED, b"{\"ok\":true,\"forwarded\":true}");
        }
        // Only the shard that owns `to` knows whether it is connected: ask it.
        let owner = to.location().shard;
        let replies = hub
            .ask(
                std::iter::once(owner),
                Query::Deliver {
                    to,
                    msg: request.msg,
                },
            )
            .await;
        if !matches!(replies.first(), Some(Reply::Delivered(true))) {
            return x.request_error(RequestError::UnknownClient);
        }
    } else {
        request.execute(hub, None);
    }
    x.json(StatusCode::ACCEPTED, b"{\"ok\":true}")
}

/// `GET /api/rooms`: every room with its member count, summed over shards (and, in a
/// cluster, over every live node; `"partial":true` when Redis could not be asked).
async fn rooms(x: &Exchange<'_>) -> Bytes {
    let (rooms, partial) = x.shared.hub.clone().room_counts().await;
    let mut body = BytesMut::from(&b"{\"rooms\":["[..]);
    let mut num = String::new();
    for (i, (name, n)) in rooms.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(b"{\"name\":");
        json::write_quoted(&mut body, name);
        num.clear();
        let _ = write!(num, ",\"members\":{n}}}");
        body.extend_from_slice(num.as_bytes());
    }
    body.extend_from_slice(b"]");
    if partial {
        body.extend_from_slice(b",\"partial\":true");
    }
    body.extend_from_slice(b"}");
    x.json(StatusCode::OK, &body)
}

/// `GET /api/rooms/{room}`: the room's member ids (and their users), on every shard and, in
/// a cluster, every live node.
async fn members(x: &Exchange<'_>, raw: &str) -> Bytes {
    let Ok(room) = percent_decode(raw.as_bytes(), false) else {
        return x.error(
            StatusCode::BAD_REQUEST,
            "invalid_room",
            "bad room name encoding",
        );
    };
    let Ok(room) = std::str::from_utf8(&room) else {
        return x.error(
            StatusCode::BAD_REQUEST,
            "invalid_room",
            "room name is not UTF-8",
        );
    };
    let found = x.shared.hub.clone().room_members(room).await;
    let mut body = BytesMut::from(&b"{\"room\":"[..]);
    json::write_quoted(&mut body, room);
    body.extend_from_slice(b",\"members\":[");
    for (i, (id, _)) in found.members.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        json::write_quoted(&mut body, id);
    }
    body.extend_from_slice(b"],\"clients\":[");
    for (i, (id, user)) in found.members.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b",");
        }
        body.extend_from_slice(b"{\"id\":");
        json::write_quoted(&mut body, id);
        body.extend_from_slice(b",\"user\":");
        match user {
            Some(u) => json::write_quoted(&mut body, u),
            None => body.extend_from_slice(b"null"),
        }
        body.extend_from_slice(b"}");
    }
    body.extend_from_slice(b"]");
    if found.partial {
        body.extend_from_slice(b",\"partial\":true");
    }
    body.extend_from_slice(b"}");
    x.json(StatusCode::OK, &body)
}

/// The body of `POST /api/disconnect`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectRequest {
    client: Option<String>,
    user: Option<String>,
    code: Option<u16>,
    reason: Option<String>,
}

/// Longest close reason: a close frame's payload is at most 125 bytes, 2 of them the code.
const MAX_CLOSE_REASON: usize = 123;

/// `POST /api/disconnect`: closes a client, or every connection of a user, wherever they are.
async fn disconnect(x: &Exchange<'_>, body: &Bytes) -> Bytes {
    let hub = &x.shared.hub;
    let invalid = |message: &str| {
        hub.counters.error("request_invalid_disconnect");
        x.error(StatusCode::BAD_REQUEST, "invalid_data", message)
    };
    let Ok(req) = serde_json::from_slice::<DisconnectRequest>(body) else {
        return invalid(
            "the request must be a JSON object with \"client\" (a client id) or \"user\" \
             (a user id), and optionally \"code\" and \"reason\"",
        );
    };
    let code = req.code.unwrap_or(1008);
    if CloseCode::new(code).is_none() {
        return invalid(
            "code must be a close code a server may send (1000-1003, 1007-1014, 3000-4999)",
        );
    }
    let reason = req.reason.unwrap_or_else(|| "Disconnected".to_owned());
    if reason.len() > MAX_CLOSE_REASON {
        return invalid("reason is at most 123 bytes");
    }
    let reason: Arc<str> = Arc::from(reason);
    let (target, shards, unknown) = match (req.client, req.user) {
        (Some(id), None) => match ClientId::parse(id.as_bytes()) {
            // Only the shard that owns the id can hold it.
            Some(id) => (
                DisconnectTarget::Client(id),
                id.location().shard..id.location().shard + 1,
                RequestError::UnknownClient,
            ),
            None => return invalid("client must be a client id"),
        },
        (None, Some(user)) if !user.is_empty() && user.len() <= MAX_USER_ID => (
            DisconnectTarget::User(Arc::from(user)),
            0..hub.shards(),
            RequestError::UnknownUser,
        ),
        (None, Some(_)) => return invalid("user must be a string of 1-256 bytes"),
        _ => return invalid("give exactly one of \"client\" and \"user\""),
    };
    let replies = hub
        .ask(
            shards,
            Query::Disconnect {
                target,
                code,
                reason,
            },
        )
        .await;
    let closed: usize = replies
        .iter()
        .map(|r| match r {
            Reply::Disconnected(n) => *n,
            _ => 0,
        })
        .sum();
    if closed == 0 {
        return x.request_error(unknown);
    }
    let body = format!("{{\"ok\":true,\"disconnected\":{closed}}}");
    x.json(StatusCode::OK, body.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http::HttpError;

    #[test]
    fn api_errors_have_one_shape() {
        assert_eq!(
            &error_body("not_found", "no \"such\" thing")[..],
            br#"{"error":{"code":"not_found","message":"no \"such\" thing"}}"#
        );
        let r = api_error_response(HttpError::BodyTooLarge);
        let text = String::from_utf8_lossy(&r);
        assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
        assert!(text.contains("application/json"), "{text}");
        assert!(
            text.contains(r#"{"error":{"code":"body_too_large","message":"#),
            "{text}"
        );
    }

    #[test]
    fn every_key_is_accepted_and_no_other() {
        let keys = ["first-key", "second-key-longer"];
        assert!(key_matches(b"first-key", keys.iter().copied()));
        assert!(key_matches(b"second-key-longer", keys.iter().copied()));
        assert!(!key_matches(b"first-ke", keys.iter().copied()));
        assert!(!key_matches(b"first-keyX", keys.iter().copied()));
        assert!(!key_matches(b"", keys.iter().copied()));
        assert!(!key_matches(b"first-key", std::iter::empty()));
    }
}
