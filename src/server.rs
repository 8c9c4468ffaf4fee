//! Starting and stopping a server: binds the ports, starts one shard per core, and wires each
//! shard's hub, inbox, timers and accept loops together.
//!
//! Each shard runs: an accept loop per port (each accepted socket becomes a connection task,
//! `conn/`), a task draining the mesh inbox into [`Hub::handle_mesh`], and a task turning
//! timer-wheel expirations into wake-ups of the connections concerned. On shutdown (SIGINT /
//! SIGTERM or [`Running::shutdown`]) the shards stop accepting, ask every client to close
//! (WebSocket 1001 "Shutting down", TCP DISCONNECT), and end once their connections are gone
//! or `timeouts.shutdown_timeout_ms` has passed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use shardcast_shards::{Runtime, Shard};

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::conn::tls::TlsAcceptor;
use crate::conn::{self, Shared};
use crate::hub::client::CloseCause;
use crate::hub::id::ClientId;
use crate::hub::memory::ShardLimits;
use crate::hub::{Hub, ShardMsg};
use crate::reload::Reloader;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The runtime could not start (a port in use, no io_uring, ...).
    #[error("{0}")]
    Runtime(#[from] shardcast_shards::StartError),
    /// A shard panicked.
    #[error("shard(s) {0:?} panicked")]
    Panicked(Vec<usize>),
    /// The TLS certificate or key could not be loaded (the reason names the file).
    #[error("{0}")]
    Tls(String),
}

/// A started server.
pub struct Running {
    runtime: Runtime<ShardMsg>,
    ws: SocketAddr,
    tcp: Option<SocketAddr>,
    shards: usize,
    /// Extra TLS ports (`tls.ws_port`, `tls.tcp_port`), when configured.
    tls_ws: Option<SocketAddr>,
    tls_tcp: Option<SocketAddr>,
    /// What a reload (SIGHUP) rebuilds.
    reloader: Reloader,
}

impl Running {
    /// The WebSocket/HTTP address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws
    }
    /// The stelar TCP address, if enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp
    }
    /// The extra wss port (`tls.ws_port`), if configured.
    pub fn tls_ws_addr(&self) -> Option<SocketAddr> {
        self.tls_ws
    }
    /// The extra stelar-TCP-over-TLS port (`tls.tcp_port`), if configured.
    pub fn tls_tcp_addr(&self) -> Option<SocketAddr> {
        self.tls_tcp
    }
    /// Applies what can change while running from `new` (TLS certificates, ...): every part
    /// prepares, then all commit, or the reload is refused as a whole with the reason and
    /// the old state stays. SIGHUP does this when a configuration source is set
    /// (`Builder::reload_from`).
    pub fn reload(&self, new: &Config) -> Result<(), String> {
        reload(&self.reloader, new)
    }
    /// The parts a reload rebuilds (for the reload driver).
    #[allow(dead_code)] // The reload part (issue 9, item 5) drives it.
    pub(crate) fn reloader(&self) -> &Reloader {
        &self.reloader
    }
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.runtime.shutdown_handle().trigger();
    }
    /// Waits until every shard has ended.
    pub fn join(self) -> Result<(), StartError> {
        self.runtime
            .join()
            .map(|_| ())
            .map_err(|e| StartError::Panicked(e.shards))
    }
}

/// Starts `app` (binds, spawns shards) and returns once every shard is serving.
pub fn start(mut app: App) -> Result<Running, StartError> {
    app.config.validate()?;
    let open_files = match shardcast_shards::raise_open_file_limit() {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    let cap = app.config.connection_cap(open_files);
    tracing::info!(
        max_connections = cap,
        open_file_limit = open_files,
        "clients beyond max_connections are refused; the rest of the open-file limit is kept \
         for HTTP requests and the server's own descriptors"
    );
    app.config.limits.max_connections = cap;
    let config = Arc::new(app.config.clone());
    let app = Arc::new(app);
    let mut builder = Runtime::builder()
        .messages::<ShardMsg>()
        .handle_signals(app.handle_signals)
        .drain_timeout(config.shutdown_timeout())
        .listen("ws", SocketAddr::new(config.host, config.port));
    if config.shards > 0 {
        builder = builder.shards(config.shards);
    }
    builder = match config.tcp_port {
        // The default: stelar TCP clients dial the WebSocket port + 1, so TCP is bound there,
        // also when the WebSocket port is 0 (the runtime then picks a free consecutive pair).
        None => builder.listen_next_to("tcp", "ws"),
        Some(0) => builder,
        Some(port) => builder.listen("tcp", SocketAddr::new(config.host, port)),
    };
    // TLS (issue 9, item 1): the acceptor every shard shares, reloaded on SIGHUP.
    let reloader = Reloader::default();
    let tls = if config.tls.enabled() {
        let acceptor = Arc::new(TlsAcceptor::load(&config.tls).map_err(StartError::Tls)?);
        reloader.register(acceptor.clone());
        if let Some(p) = config.tls.ws_port {
            builder = builder.listen("tls-ws", SocketAddr::new(config.host, p));
        }
        if let Some(p) = config.tls.tcp_port {
            builder = builder.listen("tls-tcp", SocketAddr::new(config.host, p));
        }
        Some(acceptor)
    } else {
        None
    };
    if let Some(source) = app.reload_source.clone() {
        let reloader = reloader.clone();
        builder = builder.on_hangup(move || match source() {
            Ok(new) => {
                if let Err(e) = reload(&reloader, &new) {
                    tracing::warn!(reason = %e, "reload refused; the old configuration stays");
                }
            }
            Err(e) => {
                tracing::warn!(reason = %e, "reload refused; the old configuration stays")
            }
        });
    }
    let clients = Arc::new(AtomicUsize::new(0));
    let budgets = memory_budgets(&config);
    if config.api_key.is_none() && config.api_insecure {
        tracing::warn!(
            port = config.port,
            "the HTTP API is on without a key (api_insecure): anyone who can reach this port \
             can publish, broadcast and message clients; set an API key before exposing it"
        );
    }
    let runtime = builder.start(move |shard: Shard<ShardMsg>| {
        let app = app.clone();
        let config = config.clone();
        let clients = clients.clone();
        let limits = shard_limits(&config, budgets, shard.count());
        let tls = tls.clone();
        async move { run_shard(shard, app, config, clients, limits, tls).await }
    })?;
    let ws = runtime
        .bound_addr("ws")
        .expect("the ws listener is always configured");
    let tcp = runtime.bound_addr("tcp");
    let shards = runtime.shards();
    Ok(Running {
        tls_ws: runtime.bound_addr("tls-ws"),
        tls_tcp: runtime.bound_addr("tls-tcp"),
        runtime,
        ws,
        tcp,
        shards,
        reloader,
    })
}

/// Whether the main ports speak TLS (read once at start: ports do not change on reload).
fn config_tls_on_main(hub: &Hub) -> bool {
    hub.config().tls.on_main_ports()
}

/// Validates `new` and applies it through `reloader`, logging the outcome.
fn reload(reloader: &Reloader, new: &Config) -> Result<(), String> {
    new.validate().map_err(|e| e.to_string())?;
    reloader.apply(new).map_err(|e| e.to_string())?;
    tracing::info!("reloaded");
    Ok(())
}

/// The process's output and input budgets in bytes (see `hub/memory.rs`), logged.
fn memory_budgets(config: &Config) -> (usize, usize) {
    // Without /proc (not Linux?), assume a small machine rather than an unbounded one.
    let available = crate::stats::available_memory().unwrap_or(4 << 30);
    let (output, input) = config.memory_budgets(available);
    tracing::info!(
        output_budget = output,
        input_budget = input,
        mesh_overflow_per_shard = config.memory.mesh_overflow,
        max_queued_bytes = config.limits.max_queued_bytes,
        slow_consumer_ms = config.timeouts.slow_consumer_ms,
        "memory budgets"
    );
    (output, input)
}

/// One shard's share of the budgets and the per-client limits.
fn shard_limits(config: &Config, (output, input): (usize, usize), shards: usize) -> ShardLimits {
    let shards = shards.max(1);
    ShardLimits {
        output: output / shards,
        input: input / shards,
        mesh_overflow: config.memory.mesh_overflow,
        max_queued: config.limits.max_queued_bytes,
        slow_consumer_ms: config.timeouts.slow_consumer_ms,
    }
}

async fn run_shard(
    shard: Shard<ShardMsg>,
    app: Arc<App>,
    config: Arc<Config>,
    clients: Arc<AtomicUsize>,
    limits: ShardLimits,
    tls: Option<Arc<TlsAcceptor>>,
) {
    let (timers, mut expirations) = shard.timers::<ClientId>();
    let hub = Rc::new(Hub::new(
        shard.id() as u16,
        shard.count() as u16,
        config,
        shard.mesh().clone(),
        timers,
        clients,
        limits,
    ));
    // TLS on the main ports unless extra TLS ports are configured.
    let main_tls = config_tls_on_main(&hub);
    let shared = Rc::new(Shared::new(hub.clone(), app).with_tls(tls));

    // The mesh inbox.
    if let Some(mut inbox) = shard.take_inbox() {
        let hub = hub.clone();
        shard
            .spawn(async move {
                let mut batch = Vec::with_capacity(256);
                loop {
                    inbox.recv_batch(&mut batch).await;
                    for msg in batch.drain(..) {
                        hub.handle_mesh(msg);
                    }
                }
            })
            .detach();
    }

    // Messages held back for full inboxes of other shards.
    shard.spawn(hub.clone().drain_overflow()).detach();

    // Timer expirations → wake the connection concerned.
    {
        let hub = hub.clone();
        shard
            .spawn(async move {
                let mut expired = Vec::new();
                loop {
                    expirations.next_batch(&mut expired).await;
                    for id in expired.drain(..) {
                        if let Some(c) = hub.client(id) {
                            c.fire_timer();
                        }
                    }
                }
            })
            .detach();
    }

    // Accept loops.
    let mut accepts = Vec::new();
    if let Some(listener) = shard.take_listener("ws") {
        let shared = shared.clone();
        accepts.push(shard.spawn(listener.accept_loop(move |stream| {
            glommio::spawn_local(conn::ws::serve(stream, shared.clone(), main_tls)).detach();
        })));
    }
    if let Some(listener) = shard.take_listener("tcp") {
        let shared = shared.clone();
        accepts.push(shard.spawn(listener.accept_loop(move |stream| {
            glommio::spawn_local(conn::tcp::serve(stream, shared.clone(), main_tls)).detach();
        })));
    }
    if let Some(listener) = shard.take_listener("tls-ws") {
        let shared = shared.clone();
        accepts.push(shard.spawn(listener.accept_loop(move |stream| {
            glommio::spawn_local(conn::ws::serve(stream, shared.clone(), true)).detach();
        })));
    }
    if let Some(listener) = shard.take_listener("tls-tcp") {
        let shared = shared.clone();
        accepts.push(shard.spawn(listener.accept_loop(move |stream| {
            glommio::spawn_local(conn::tcp::serve(stream, shared.clone(), true)).detach();
        })));
    }

    // Shutdown: stop accepting (the accept loops end by themselves), close every client,
    // wait for the connections to finish (the runtime forces us after the drain timeout).
    shard.shutdown().await;
    for a in accepts {
        let _ = a.await;
    }
    hub.close_all(CloseCause::Shutdown);
    shared.drained().await;
}

/// Logs the bound addresses in one line (tests and scripts read `ws=` and `tcp=` from it).
pub fn log_listening(running: &Running) {
    let tcp = running
        .tcp_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    // Printed on stdout as well as logged, so a parent process can read it without parsing
    // log formats. Not `println!`: a closed stdout must not panic the server.
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    // Extra TLS ports, only when configured (scripts read `tls_ws=` and `tls_tcp=`).
    let mut tls = String::new();
    if let Some(a) = running.tls_ws_addr() {
        tls.push_str(&format!(" tls_ws={a}"));
    }
    if let Some(a) = running.tls_tcp_addr() {
        tls.push_str(&format!(" tls_tcp={a}"));
    }
    let _ = writeln!(
        out,
        "shardcast listening ws={} tcp={} shards={}{tls}",
        running.ws_addr(),
        tcp,
        running.shards()
    );
    let _ = out.flush();
    tracing::info!(ws = %running.ws_addr(), tcp = %tcp, shards = running.shards(), "listening");
}
