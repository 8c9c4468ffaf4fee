//! The handler API: what an application (or the standalone relay) does with client events.
//!
//! [`Server::builder`] collects handlers — `.on(event)`, `.on_binary(event)`,
//! `.on_ack(name)`, `.on_any`, `.middleware`, `.on_connect`, `.on_disconnect` — and hooks
//! that can veto (`.on_join`), then starts the server. Handlers receive a [`Context`]: the
//! client's id, transport, rooms, metadata, its upgrade request, and every messaging action
//! (emit, to a room, broadcast, to an id, join/leave, disconnect). A handler never sees a
//! socket or a frame.
//!
//! Handlers are `Fn + Send + Sync` (one registry serves every shard) and return futures that
//! run on the client's shard (they need not be `Send`). Dispatch order for one message is
//! PROTOCOL.md §2.3: an ACK request whose name has a handler goes to it and is answered;
//! otherwise `pong` refreshes liveness, `join-room` / `leave-room` change rooms, then the
//! event's handler, the relay's built-in behaviour (when enabled), the catch-all handler,
//! and finally a `server:error` reply for an unknown event.

mod context;
pub(crate) mod dispatch;
pub(crate) mod error;
mod payload;
pub(crate) mod relay;

use std::borrow::Cow;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ahash::HashMap;

pub use context::{Context, Emit, RoomTarget, UserTarget};
pub use payload::{Json, Payload, PayloadError};

pub use crate::auth::{AuthReject, Authenticator, Identity};
pub use crate::hub::client::{CloseCause, RequestInfo};
pub use crate::hub::id::ClientId;
pub use crate::hub::users::UserRefusal;
pub use crate::hub::JoinRefusal;
pub use crate::stats::Transport;

use crate::config::Config;

/// A boxed future that runs on one shard.
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T> + 'static>>;

/// An event handler.
pub type Handler = Arc<dyn Fn(Context, Payload) -> LocalFuture<()> + Send + Sync>;
/// An ACK handler: its result is the reply's `data` (JSON).
pub type AckHandler = Arc<dyn Fn(Context, Payload) -> LocalFuture<AckResult> + Send + Sync>;
/// A connect-time middleware: `Err` refuses the client.
pub type Middleware = Arc<dyn Fn(Context) -> LocalFuture<Result<(), Reject>> + Send + Sync>;
/// A connect / disconnect hook.
pub type Hook = Arc<dyn Fn(Context) -> LocalFuture<()> + Send + Sync>;
/// A veto hook for joins: return false to refuse.
pub type JoinHook = Arc<dyn Fn(&Context, &str) -> bool + Send + Sync>;
/// Told that a client left a room (or left it by disconnecting).
pub type LeaveHook = Arc<dyn Fn(&Context, &str) + Send + Sync>;

/// Observes every protection's rejection (see [`Builder::on_reject`]).
pub type RejectHook = Arc<dyn Fn(&Rejection<'_>) + Send + Sync>;
/// A veto on handshakes (see [`Builder::check_handshake`]).
pub type HandshakeCheck = Arc<dyn Fn(&Handshake<'_>) -> Result<(), Refusal> + Send + Sync>;

/// What an ACK handler returns: the reply's `data`, or an error that is reported to the
/// client as a `server:error` event (the request itself then times out on the client).
pub type AckResult = Result<Json, AckError>;

/// An ACK handler's failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckError {
    /// Machine-readable code.
    pub code: String,
    /// Human-readable text.
    pub message: String,
}

impl AckError {
    /// An error with a code and message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        AckError {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl From<PayloadError> for AckError {
    fn from(e: PayloadError) -> AckError {
        AckError::new("invalid_data", e.to_string())
    }
}

/// Why middleware refused a client: WebSocket clients get this close code and reason, TCP
/// clients an ERROR frame with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// WebSocket close code (1008 policy violation is the usual one; 4000-4999 are yours).
    pub code: u16,
    /// Reason (at most 123 bytes are sent).
    pub reason: String,
}

impl Reject {
    /// A refusal with close code 1008 and `reason`.
    pub fn policy(reason: impl Into<String>) -> Self {
        Reject {
            code: 1008,
            reason: reason.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Protection hooks (issue 9, item 4): observe every rejection, veto handshakes.
// ---------------------------------------------------------------------------------------

/// Which protection refused something. Each is counted as
/// `shardcast_refused_total{reason=LABEL}` ([`RejectReason::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// A WebSocket handshake's `Origin` is not in `allowed_origins` (HTTP 403).
    OriginNotAllowed,
    /// A WebSocket handshake without `Origin` while `require_origin` is set (HTTP 403).
    OriginMissing,
    /// `max_connections_per_ip` clients from this address are open (HTTP 429 / TCP ERROR).
    PerIpLimit,
    /// The address passed `handshake_rate_per_ip` (HTTP 429 / TCP ERROR).
    HandshakeRate,
    /// A [`Builder::check_handshake`] veto.
    HandshakeVetoed,
    /// A message over the client's rate limit, dropped (answered `server:error`
    /// `rate_limited`).
    RateLimited,
    /// `rate_limit.strikes` excesses in a row: the client is disconnected (close 1008).
    RateLimitStrikes,
}

impl RejectReason {
    /// The counter label.
    pub fn label(self) -> &'static str {
        match self {
            RejectReason::OriginNotAllowed => "origin_not_allowed",
            RejectReason::OriginMissing => "origin_missing",
            RejectReason::PerIpLimit => "per_ip_limit",
            RejectReason::HandshakeRate => "handshake_rate",
            RejectReason::HandshakeVetoed => "handshake_vetoed",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::RateLimitStrikes => "rate_limit_strikes",
        }
    }
}

/// A rejection, as [`Builder::on_reject`] hooks see it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Rejection<'a> {
    /// Which protection.
    pub reason: RejectReason,
    /// The client's address: the forwarded one for a WebSocket handshake through a trusted
    /// proxy, otherwise the socket peer.
    pub ip: IpAddr,
    /// The transport.
    pub transport: Transport,
    /// The client, for rejections after it connected (rate limits).
    pub client: Option<ClientId>,
    /// The event, for rate limits.
    pub event: Option<&'a str>,
    /// The `Origin` header, for WebSocket handshakes.
    pub origin: Option<&'a str>,
}

/// A connection about to be accepted, as [`Builder::check_handshake`] vetoes see it: a
/// WebSocket upgrade request before the `101`, or a TCP connection at accept.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Handshake<'a> {
    /// The client's address (forwarded through a trusted proxy, or the peer).
    pub ip: IpAddr,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The transport.
    pub transport: Transport,
    /// The `Origin` header (WebSocket).
    pub origin: Option<&'a str>,
    /// The request path (WebSocket).
    pub path: Option<&'a str>,
    pub(crate) request: Option<&'a crate::protocol::http::Request<bytes::Bytes>>,
}

impl Handshake<'_> {
    /// The first value of a request header (WebSocket; case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.request?.header(name)
    }
}

/// A handshake veto's answer: a WebSocket client gets this HTTP status and the reason as
/// the body; a TCP client an ERROR frame with the reason, then the close.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status (403, 429, ...).
    pub status: u16,
    /// Reason.
    pub reason: Cow<'static, str>,
}

impl Refusal {
    /// A refusal with `status` and `reason`.
    pub fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
    /// HTTP 403.
    pub fn forbidden(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(403, reason)
    }
    /// HTTP 429.
    pub fn too_many_requests(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::new(429, reason)
    }
}

/// The application: handlers, hooks and configuration. Built by [`Builder`], shared by all
/// shards.
pub struct App {
    pub(crate) config: Config,
    pub(crate) handlers: HashMap<String, Handler>,
    pub(crate) binary_handlers: HashMap<String, Handler>,
    pub(crate) acks: HashMap<String, AckHandler>,
    pub(crate) any: Option<Handler>,
    pub(crate) middleware: Vec<Middleware>,
    pub(crate) on_connect: Vec<Hook>,
    pub(crate) on_disconnect: Vec<Hook>,
    pub(crate) on_join: Option<JoinHook>,
    pub(crate) on_leave: Vec<LeaveHook>,
    pub(crate) relay: bool,
    /// The dialects clients may speak (`dialect/`), and the embedder's transform.
    pub(crate) dialects: Arc<crate::dialect::Dialects>,
    /// Requests (`on_request`) a dialect client may make before it authenticated.
    pub(crate) skip_auth: ahash::HashSet<String>,
    pub(crate) handle_signals: bool,
    /// Who clients are (`auth.mode` optional / required); the JWT check when none is given.
    pub(crate) authenticator: Option<Authenticator>,
    // Live reload (issue 9): where SIGHUP gets the new configuration, and who hears of it.
    pub(crate) reload_source: Option<ReloadSource>,
    pub(crate) on_reload: Vec<ReloadHook>,
    /// Protection: rejection observers, handshake vetoes, the per-IP tables.
    pub(crate) on_reject: Vec<RejectHook>,
    pub(crate) check_handshake: Vec<HandshakeCheck>,
    pub(crate) guard: Arc<crate::protect::Guard>,
}

/// Builds the configuration anew for a reload (`Builder::reload_on_hangup`).
pub(crate) type ReloadSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;
/// Hears of each committed reload (`Builder::on_reload`).
pub(crate) type ReloadHook = Arc<dyn Fn(&Config) + Send + Sync>;

impl App {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether application code can see an open client (and so ask for its upgrade request,
    /// `Context::request`): any handler, hook or middleware. The authenticator is not
    /// counted: it sees the client only while it authenticates (the standalone server always
    /// has one, its JWT check, which reads no request).
    pub(crate) fn sees_clients(&self) -> bool {
        !self.handlers.is_empty()
            || !self.binary_handlers.is_empty()
            || !self.acks.is_empty()
            || self.any.is_some()
            || !self.middleware.is_empty()
            || !self.on_connect.is_empty()
            || !self.on_disconnect.is_empty()
            || self.on_join.is_some()
            || !self.on_leave.is_empty()
    }
}

/// Entry point of the library API.
pub struct Server;

impl Server {
    /// A builder with default configuration, no handlers and the relay off.
    pub fn builder() -> Builder {
        Builder {
            last_request: None,
            app: App {
                config: Config::default(),
                handlers: HashMap::default(),
                binary_handlers: HashMap::default(),
                acks: HashMap::default(),
                any: None,
                middleware: Vec::new(),
                on_connect: Vec::new(),
                on_disconnect: Vec::new(),
                on_join: None,
                on_leave: Vec::new(),
                relay: false,
                dialects: Arc::default(),
                skip_auth: ahash::HashSet::default(),
                handle_signals: true,
                authenticator: None,
                reload_source: None,
                on_reload: Vec::new(),
                on_reject: Vec::new(),
                check_handshake: Vec::new(),
                guard: Arc::default(),
            },
        }
    }
}

/// Collects handlers and configuration, then starts the server.
pub struct Builder {
    app: App,
    /// The last `on_request` name, which `skip_auth` marks.
    last_request: Option<String>,
}

impl Builder {
    /// Replaces the configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.app.config = config;
        self
    }

    /// Edits the configuration in place.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.app.config);
        self
    }

    /// Handles the JSON event `event` (WebSocket text envelopes and TCP JSON frames).
    pub fn on<F, Fut>(mut self, event: &str, f: F) -> Self
    where
        F: Fn(Context, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.app
            .handlers
            .insert(event.to_owned(), Arc::new(move |c, p| Box::pin(f(c, p))));
        self
    }

    /// Handles binary messages named `event` (WebSocket binary envelopes, TCP BINARY frames).
    pub fn on_binary<F, Fut>(mut self, event: &str, f: F) -> Self
    where
        F: Fn(Context, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.app
            .binary_handlers
            .insert(event.to_owned(), Arc::new(move |c, p| Box::pin(f(c, p))));
        self
    }

    /// Answers ACK requests named `name` (a client's `request(event, data, name)`); the
    /// handler's result is sent back as the reply, correlated with the request.
    pub fn on_ack<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Context, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AckResult> + 'static,
    {
        self.app
            .acks
            .insert(name.to_owned(), Arc::new(move |c, p| Box::pin(f(c, p))));
        self
    }

    /// Receives every JSON event no other handler took (the event name is
    /// [`Payload::event`]).
    pub fn on_any<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.app.any = Some(Arc::new(move |c, p| Box::pin(f(c, p))));
        self
    }

    /// Adds a connect-time middleware. They run in order before the client counts as
    /// connected; the first `Err` refuses it. Middleware may set metadata on the context.
    pub fn middleware<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + 'static,
    {
        self.app.middleware.push(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Runs when a client has connected (after middleware).
    pub fn on_connect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.app.on_connect.push(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Runs when a client has gone (its rooms are already left).
    pub fn on_disconnect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        self.app
            .on_disconnect
            .push(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// A veto on joins: return false to refuse (the client gets no confirmation, as in
    /// stelar, and the refusal is counted).
    pub fn on_join<F>(mut self, f: F) -> Self
    where
        F: Fn(&Context, &str) -> bool + Send + Sync + 'static,
    {
        self.app.on_join = Some(Arc::new(f));
        self
    }

    /// Runs after a client left a room: by asking, or by disconnecting (then for each of its
    /// rooms, before the disconnect hooks).
    pub fn on_leave<F>(mut self, f: F) -> Self
    where
        F: Fn(&Context, &str) + Send + Sync + 'static,
    {
        self.app.on_leave.push(Arc::new(f));
        self
    }

    /// Serves `dialect` on the WebSocket path `path` (`stelar`, `stellarstack`, `ignis`,
    /// `stonyx`, or one given to [`Builder::register_dialect`]); as `--dialect PATH=NAME`.
    pub fn dialect(mut self, path: &str, dialect: &str) -> Self {
        self.app.config.dialects.retain(|r| r.path != path);
        self.app.config.dialects.push(crate::config::DialectRoute {
            path: path.to_owned(),
            name: dialect.to_owned(),
            default_rooms: None,
        });
        self
    }

    /// Adds a dialect of the embedder's own (or replaces a built-in of the same name), to be
    /// served on the paths [`Builder::dialect`] gives it. At most
    /// [`crate::dialect::MAX_DIALECTS`] in all; beyond that this panics at start-up setup.
    pub fn register_dialect(mut self, dialect: Arc<dyn crate::dialect::Dialect>) -> Self {
        let dialects = Arc::get_mut(&mut self.app.dialects).expect("not shared while building");
        if let Err(e) = dialects.register(dialect) {
            panic!("register_dialect: {e}");
        }
        self
    }

    /// Answers requests named `name` (a dialect's request, e.g. stonyx'
    /// `{"request":name,"data":D}`; on stelar, an ACK of that name): the handler's result is
    /// the reply (`null`: no reply). Follow with [`Builder::skip_auth`] to allow it before the
    /// client authenticated. A stonyx `auth` request handler decides who is let in: a result
    /// other than `null` / `false` authenticates the client.
    pub fn on_request<F, Fut>(mut self, name: &str, f: F) -> Self
    where
        F: Fn(Context, Payload) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = AckResult> + 'static,
    {
        self.last_request = Some(name.to_owned());
        self.on_ack(name, f)
    }

    /// Lets dialect clients make the last [`Builder::on_request`] request before they
    /// authenticated (stonyx' `static skipAuth = true`).
    pub fn skip_auth(mut self) -> Self {
        match self.last_request.clone() {
            Some(name) => {
                self.app.skip_auth.insert(name);
            }
            None => panic!("skip_auth() follows on_request(name, handler)"),
        }
        self
    }

    /// Rewrites events for each recipient on a dialect path (not stelar): `f` sees the
    /// recipient and the event and returns `Some((event, data))` to send instead, or `None`
    /// to send it unchanged (ignis' outbound transformer). Events so rewritten are encoded per
    /// recipient; the others keep the shared, encoded-once frames.
    pub fn transform<F>(mut self, f: F) -> Self
    where
        F: Fn(&crate::dialect::Transforming<'_>) -> Option<(String, Json)> + Send + Sync + 'static,
    {
        let dialects = Arc::get_mut(&mut self.app.dialects).expect("not shared while building");
        dialects.transform = Some(Arc::new(f));
        self
    }

    /// Sets how clients authenticate, replacing the built-in JWT check, and turns
    /// authentication on (`auth.mode = required`; set `optional` after this call, with
    /// `.configure`, to let clients without a token in as anonymous).
    ///
    /// `f` gets the client (its upgrade request: `ctx.header`, `ctx.query`; its peer and
    /// transport) and the token it presented — from `Authorization: Bearer`, `?token=`, or
    /// a first `{"event":"auth","data":{"token":T}}` message (TCP: a JSON frame `auth`) —
    /// or `None` in `optional` mode when it presented none. `Ok(identity)` lets it in
    /// (`auth-ok` with its id and user is sent when there is a user); `Err` closes it with
    /// 4003 and the reason (TCP: ERROR frame). Nothing else the client sends is processed
    /// before the answer, and the whole exchange must finish within `auth.timeout_ms`
    /// (else 4001). Runs before the middleware, which sees the identity's metadata.
    pub fn authenticate<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Context, Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Identity, AuthReject>> + 'static,
    {
        self.app.authenticator = Some(Arc::new(move |c, t| Box::pin(f(c, t))));
        self.app.config.auth.mode = crate::config::AuthMode::Required;
        self
    }

    /// Observes every rejection by a protection (origin, per-IP limit, handshake rate, rate
    /// limit, veto): called on the shard that rejected, after the rejection is counted.
    /// Keep it quick; under attack it runs for every rejected handshake or message.
    pub fn on_reject<F>(mut self, f: F) -> Self
    where
        F: Fn(&Rejection<'_>) + Send + Sync + 'static,
    {
        self.app.on_reject.push(Arc::new(f));
        self
    }

    /// A veto on new connections, run after the built-in checks (origin, per-IP limits)
    /// and before any client state is kept: a WebSocket upgrade request before the `101`, or
    /// a TCP connection at accept. The first `Err` refuses it with its [`Refusal`].
    pub fn check_handshake<F>(mut self, f: F) -> Self
    where
        F: Fn(&Handshake<'_>) -> Result<(), Refusal> + Send + Sync + 'static,
    {
        self.app.check_handshake.push(Arc::new(f));
        self
    }

    /// Turns the standalone relay's built-in events and ACKs on or off (README: "Relay
    /// events"). Application handlers of the same name take precedence.
    pub fn relay(mut self, on: bool) -> Self {
        self.app.relay = on;
        self
    }

    /// Whether SIGINT / SIGTERM start a graceful shutdown (default true). Turn it off when
    /// embedding in a process that handles signals itself; call `Running::shutdown` instead.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.app.handle_signals = on;
        self
    }

    /// On SIGHUP, reload the configuration that `source` builds (the binary re-reads its
    /// flags, environment and `--config` file): see `Running::reload` for what a reload
    /// does. Without it SIGHUP is logged and ignored. Needs `handle_signals(true)`.
    pub fn reload_on_hangup(
        mut self,
        source: impl Fn() -> Result<Config, String> + Send + Sync + 'static,
    ) -> Self {
        self.app.reload_source = Some(Arc::new(source));
        self
    }

    /// Calls `hook` with the new configuration after every reload that took effect (from
    /// SIGHUP or `Running::reload`), on the thread that reloaded: e.g. to change a log
    /// filter. The configuration has passed `Config::validate`.
    pub fn on_reload(mut self, hook: impl Fn(&Config) + Send + Sync + 'static) -> Self {
        self.app.on_reload.push(Arc::new(hook));
        self
    }

    /// The finished application.
    pub fn build(self) -> App {
        self.app
    }

    /// Starts the server: binds every port, starts the shards, returns a handle.
    pub fn start(self) -> Result<crate::server::Running, crate::server::StartError> {
        crate::server::start(self.app)
    }

    /// Starts the server and blocks until it has shut down (SIGINT / SIGTERM).
    pub fn run(self) -> Result<(), crate::server::StartError> {
        let running = self.start()?;
        running.join()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What decides whether an open client keeps its upgrade request (`conn/ws.rs`).
    #[test]
    fn only_application_code_sees_open_clients() {
        assert!(!Server::builder().relay(true).build().sees_clients());
        // An authenticator sees a client only while it authenticates.
        let auth_only = Server::builder()
            .authenticate(|_, _| async { Err(crate::auth::AuthReject::new("no")) });
        assert!(!auth_only.build().sees_clients());
        let hooked = Server::builder().on_connect(|_| async {});
        assert!(hooked.build().sees_clients());
    }
}
