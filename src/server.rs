//! Starting and stopping a server: binds the ports, starts one shard per core, and wires each
//! shard's hub, inbox, timers and accept loops together.
//!
//! Each shard runs: an accept loop per port (each accepted socket becomes a connection task,
//! `conn/`, until it is open), a task draining the mesh inbox into `Hub::handle_mesh`, a
//! task turning timer-wheel expirations into wake-ups of the handshakes concerned, and the two
//! tasks of the table of open connections (`conn/open.rs`: one serves the ready connections,
//! one fires their heartbeat and close-grace timers). On shutdown (SIGINT /
//! SIGTERM or [`Running::shutdown`]) the shards stop accepting, ask every client to close
//! (WebSocket 1001 "Shutting down", TCP DISCONNECT), and end once their connections are gone
//! or `timeouts.shutdown_timeout_ms` has passed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use shardcast_shards::{Runtime, Shard};

use crate::app::{App, ReloadHook};
use crate::config::{Config, ConfigError};
use crate::conn::tls::TlsAcceptor;
use crate::conn::{self, Shared};
use crate::hub::client::CloseCause;
use crate::hub::id::ClientId;
use crate::hub::memory::ShardLimits;
use crate::hub::{Hub, ShardMsg};
use crate::live::{self, Changes, LiveConfig, LivePart};
pub use crate::reload::ReloadError;
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
    /// The cluster bridge could not start.
    #[error("{0}")]
    Cluster(String),
}

/// A started server.
pub struct Running {
    runtime: Runtime<ShardMsg>,
    ws: SocketAddr,
    tcp: Option<SocketAddr>,
    shards: usize,
    reload: Reload,
    /// Extra TLS ports (`tls.ws_port`, `tls.tcp_port`), when configured.
    tls_ws: Option<SocketAddr>,
    tls_tcp: Option<SocketAddr>,
    /// The Redis bridge, in a cluster.
    bridge: Option<crate::cluster::bridge::Bridge>,
}

impl Running {
    /// Makes `new` the configuration in effect, without dropping a connection: `new` is
    /// checked (`Config::validate`), every reloadable part prepares its new state (the live
    /// configuration, TLS certificates, JWT keys, ...), and only if all of them could is it
    /// committed everywhere; otherwise nothing changes and the error says which part refused
    /// and why. Settings only a restart can change (`live::RESTART_ONLY`: addresses, ports,
    /// shards, memory budgets, ...) keep their running values and are listed in
    /// `Changes::needs_restart`. Limits apply to the next check (a lowered
    /// `max_connections` refuses new clients and keeps the ones connected). The log shows the
    /// diff, secrets redacted. SIGHUP does the same with `Builder::reload_on_hangup`'s source.
    pub fn reload(&self, new: Config) -> Result<Changes, ReloadError> {
        self.reload.reload(Ok(new))
    }
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
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.shards
    }
    /// Begins a graceful shutdown.
    pub fn shutdown(&self) {
        self.runtime.shutdown_handle().trigger();
    }
    /// Waits until every shard has ended (and then stops the cluster bridge, which takes
    /// this node's presence out of Redis).
    pub fn join(self) -> Result<(), StartError> {
        let result = self
            .runtime
            .join()
            .map(|_| ())
            .map_err(|e| StartError::Panicked(e.shards));
        if let Some(bridge) = self.bridge {
            bridge.stop();
        }
        result
    }
}

/// Starts `app` (binds, spawns shards) and returns once every shard is serving.
pub fn start(mut app: App) -> Result<Running, StartError> {
    app.config.validate()?;
    for route in &app.config.dialects {
        if app.dialects.id(&route.name).is_none() {
            return Err(ConfigError::Invalid {
                setting: "dialect.name",
                problem: format!(
                    "no dialect `{}` for `{}` (known: {})",
                    route.name,
                    route.path,
                    app.dialects.names()
                ),
            }
            .into());
        }
    }
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
    // Parts rebuilt on reload register here, in the order they are prepared and committed.
    let live = Arc::new(LiveConfig::new(app.config.clone(), open_files));
    let reloader = Reloader::default();
    // First, so that every other part commits with the shards already reading the new config.
    reloader.register(Arc::new(LivePart(live.clone())));
    if app.authenticator.is_none() {
        // The standalone server's authenticator: JWT, keys reloaded on SIGHUP.
        let keys = crate::auth::jwt::JwtKeys::load(&app.config)
            .map_err(|(setting, problem)| ConfigError::Invalid { setting, problem })?;
        let keys = Arc::new(keys);
        reloader.register(keys.clone());
        app.authenticator = Some(crate::auth::jwt::authenticator(keys));
    }
    let config = Arc::new(app.config.clone());
    let reload = Reload {
        live: live.clone(),
        reloader,
        hooks: app.on_reload.clone(),
        serial: Arc::new(std::sync::Mutex::new(())),
    };
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
    let tls = if config.tls.enabled() {
        let acceptor = Arc::new(TlsAcceptor::load(&config.tls).map_err(StartError::Tls)?);
        reload.reloader.register(acceptor.clone());
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
        let reload = reload.clone();
        // Runs on the signal thread: reading files there blocks no shard.
        builder = builder.on_hangup(move || {
            let _ = reload.reload(source());
        });
    }
    let clients = Arc::new(AtomicUsize::new(0));
    let budgets = memory_budgets(&config);
    // The cluster (issue 11): the shards' handle now, the bridge thread once the mesh exists.
    let (node_tag, cluster) = match &config.cluster.redis {
        Some(url) => {
            let node_id = config
                .cluster
                .node_id
                .clone()
                .unwrap_or_else(crate::cluster::random_node_id);
            let (cluster, receivers) =
                crate::cluster::Cluster::new(&node_id, config.cluster.queue_bytes);
            tracing::info!(
                "cluster node={node_id} redis={} tag={:04x}",
                crate::config::redact_url(url),
                cluster.tag()
            );
            (cluster.tag(), Some((cluster, receivers)))
        }
        // A random tag: ids of an earlier run never resolve here.
        None => (
            u16::from_be_bytes(
                crate::hub::id::random_bytes()[..2]
                    .try_into()
                    .unwrap_or([0; 2]),
            ),
            None,
        ),
    };
    let shard_cluster = cluster.as_ref().map(|(c, _)| c.clone());
    let cluster_config = config.cluster.clone();
    // Connections per user, process-wide (`hub/users.rs`): shared by every shard's hub.
    let user_counts = Arc::new(crate::hub::users::UserCounts::default());
    if config.all_api_keys().next().is_none() && config.api_insecure {
        tracing::warn!(
            port = config.port,
            "the HTTP API is on without a key (api_insecure): anyone who can reach this port \
             can publish, broadcast and message clients; set an API key before exposing it"
        );
    }
    let runtime = builder.start(move |shard: Shard<ShardMsg>| {
        let app = app.clone();
        let live = live.clone();
        let clients = clients.clone();
        let limits = shard_limits(&config, budgets, shard.count());
        let user_counts = user_counts.clone();
        let tls = tls.clone();
        let node = (node_tag, shard_cluster.clone());
        async move { run_shard(shard, app, live, clients, limits, user_counts, tls, node).await }
    })?;
    let bridge = match cluster {
        Some((cluster, receivers)) => Some(
            crate::cluster::bridge::Bridge::start(
                cluster,
                receivers,
                &cluster_config,
                runtime.mesh().clone(),
                runtime.shards() as u16,
            )
            .map_err(|e| {
                StartError::Cluster(format!("cannot start the Redis bridge thread: {e}"))
            })?,
        ),
        None => None,
    };
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
        reload,
        bridge,
    })
}

/// `text` with its lines trimmed and joined by ` | `.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "|")
        .collect();
    lines.join(" | ")
}

/// What a reload needs; shared by `Running::reload` and the SIGHUP hook.
#[derive(Clone)]
struct Reload {
    live: Arc<LiveConfig>,
    reloader: Reloader,
    hooks: Vec<ReloadHook>,
    /// One reload at a time (SIGHUP and an embedder's call may race).
    serial: Arc<std::sync::Mutex<()>>,
}

impl Reload {
    /// Reloads `new` (or counts and logs why it could not be built), all or nothing.
    fn reload(&self, new: Result<Config, String>) -> Result<Changes, ReloadError> {
        let _one = self.serial.lock().unwrap_or_else(|p| p.into_inner());
        let result = new
            .map_err(|reason| ReloadError {
                part: "config",
                reason,
            })
            .and_then(|new| self.apply(new));
        self.live.count(result.is_ok());
        match &result {
            Ok(changes) => {
                if changes.applied.is_empty() {
                    tracing::info!("configuration reloaded: no setting that applies live changed");
                } else {
                    tracing::info!(
                        changed = %live::join_changes(&changes.applied),
                        "configuration reloaded"
                    );
                }
                if !changes.needs_restart.is_empty() {
                    tracing::warn!(
                        settings = %live::join_changes(&changes.needs_restart),
                        "configuration reload: these settings need a restart to change; \
                         their old values stay in effect"
                    );
                }
            }
            Err(e) => tracing::warn!(
                part = e.part,
                // One log line: a TOML error's excerpt spans several.
                reason = %one_line(&e.reason),
                "configuration reload refused; the old configuration stays in effect"
            ),
        }
        result
    }

    fn apply(&self, new: Config) -> Result<Changes, ReloadError> {
        let refuse = |reason: String| ReloadError {
            part: "config",
            reason,
        };
        new.validate().map_err(|e| refuse(e.to_string()))?;
        let new = self.live.resolve(new);
        let (_, old) = self.live.load();
        let (effective, changes) = live::effective(&old, &new).map_err(refuse)?;
        self.reloader.apply(&effective)?;
        for hook in &self.hooks {
            hook(&effective);
        }
        Ok(changes)
    }
}

/// Whether the main ports speak TLS (read once at start: ports do not change on reload).
fn config_tls_on_main(hub: &Hub) -> bool {
    hub.config().tls.on_main_ports()
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

// One argument per piece of process-wide state a shard shares.
#[allow(clippy::too_many_arguments)]
async fn run_shard(
    shard: Shard<ShardMsg>,
    app: Arc<App>,
    live: Arc<LiveConfig>,
    clients: Arc<AtomicUsize>,
    limits: ShardLimits,
    user_counts: Arc<crate::hub::users::UserCounts>,
    tls: Option<Arc<TlsAcceptor>>,
    (node_tag, cluster): (u16, Option<Arc<crate::cluster::Cluster>>),
) {
    let (timers, mut expirations) = shard.timers::<ClientId>();
    let hub = Rc::new(
        Hub::new(
            shard.id() as u16,
            shard.count() as u16,
            live,
            shard.mesh().clone(),
            timers,
            clients,
            limits,
        )
        .with_user_counts(user_counts)
        .with_cluster(node_tag, cluster)
        .with_dialects(app.dialects.clone()),
    );
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

    // The open connections (`conn/open.rs`). The guard drops what is left of them if this
    // future is dropped before the drain below completes.
    shard.spawn(conn::open::run(shared.clone())).detach();
    shard
        .spawn(conn::open::sweep(shared.clone(), hub.timers().tick()))
        .detach();
    let _opens = ClearOpens(shared.clone());

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

/// Drops a shard's remaining open connections when its serving future goes (they hold the
/// shard's state, which holds them).
struct ClearOpens(Rc<Shared>);

impl Drop for ClearOpens {
    fn drop(&mut self) {
        self.0.opens.clear(&self.0.app.guard);
    }
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
