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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ahash::HashMap;

pub use context::{Context, Emit, RoomTarget};
pub use payload::{Json, Payload, PayloadError};

pub use crate::hub::client::{CloseCause, RequestInfo};
pub use crate::hub::id::ClientId;
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
    pub(crate) relay: bool,
    pub(crate) handle_signals: bool,
    /// Where a reload (SIGHUP) gets the new configuration from.
    pub(crate) reload_source: Option<ReloadSource>,
}

/// Produces the configuration a reload applies (re-reads the file, flags, environment).
pub(crate) type ReloadSource = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

impl App {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// Entry point of the library API.
pub struct Server;

impl Server {
    /// A builder with default configuration, no handlers and the relay off.
    pub fn builder() -> Builder {
        Builder {
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
                relay: false,
                handle_signals: true,
                reload_source: None,
            },
        }
    }
}

/// Collects handlers and configuration, then starts the server.
pub struct Builder {
    app: App,
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

    /// On SIGHUP (with signal handling on), calls `source` for the new configuration and
    /// applies what can change while running (TLS certificates, ...); a failure is logged and
    /// the old configuration stays.
    pub fn reload_from(
        mut self,
        source: impl Fn() -> Result<Config, String> + Send + Sync + 'static,
    ) -> Self {
        self.app.reload_source = Some(Arc::new(source));
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
