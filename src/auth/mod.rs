//! Who a client is, and what it may do: authentication and authorization (issue 9, item 2).
//!
//! A connection authenticates once, before it opens, when `auth.mode` is `optional` or
//! `required` (`conn/auth.rs` drives that phase; this module has no I/O). The token comes
//! from the upgrade request ([`token_from_request`]: `Authorization: Bearer T`, else
//! `?token=T`) or, for clients that cannot set headers, from a first message
//! `{"event":"auth","data":{"token":T}}` (a TCP JSON frame named `auth`: [`token_from_data`]).
//! An [`Authenticator`] turns it into an [`Identity`] (a user id, metadata and [`Grants`]) or
//! an [`AuthReject`]. The standalone server's authenticator is the JWT check in `jwt.rs`; an
//! embedding application brings its own with `Server::builder().authenticate(..)`.
//!
//! Authorization ([`may`]) is asked by `app::dispatch` (joins) and `app::relay` (publish,
//! broadcast, direct) for what a *client* asks; an application handler's own actions are its
//! business. With `auth.mode = off` everything is allowed, as before.
//!
//! Room patterns are plain strings in which `*` matches any run of characters (`:` and `*`
//! included, possibly empty); nothing else is special ([`pattern_matches`]).

pub(crate) mod jwt;

use std::borrow::Cow;
use std::rc::Rc;
use std::sync::Arc;

use crate::app::{Context, LocalFuture};
use crate::config::{AuthMode, Config, DefaultRooms};
use crate::hub::client::Client;
use crate::hub::Hub;

/// Longest token accepted, in bytes (a bound on what one verification costs).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most patterns a `rooms` / `publish` claim may list.
pub(crate) const MAX_PATTERNS: usize = 1024;

/// The async check an embedding application plugs in with
/// `Server::builder().authenticate(..)`: it gets the client (request headers, query, peer,
/// transport) and the token from whichever source it came (`None` only in `optional` mode
/// when the client presented none), and returns who the client is, or why it is refused.
pub type Authenticator =
    Arc<dyn Fn(Context, Option<String>) -> LocalFuture<Result<Identity, AuthReject>> + Send + Sync>;

/// Who a client is, as its authenticator established it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Identity {
    pub(crate) user: Option<String>,
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) grants: Grants,
}

impl Identity {
    /// An authenticated user (the JWT `sub`).
    pub fn user(id: impl Into<String>) -> Identity {
        Identity {
            user: Some(id.into()),
            ..Identity::default()
        }
    }

    /// No user: the client is let in anonymously.
    pub fn anonymous() -> Identity {
        Identity::default()
    }

    /// Adds metadata (read with `Context::meta`).
    pub fn meta(mut self, key: impl Into<String>, value: impl Into<String>) -> Identity {
        self.meta.push((key.into(), value.into()));
        self
    }

    /// Limits the rooms the client may join to these patterns (`*` = any run of characters).
    pub fn rooms<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Identity {
        self.grants.rooms = Some(patterns.into_iter().map(|p| p.into().into()).collect());
        self
    }

    /// Limits the rooms the client may publish to (same patterns).
    pub fn publish<S: Into<String>>(mut self, patterns: impl IntoIterator<Item = S>) -> Identity {
        self.grants.publish = Some(patterns.into_iter().map(|p| p.into().into()).collect());
        self
    }

    /// `false` forbids the client to `broadcast` (the `[relay]` switch still applies).
    pub fn broadcast(mut self, allowed: bool) -> Identity {
        self.grants.broadcast = Some(allowed);
        self
    }

    /// `false` forbids the client to send `direct` messages (the `[relay]` switch still
    /// applies).
    pub fn direct(mut self, allowed: bool) -> Identity {
        self.grants.direct = Some(allowed);
        self
    }

    /// The user id, if any.
    pub fn user_id(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

/// What a client's credentials say about its rights; `None` = not said (the configuration
/// decides).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Grants {
    /// Rooms it may join.
    pub(crate) rooms: Option<Vec<Box<str>>>,
    /// Rooms it may publish to.
    pub(crate) publish: Option<Vec<Box<str>>>,
    /// Whether it may broadcast.
    pub(crate) broadcast: Option<bool>,
    /// Whether it may send direct messages.
    pub(crate) direct: Option<bool>,
}

/// Why authentication failed; one variant per distinct fault, each with its counter label
/// (`shardcast_auth_total{result=…}`) and its close reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// No token before another message (required mode), or an `auth` message without one.
    Missing,
    /// Not a JWT (bad base64 / JSON / structure), or too long.
    Malformed,
    /// `exp` is past (beyond the leeway).
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    NotYetValid,
    /// The signature does not verify with the key(s) for its algorithm.
    BadSignature,
    /// No configured key for the token's algorithm / `kid`.
    UnknownKey,
    /// `sub` missing or not a non-empty string, wrong `aud` / `iss`, or a malformed rooms /
    /// publish / broadcast / direct claim.
    InvalidClaims,
    /// The application's authenticator refused.
    Rejected,
    /// The authenticator panicked.
    Failed,
    /// No token within `auth.timeout_ms`.
    Timeout,
}

impl Fault {
    /// Counter label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Fault::Missing => "missing",
            Fault::Malformed => "malformed",
            Fault::Expired => "expired",
            Fault::NotYetValid => "not_yet_valid",
            Fault::BadSignature => "bad_signature",
            Fault::UnknownKey => "unknown_key",
            Fault::InvalidClaims => "invalid_claims",
            Fault::Rejected => "rejected",
            Fault::Failed => "error",
            Fault::Timeout => "timeout",
        }
    }

    /// The close reason (WebSocket 4003 / 4001, TCP ERROR text).
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Fault::Missing => "Authentication required",
            Fault::Malformed => "Malformed token",
            Fault::Expired => "Token expired",
            Fault::NotYetValid => "Token not yet valid",
            Fault::BadSignature => "Invalid token signature",
            Fault::UnknownKey => "No key for this token",
            Fault::InvalidClaims => "Invalid token claims",
            Fault::Rejected => "Authentication rejected",
            Fault::Failed => "Authentication failed",
            Fault::Timeout => "Authentication timeout",
        }
    }
}

/// An authenticator's refusal: the client is closed with 4003 and `reason` (TCP: an ERROR
/// frame with `reason`), and counted under `shardcast_auth_total{result="rejected"}` (the
/// JWT check uses finer results: `expired`, `bad_signature`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthReject {
    pub(crate) fault: Fault,
    reason: Cow<'static, str>,
}

impl AuthReject {
    /// A refusal with a reason (at most 123 bytes reach a WebSocket client).
    pub fn new(reason: impl Into<Cow<'static, str>>) -> AuthReject {
        AuthReject {
            fault: Fault::Rejected,
            reason: reason.into(),
        }
    }

    /// The reason sent to the client.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub(crate) fn into_reason(self) -> Cow<'static, str> {
        self.reason
    }
}

impl From<Fault> for AuthReject {
    fn from(fault: Fault) -> AuthReject {
        AuthReject {
            fault,
            reason: Cow::Borrowed(fault.reason()),
        }
    }
}

/// The token presented with a WebSocket upgrade request: `Authorization: Bearer T` (scheme
/// case-insensitive), else the query parameter `token`. Other schemes are not ours (ignored).
pub(crate) fn token_from_request<B: AsRef<[u8]>>(
    req: &crate::protocol::http::Request<B>,
) -> Option<String> {
    let header = req.header("authorization").and_then(|v| {
        let v = std::str::from_utf8(v).ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned())
    });
    header
        .or_else(|| req.query_param("token").map(Cow::into_owned))
        .filter(|t| !t.is_empty())
}

/// The token in an `auth` message's `data` (`{"token":T}`).
pub(crate) fn token_from_data(data: Option<&[u8]>) -> Result<String, Fault> {
    let data = data.ok_or(Fault::Missing)?;
    let value: serde_json::Value = serde_json::from_slice(data).map_err(|_| Fault::Malformed)?;
    match value.get("token") {
        _ if !value.is_object() => Err(Fault::Malformed),
        None | Some(serde_json::Value::Null) => Err(Fault::Missing),
        Some(serde_json::Value::String(t)) if t.is_empty() => Err(Fault::Missing),
        Some(serde_json::Value::String(t)) if t.len() <= MAX_TOKEN_LEN => Ok(t.clone()),
        Some(_) => Err(Fault::Malformed),
    }
}

/// Records an accepted identity on the client: its user (through the hub, which keeps the
/// user index), metadata and grants. `Err` refuses the client (4003 with the reason).
pub(crate) fn accept(hub: &Hub, client: &Client, identity: Identity) -> Result<(), AuthReject> {
    let Identity { user, meta, grants } = identity;
    if let Some(user) = user {
        // The per-user cap (or an invalid id) refuses here: 4003 with the reason.
        hub.set_user(client, Rc::from(user))
            .map_err(|e| AuthReject::new(e.to_string()))?;
    }
    for (k, v) in meta {
        client.set_meta(&k, v);
    }
    client.set_grants(Rc::new(grants));
    Ok(())
}

/// What a client asks to do, for [`may`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// Join this room.
    Join(&'a str),
    /// Publish to this room (relay `publish`, binary `ROOM:NAME`).
    Publish(&'a str),
    /// Relay `broadcast`.
    Broadcast,
    /// Relay `direct`.
    Direct,
}

/// Whether `client` may do `action` under `config` (read at use time): with authentication
/// off, yes; else a rooms / publish claim limits joins / publishes to its patterns (without
/// one, `auth.default_rooms` decides), and a `broadcast` / `direct` claim of `false` forbids
/// those (absent or `true`: the `[relay]` switch, checked by the relay, decides).
pub(crate) fn may(config: &Config, client: &Client, action: Action<'_>) -> bool {
    // Dialect clients always authenticate (their protocol's own step), so their token's
    // claims apply whatever `auth.mode` says for stelar clients.
    if config.auth.mode == AuthMode::Off && client.dialect().is_stelar() {
        return true;
    }
    let grants = client.grants();
    let g = grants.as_deref();
    let rooms = |list: Option<&Vec<Box<str>>>, room: &str| match list {
        Some(patterns) => patterns.iter().any(|p| pattern_matches(p, room)),
        None => config.auth.default_rooms == DefaultRooms::Allow,
    };
    match action {
        Action::Join(room) => rooms(g.and_then(|g| g.rooms.as_ref()), room),
        Action::Publish(room) => rooms(g.and_then(|g| g.publish.as_ref()), room),
        Action::Broadcast => g.and_then(|g| g.broadcast).unwrap_or(true),
        Action::Direct => g.and_then(|g| g.direct).unwrap_or(true),
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (possibly empty)
/// and every other character only itself. Linear-time greedy matching with one backtrack
/// point (the last `*`), so a hostile pattern cannot make it exponential.
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            // Let the last `*` take one more byte and retry after it.
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        for (p, n, want) in [
            ("chat:*", "chat:1", true),
            ("chat:*", "chat:", true),
            ("chat:*", "chat", false),
            ("chat:*", "admin", false),
            ("*", "", true),
            ("*", "anything:at:all", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("lobby", "lobby", true),
            ("lobby", "lobby2", false),
            ("*:private", "team:private", true),
            ("*:private", "team:privatex", false),
            ("**a", "bba", true),
            ("", "", true),
            ("", "a", false),
        ] {
            assert_eq!(pattern_matches(p, n), want, "{p} vs {n}");
        }
        // Pathological input stays fast (would be exponential with naive backtracking).
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let n = "a".repeat(10_000);
        assert!(!pattern_matches(p, &n));
    }

    #[test]
    fn auth_message_data() {
        assert_eq!(token_from_data(Some(br#"{"token":"t"}"#)).unwrap(), "t");
        assert_eq!(token_from_data(None), Err(Fault::Missing));
        assert_eq!(
            token_from_data(Some(br#"{"token":""}"#)),
            Err(Fault::Missing)
        );
        assert_eq!(
            token_from_data(Some(br#"{"token":1}"#)),
            Err(Fault::Malformed)
        );
        assert_eq!(token_from_data(Some(b"\"t\"")), Err(Fault::Malformed));
    }

    #[test]
    fn request_tokens() {
        let parse = |raw: &'static [u8]| {
            crate::protocol::http::parse_request(raw, &Default::default())
                .unwrap()
                .unwrap()
        };
        let r =
            parse(b"GET /?token=q%2Ex HTTP/1.1\r\nHost: a\r\nAuthorization: bearer  h.t \r\n\r\n");
        assert_eq!(token_from_request(&r).as_deref(), Some("h.t"));
        let r = parse(
            b"GET /?a=1&token=q%2Ex HTTP/1.1\r\nHost: a\r\nAuthorization: Basic eA==\r\n\r\n",
        );
        assert_eq!(token_from_request(&r).as_deref(), Some("q.x"));
        let r = parse(b"GET /?token= HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(token_from_request(&r), None);
    }

    #[test]
    fn every_fault_has_a_label_and_a_reason() {
        for f in [
            Fault::Missing,
            Fault::Malformed,
            Fault::Expired,
            Fault::NotYetValid,
            Fault::BadSignature,
            Fault::UnknownKey,
            Fault::InvalidClaims,
            Fault::Rejected,
            Fault::Failed,
            Fault::Timeout,
        ] {
            assert!(!f.label().is_empty() && f.reason().len() <= 123);
        }
    }
}
