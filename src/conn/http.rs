//! Plain HTTP on the WebSocket port: `/health`, `/metrics`, and the server API for backends.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/health` (query ignored) | | stelar-compatible JSON (PROTOCOL.md §1.3) |
//! | GET | `/metrics` | | Prometheus text |
//! | POST | `/api/publish` | `{"room":R,"event":E,"data":D}` | 202 `{"ok":true}` |
//! | POST | `/api/broadcast` | `{"event":E,"data":D}` | 202 |
//! | POST | `/api/send` | `{"to":ID,"event":E,"data":D}` | 202, or 404 if ID is gone |
//! | GET | `/api/rooms` | | `{"rooms":[{"name":R,"members":N}]}` |
//! | GET | `/api/rooms/{room}` | | `{"room":R,"members":[ID…]}` |
//! | GET | `/api/stats` | | the `/health` object |
//! | OPTIONS | any | | 204 with CORS headers |
//!
//! `D` is forwarded verbatim, as from a client. When `api_key` is configured, `/api/*` needs
//! `Authorization: Bearer KEY` or `X-API-Key: KEY` (401 otherwise). Anything else is a 404
//! with a JSON error. Bad bodies get a 400 naming the field.

use std::fmt::Write as _;

use bytes::{Bytes, BytesMut};

use super::Shared;
use crate::app::relay::{string, Fields, FieldsError};
use crate::hub::id::ClientId;
use crate::hub::outgoing::Outgoing;
use crate::hub::{Query, Reply};
use crate::protocol::http::{
    self, percent_decode, Method, Request, ResponseWriter, StatusCode, CONTENT_TYPE_JSON,
    CONTENT_TYPE_PROMETHEUS,
};
use crate::protocol::stelar::json;
use crate::protocol::stelar::names;
use crate::stats::{health_json, prometheus_text, Process};

fn json_response(status: StatusCode, body: &[u8], keep_alive: bool, req: &Request<Bytes>) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 160);
    let mut w = ResponseWriter::new(&mut out, status);
    w.keep_alive(keep_alive);
    if let Some(origin) = req.header("origin") {
        w.header("Access-Control-Allow-Origin", origin);
    }
    if w.body(CONTENT_TYPE_JSON, body).is_err() {
        // Only an Origin header that cannot be echoed gets here: answer without it.
        out.clear();
        http::write_json(&mut out, status, body, keep_alive);
    }
    out.freeze()
}

fn error(status: StatusCode, message: &str, keep_alive: bool, req: &Request<Bytes>) -> Bytes {
    let mut body = BytesMut::new();
    body.extend_from_slice(b"{\"error\":");
    json::write_quoted(&mut body, message);
    body.extend_from_slice(b"}");
    json_response(status, &body, keep_alive, req)
}

/// Answers one plain HTTP request.
pub(crate) async fn respond(
    shared: &Shared,
    req: &Request<Bytes>,
    body: Bytes,
    keep_alive: bool,
) -> Bytes {
    let hub = &shared.hub;
    let path = req.path();
    let method = req.method();
    if method == Method::Options {
        let mut out = BytesMut::new();
        let mut w = ResponseWriter::new(&mut out, StatusCode::NO_CONTENT);
        w.keep_alive(keep_alive);
        if let Some(origin) = req.header("origin") {
            w.header("Access-Control-Allow-Origin", origin);
        }
        w.header("Access-Control-Allow-Methods", b"GET, POST, OPTIONS")
            .header(
                "Access-Control-Allow-Headers",
                b"Content-Type, Authorization, X-API-Key",
            )
            .header("Access-Control-Max-Age", b"86400");
        let _ = w.empty();
        return out.freeze();
    }
    let is_get = method == Method::Get || method == Method::Head;
    match path {
        "/health" if is_get => {
            let s = gather_stats(shared).await;
            let body = health_json(&s, &Process::read(hub.now_ms()));
            return json_response(StatusCode::OK, body.as_bytes(), keep_alive, req);
        }
        "/metrics" if is_get => {
            let s = gather_stats(shared).await;
            let text = prometheus_text(&s, &Process::read(hub.now_ms()));
            let mut out = BytesMut::new();
            let mut w = ResponseWriter::new(&mut out, StatusCode::OK);
            w.keep_alive(keep_alive);
            let _ = w.body(CONTENT_TYPE_PROMETHEUS, text.as_bytes());
            return out.freeze();
        }
        _ => {}
    }
    let Some(api_path) = path.strip_prefix("/api/") else {
        return error(StatusCode::NOT_FOUND, "not found", keep_alive, req);
    };
    if let Some(key) = &hub.config().api_key {
        let bearer = req
            .header("authorization")
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .map(|v| v.trim_ascii());
        let header = req.header("x-api-key").map(|v| v.trim_ascii());
        let given = bearer.or(header);
        if !given.is_some_and(|g| constant_time_eq(g, key.as_bytes())) {
            hub.counters.refuse("api_unauthorized");
            return error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong API key",
                keep_alive,
                req,
            );
        }
    }
    let status_ok = StatusCode::ACCEPTED;
    match (method, api_path) {
        (Method::Post, "publish" | "broadcast" | "send") => {
            let fields = match Fields::parse(&body) {
                Ok(f) => f,
                Err(FieldsError::Json) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "body must be valid JSON",
                        keep_alive,
                        req,
                    )
                }
                Err(FieldsError::NotObject) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "body must be a JSON object",
                        keep_alive,
                        req,
                    )
                }
            };
            let event = match string(&body, fields.event) {
                Some(e) if names::validate_outbound_event(&e).is_ok() => e,
                _ => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "event must be 1-256 of A-Z a-z 0-9 - . / : and not reserved",
                        keep_alive,
                        req,
                    )
                }
            };
            let data = fields.data.map(|v| body.slice(v.start..v.end));
            let msg = Outgoing::event(&event, data);
            match api_path {
                "publish" => {
                    let max = hub.config().limits.max_room_name;
                    let Some(room) =
                        string(&body, fields.room).filter(|r| !r.is_empty() && r.len() <= max)
                    else {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "room must be a non-empty string",
                            keep_alive,
                            req,
                        );
                    };
                    hub.publish(&room, msg, None);
                }
                "broadcast" => {
                    hub.broadcast(msg, None);
                }
                _ => {
                    let Some(to) =
                        string(&body, fields.to).and_then(|t| ClientId::parse(t.as_bytes()))
                    else {
                        return error(
                            StatusCode::BAD_REQUEST,
                            "to must be a client id",
                            keep_alive,
                            req,
                        );
                    };
                    if to.location().shard == hub.shard() && hub.client(to).is_none() {
                        return error(
                            StatusCode::NOT_FOUND,
                            "no client with this id is connected",
                            keep_alive,
                            req,
                        );
                    }
                    hub.direct(to, msg, None);
                }
            }
            json_response(status_ok, b"{\"ok\":true}", keep_alive, req)
        }
        (Method::Get | Method::Head, "rooms") => {
            let replies = hub_gather(shared, Query::Rooms).await;
            let mut rooms: std::collections::BTreeMap<String, usize> = Default::default();
            for r in replies {
                if let Reply::Rooms(list) = r {
                    for (name, n) in list {
                        *rooms.entry(name).or_insert(0) += n;
                    }
                }
            }
            let mut body = BytesMut::from(&b"{\"rooms\":["[..]);
            for (i, (name, n)) in rooms.iter().enumerate() {
                if i > 0 {
                    body.extend_from_slice(b",");
                }
                body.extend_from_slice(b"{\"name\":");
                json::write_quoted(&mut body, name);
                let mut num = String::new();
                let _ = write!(num, ",\"members\":{n}}}");
                body.extend_from_slice(num.as_bytes());
            }
            body.extend_from_slice(b"]}");
            json_response(StatusCode::OK, &body, keep_alive, req)
        }
        (Method::Get | Method::Head, p) if p.starts_with("rooms/") => {
            let raw = &p["rooms/".len()..];
            let Ok(room) = percent_decode(raw.as_bytes(), false) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad room name encoding",
                    keep_alive,
                    req,
                );
            };
            let Ok(room) = std::str::from_utf8(&room) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "room name is not UTF-8",
                    keep_alive,
                    req,
                );
            };
            let replies = hub_gather(shared, Query::Members(room.into())).await;
            let mut body = BytesMut::from(&b"{\"room\":"[..]);
            json::write_quoted(&mut body, room);
            body.extend_from_slice(b",\"members\":[");
            let mut first = true;
            for r in replies {
                if let Reply::Members(ids) = r {
                    for id in ids {
                        if !first {
                            body.extend_from_slice(b",");
                        }
                        first = false;
                        body.extend_from_slice(b"\"");
                        body.extend_from_slice(&id.to_text());
                        body.extend_from_slice(b"\"");
                    }
                }
            }
            body.extend_from_slice(b"]}");
            json_response(StatusCode::OK, &body, keep_alive, req)
        }
        (Method::Get | Method::Head, "stats") => {
            let s = gather_stats(shared).await;
            let body = health_json(&s, &Process::read(hub.now_ms()));
            json_response(StatusCode::OK, body.as_bytes(), keep_alive, req)
        }
        (_, "publish" | "broadcast" | "send" | "rooms" | "stats") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed",
            keep_alive,
            req,
        ),
        _ => error(StatusCode::NOT_FOUND, "not found", keep_alive, req),
    }
}

async fn gather_stats(shared: &Shared) -> crate::stats::Snapshot {
    shared.hub.clone().stats().await
}

async fn hub_gather(shared: &Shared, q: Query) -> Vec<Reply> {
    shared.hub.clone().gather(q).await
}

/// Compares secrets in time independent of where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
