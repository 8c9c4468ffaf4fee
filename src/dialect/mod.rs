//! Dialects: the message formats other systems' clients speak, served on the same engine.
//!
//! A dialect sits between the WebSocket codec and `app/`: it reads one inbound text message
//! into one of the engine's actions ([`Inbound`]: authenticate, join, leave, an event for the
//! handlers and the relay, a request whose answer is a reply, a direct answer such as a pong)
//! and writes the engine's outgoing messages ([`Outbound`]: events, replies, errors, room
//! confirmations, authentication answers) in its own shape ([`Encoded`]). The engine does the
//! rest the same way for every dialect — rooms, fan-out, limits, authentication, the relay —
//! and `hub/outgoing.rs` keeps one encoded frame per (dialect, compression form) per message,
//! so a publish to a room whose members speak three dialects is encoded three times, not once
//! per member.
//!
//! Which dialect a connection speaks is chosen by its WebSocket path (`--dialect PATH=NAME`,
//! `[[dialect]]` in the configuration); every other path speaks stelar, dialect 0, which is
//! served by the session's own envelope path (the engine's native forms). The TCP port is
//! stelar. Built in: [`stellarstack`], [`ignis`], [`stonyx`]; an embedder adds its own with
//! `Server::builder().register_dialect(..)`.
//!
//! **Layering:** dialects see bytes and these types only — never a socket, a client or the
//! hub; `engine.rs` carries their actions out through `app::dispatch`.

pub(crate) mod engine;
pub mod ignis;
pub mod stellarstack;
pub mod stonyx;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;

use crate::hub::client::{CloseCause, RequestInfo};

/// The most dialects one server serves (stelar and the three built-ins included).
pub const MAX_DIALECTS: usize = 8;

/// What one inbound message asks the engine to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// Authenticate with this token (`None`: the message carried none, which fails). `data`
    /// is the whole request's data, for an application's own auth request handler
    /// ([`Dialect::auth_request`]).
    Authenticate {
        /// The token.
        token: Option<String>,
        /// The request's data (JSON text), when the dialect's auth is a request.
        data: Option<Bytes>,
    },
    /// Join these rooms (after authentication).
    Join(Vec<String>),
    /// Leave these rooms.
    Leave(Vec<String>),
    /// An event for the application's handlers, then the relay, then the catch-all.
    Event {
        /// Event name.
        event: String,
        /// `data` as JSON text, forwarded verbatim.
        data: Option<Bytes>,
    },
    /// A request whose handler's result is the reply ([`Outbound::Reply`]): an ACK.
    Request {
        /// The request's name (the ACK handler's name).
        name: String,
        /// `data` as JSON text.
        data: Option<Bytes>,
    },
    /// Send this text straight back (e.g. a `pong`); allowed before authentication.
    Answer(Bytes),
    /// Nothing to do but note that the client is alive (a heartbeat).
    Alive,
    /// The message is not valid in this dialect: answered with an error.
    Invalid(Cow<'static, str>),
}

/// What the engine sends, as a dialect sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound<'a> {
    /// An event, to a room (`room`) or not (broadcast, to a client, to a user).
    Event {
        /// Event name.
        event: &'a str,
        /// JSON text of `data`, `None` when the message has none.
        data: Option<&'a [u8]>,
        /// The room it was published to.
        room: Option<&'a str>,
    },
    /// A binary message.
    Binary {
        /// Event name.
        event: &'a str,
        /// The bytes.
        payload: &'a [u8],
        /// The room it was published to.
        room: Option<&'a str>,
    },
    /// The result of a request ([`Inbound::Request`]).
    Reply {
        /// The request's name.
        request: &'a str,
        /// JSON text of the result.
        result: &'a [u8],
    },
    /// A non-fatal error about something the client sent.
    Error {
        /// Machine-readable code (`unknown_event`, `forbidden`, `not_authenticated`, ...).
        code: &'a str,
        /// Human-readable text.
        message: &'a str,
        /// The event or request it is about.
        about: Option<&'a str>,
        /// The room it is about (a refused join).
        room: Option<&'a str>,
    },
    /// A join is confirmed: every later publish to `room` reaches the client.
    Joined {
        /// The room.
        room: &'a str,
    },
    /// The client left `room` (or was not in it).
    Left {
        /// The room.
        room: &'a str,
    },
    /// Authentication succeeded.
    Authenticated {
        /// The client's id.
        id: &'a str,
        /// Its user id, when it has one.
        user: Option<&'a str>,
    },
    /// Authentication failed.
    AuthFailed {
        /// Why.
        reason: &'a str,
    },
}

/// A dialect's form of one [`Outbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoded {
    /// This text message.
    Text(Bytes),
    /// The same bytes as stelar's WebSocket form (shared with stelar clients).
    AsStelar,
    /// Nothing: the dialect has no such message (not counted).
    Nothing,
    /// The dialect cannot carry it (dropped and counted `not_sendable_in_dialect`).
    Unsupported,
}

/// What happens to a client whose authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// It stays connected and may try again.
    Stay,
    /// It is closed with this code (after the [`Outbound::AuthFailed`] message, if any).
    Close(u16),
}

/// What happens to a message that needs authentication from a client without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unauthenticated {
    /// Answered with an [`Outbound::Error`] (`not_authenticated`); the client stays.
    Error,
    /// The client is closed with this code.
    Close(u16),
}

/// A message format. Implementations must be cheap to call: `encode` runs once per message
/// per compression form in use, `parse` once per inbound message.
pub trait Dialect: Send + Sync + 'static {
    /// The name `--dialect PATH=NAME` selects it by.
    fn name(&self) -> &str;

    /// Reads one inbound text message.
    fn parse(&self, msg: &Bytes) -> Inbound;

    /// Reads one inbound binary message (default: not part of the dialect).
    fn parse_binary(&self, _msg: &Bytes) -> Inbound {
        Inbound::Invalid(Cow::Borrowed(
            "binary messages are not part of this protocol",
        ))
    }

    /// Writes one outgoing message.
    fn encode(&self, out: &Outbound<'_>) -> Encoded;

    /// A token the upgrade request carries, which authenticates the client as it connects
    /// (default: none; the client authenticates with a message).
    fn token_from_request(&self, _req: &RequestInfo) -> Option<String> {
        None
    }

    /// The request name that is this dialect's authentication, when it is a request an
    /// application may answer itself (stonyx' `auth`): an application's request handler of
    /// that name decides instead of the authenticator.
    fn auth_request(&self) -> Option<&str> {
        None
    }

    /// What a failed authentication does to the connection.
    fn auth_failure(&self) -> AuthFailure {
        AuthFailure::Close(4003)
    }

    /// What a message needing authentication does before it.
    fn unauthenticated(&self) -> Unauthenticated {
        Unauthenticated::Error
    }

    /// Whether an authenticated client joins a room named by its own client id (ignis).
    fn joins_own_room(&self) -> bool {
        false
    }

    /// Whether a join the client's credentials do not allow is skipped silently (ignis: the
    /// room validator returns the allowed subset) rather than answered with an error.
    fn join_refusals_silent(&self) -> bool {
        false
    }

    /// Default rooms joined after authentication when its route names none.
    fn default_rooms(&self) -> &[&str] {
        &[]
    }

    /// The close code and reason for `cause`, when the dialect has its own (default: the
    /// engine's).
    fn close_code(&self, _cause: CloseCause) -> Option<(u16, &'static str)> {
        None
    }
}

/// A dialect's index in the server's [`Dialects`]; 0 is stelar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct DialectId(pub(crate) u8);

impl DialectId {
    /// stelar.
    pub(crate) const STELAR: DialectId = DialectId(0);

    pub(crate) fn is_stelar(self) -> bool {
        self.0 == 0
    }
}

/// Rewrites an event for one recipient (`Server::builder().transform`).
pub type Transform = Arc<dyn Fn(&Transforming<'_>) -> Option<(String, crate::Json)> + Send + Sync>;

/// An event about to go to one client of a non-stelar dialect, as a [`Transform`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Transforming<'a> {
    /// The recipient.
    pub client: crate::app::ClientId,
    /// Its user, when authenticated with one.
    pub user: Option<&'a str>,
    /// Its dialect's name.
    pub dialect: &'a str,
    /// The event.
    pub event: &'a str,
    /// JSON text of its data.
    pub data: Option<&'a [u8]>,
    /// The room it was published to.
    pub room: Option<&'a str>,
}

/// The dialects a server serves: stelar (0), then the built-ins, then the embedder's.
pub(crate) struct Dialects {
    list: Vec<Option<Arc<dyn Dialect>>>,
    names: Vec<String>,
    pub(crate) transform: Option<Transform>,
}

impl Default for Dialects {
    fn default() -> Self {
        let mut d = Dialects {
            list: vec![None],
            names: vec!["stelar".to_owned()],
            transform: None,
        };
        d.register(Arc::new(stellarstack::StellarStack))
            .expect("room for the built-ins");
        d.register(Arc::new(ignis::Ignis)).expect("room");
        d.register(Arc::new(stonyx::Stonyx)).expect("room");
        d
    }
}

impl std::fmt::Debug for Dialects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl Dialects {
    /// Adds (or replaces, by name) a dialect.
    pub(crate) fn register(&mut self, d: Arc<dyn Dialect>) -> Result<(), String> {
        let name = d.name().to_owned();
        if name == "stelar" {
            return Err("`stelar` is the built-in protocol and cannot be replaced".into());
        }
        if let Some(i) = self.names.iter().position(|n| *n == name) {
            self.list[i] = Some(d);
            return Ok(());
        }
        if self.list.len() >= MAX_DIALECTS {
            return Err(format!("at most {MAX_DIALECTS} dialects (stelar included)"));
        }
        self.list.push(Some(d));
        self.names.push(name);
        Ok(())
    }

    /// The id of the dialect named `name`.
    pub(crate) fn id(&self, name: &str) -> Option<DialectId> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|i| DialectId(i as u8))
    }

    /// The dialect `id` (`None` for stelar).
    pub(crate) fn get(&self, id: DialectId) -> Option<&Arc<dyn Dialect>> {
        self.list.get(id.0 as usize).and_then(Option::as_ref)
    }

    /// The name of `id`.
    pub(crate) fn name(&self, id: DialectId) -> &str {
        self.names
            .get(id.0 as usize)
            .map_or("stelar", String::as_str)
    }

    /// Every name, for error messages.
    pub(crate) fn names(&self) -> String {
        self.names.join(", ")
    }
}

/// `s` as a JSON string, quoted and escaped.
pub(crate) fn quoted(s: &str) -> Vec<u8> {
    let mut out = bytes::BytesMut::with_capacity(crate::protocol::stelar::json::quoted_len(s));
    crate::protocol::stelar::json::write_quoted(&mut out, s);
    out.to_vec()
}

/// A small JSON object writer for dialects' messages: members in order, values verbatim.
#[derive(Debug, Default)]
pub(crate) struct Obj {
    out: Vec<u8>,
}

impl Obj {
    pub(crate) fn new() -> Obj {
        let mut out = Vec::with_capacity(64);
        out.push(b'{');
        Obj { out }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(b',');
        }
        self.out.extend_from_slice(&quoted(key));
        self.out.push(b':');
    }

    /// A string member.
    pub(crate) fn str(mut self, key: &str, value: &str) -> Obj {
        self.key(key);
        self.out.extend_from_slice(&quoted(value));
        self
    }

    /// A member whose value is JSON text, written verbatim.
    pub(crate) fn raw(mut self, key: &str, json: &[u8]) -> Obj {
        self.key(key);
        self.out.extend_from_slice(json);
        self
    }

    /// A string member, or `null`.
    pub(crate) fn str_or_null(self, key: &str, value: Option<&str>) -> Obj {
        match value {
            Some(v) => self.str(key, v),
            None => self.raw(key, b"null"),
        }
    }

    pub(crate) fn done(mut self) -> Bytes {
        self.out.push(b'}');
        Bytes::from(self.out)
    }

    pub(crate) fn done_vec(mut self) -> Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

/// `ms` since the epoch as `2026-12-06T04:00:00.000Z`, UTC with milliseconds (JavaScript's
/// `Date.prototype.toISOString`, the form ignis' `connected` event and JSON APIs use).
pub fn iso_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

/// The span of `inner` (a sub-slice of `outer`) as a range of `outer`.
pub(crate) fn span(outer: &[u8], inner: &[u8]) -> std::ops::Range<usize> {
    let start = inner.as_ptr() as usize - outer.as_ptr() as usize;
    start..start + inner.len()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `d`'s reading of the text `s`.
    pub(crate) fn parse_with(d: &dyn Dialect, s: &str) -> Inbound {
        d.parse(&Bytes::from(s.to_owned()))
    }

    /// The text of an [`Encoded::Text`].
    pub(crate) fn text(e: Encoded) -> String {
        match e {
            Encoded::Text(b) => String::from_utf8(b.to_vec()).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_utc(1_772_366_400_123), "2026-03-01T12:00:00.123Z");
        assert_eq!(iso_utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn registry_names_and_ids() {
        let mut d = Dialects::default();
        assert_eq!(d.id("stelar"), Some(DialectId::STELAR));
        assert_eq!(d.id("stellarstack"), Some(DialectId(1)));
        assert_eq!(d.id("ignis"), Some(DialectId(2)));
        assert_eq!(d.id("stonyx"), Some(DialectId(3)));
        assert!(d.get(DialectId::STELAR).is_none());
        assert_eq!(d.get(DialectId(2)).unwrap().name(), "ignis");
        assert!(d.register(Arc::new(stonyx::Stonyx)).is_ok(), "replaced");
        assert_eq!(d.id("stonyx"), Some(DialectId(3)));
        struct Named(&'static str);
        impl Dialect for Named {
            fn name(&self) -> &str {
                self.0
            }
            fn parse(&self, _: &Bytes) -> Inbound {
                Inbound::Alive
            }
            fn encode(&self, _: &Outbound<'_>) -> Encoded {
                Encoded::AsStelar
            }
        }
        for n in ["a", "b", "c", "d"] {
            d.register(Arc::new(Named(n))).unwrap();
        }
        assert!(d.register(Arc::new(Named("e"))).is_err(), "eight at most");
        assert!(d.register(Arc::new(Named("stelar"))).is_err());
    }

    #[test]
    fn object_writer() {
        let o = Obj::new()
            .str("type", "a\"b")
            .raw("data", b"{\"x\":1}")
            .str_or_null("u", None)
            .done();
        assert_eq!(&o[..], br#"{"type":"a\"b","data":{"x":1},"u":null}"#);
    }
}
