//! The `shardcast` binary: the standalone relay server.
//!
//! Settings come, lowest precedence first, from the defaults, the `--config` TOML file,
//! `SHARDCAST_*` environment variables and command-line flags (see `--help`). Every setting of
//! [`Config`] has a flag and an environment variable here; the defaults live in `config.rs`
//! alone (no clap defaults, which would hide the file's values), and each flag's help names
//! its default once (checked by the tests below).

use std::ffi::{OsStr, OsString};
use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use shardcast::config::{AuthMode, Config, DefaultRooms, Rate};
use shardcast::{server, Server};

// The allocator is chosen here, in the binary, and never in the library: `#[global_allocator]`
// in `shardcast` (the lib) would force it on every embedder, whose own binary decides. Cargo
// features pick it at build time: `mimalloc`, else `jemalloc` (the default), else the system
// allocator (glibc malloc, which kept a burst's freed memory in its per-thread arenas instead of
// returning it). PERF.md, "Memory after a burst: the allocator", has the measurements.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (its `malloc_conf`, read once at start-up; the `_RJEM_MALLOC_CONF`
/// environment variable overrides them). Background threads purge freed pages on a timer, so
/// memory goes back to the system after a burst even when the shards fall idle and call into
/// the allocator no more. Freed ("dirty") pages are returned over about a second, not
/// jemalloc's default ten, and with `MADV_DONTNEED` at once (`muzzy_decay_ms:0`): pages only
/// marked `MADV_FREE` would still count in RSS until the kernel needed them.
// A thin pointer to a NUL-terminated string: the `const char *` jemalloc reads.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_CONF: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// What `check-config` prints instead of the API key.
const REDACTED: &str = "<redacted>";

/// shardcast: a thread-per-core real-time messaging server speaking the stelar protocol over
/// WebSocket (port) and stelar binary TCP (port + 1).
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about = None,
    args_conflicts_with_subcommands = true,
    after_help = "Settings apply lowest first: defaults, the --config file (TOML, the keys \
        `shardcast check-config` prints), SHARDCAST_* environment variables, flags.\n\
        On/off settings take `true` or `false`: `--relay-direct=false` or \
        `SHARDCAST_RELAY_DIRECT=false`; the flag alone (`--relay-direct`) means true."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (the default when no command is given).
    Serve(ServeArgs),
    /// Print the effective configuration as TOML (the --config format) and exit; an API key
    /// is printed as "<redacted>".
    CheckConfig(ServeArgs),
}

// On/off settings all take the same form: `--name[=<BOOL>]`, where the flag alone means true,
// so that a flag or variable can turn a setting either way whatever the file says.
#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// TOML configuration file; environment variables and flags override it.
    #[arg(long, short = 'c', env = "SHARDCAST_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long, env = "SHARDCAST_HOST", value_name = "ADDR")]
    host: Option<IpAddr>,
    /// WebSocket + HTTP port; 0 picks a free one [default: 3000].
    #[arg(long, short = 'p', env = "SHARDCAST_PORT", value_name = "PORT")]
    port: Option<u16>,
    /// stelar TCP port; 0 disables TCP [default: --port + 1, which stelar TCP clients dial].
    #[arg(long, env = "SHARDCAST_TCP_PORT", value_name = "PORT")]
    tcp_port: Option<u16>,
    /// Shards (threads, each pinned to a core); 0 = one per available core [default: 0].
    #[arg(long, env = "SHARDCAST_SHARDS", value_name = "N")]
    shards: Option<usize>,
    /// Add the raw /echo and /broadcast WebSocket paths (Autobahn, load comparisons)
    /// [default: false].
    #[arg(long, env = "SHARDCAST_BENCH_ENDPOINTS", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    bench_endpoints: Option<bool>,
    /// Turn the HTTP API (/api/*) on for requests carrying this key: `Authorization: Bearer
    /// KEY` or `X-API-Key: KEY`; repeat the flag or separate keys with commas to accept
    /// several (rotation); replaces the file's `api_key` and `api_keys`. Without a key the API
    /// is off unless --api-insecure [default: none].
    #[arg(
        long,
        env = "SHARDCAST_API_KEY",
        hide_env_values = true,
        value_name = "KEY",
        value_delimiter = ','
    )]
    api_key: Option<Vec<String>>,
    /// Turn the HTTP API on without a key: anyone who can reach the port may publish and
    /// broadcast (member listings still need a key); for local use [default: false].
    #[arg(long, env = "SHARDCAST_API_INSECURE", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    api_insecure: Option<bool>,
    /// Allow browser pages from this origin (e.g. https://app.example.com) to call the API
    /// (CORS); repeat the flag or separate with commas [default: none].
    #[arg(
        long = "api-cors-origin",
        env = "SHARDCAST_API_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    api_cors_origins: Option<Vec<String>>,

    /// Most simultaneous clients (WebSocket + TCP); 0 = the open-file limit less a reserve
    /// kept for HTTP requests and the server's own descriptors [default: 0].
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Most rooms in the process; a join that would create another is refused
    /// [default: 100000].
    #[arg(long, env = "SHARDCAST_MAX_ROOMS", value_name = "N")]
    max_rooms: Option<usize>,
    /// Most rooms one client may be in [default: 50].
    #[arg(long, env = "SHARDCAST_MAX_ROOMS_PER_CLIENT", value_name = "N")]
    max_rooms_per_client: Option<usize>,
    /// Longest room name, in bytes [default: 256].
    #[arg(long, env = "SHARDCAST_MAX_ROOM_NAME", value_name = "BYTES")]
    max_room_name: Option<usize>,
    /// Largest WebSocket frame payload / stelar TCP frame, in bytes [default: 10485760].
    #[arg(long, env = "SHARDCAST_MAX_FRAME_SIZE", value_name = "BYTES")]
    max_frame_size: Option<usize>,
    /// Largest message after reassembly and decompression, in bytes [default: 10485760].
    #[arg(long, env = "SHARDCAST_MAX_MESSAGE_SIZE", value_name = "BYTES")]
    max_message_size: Option<usize>,
    /// A client's backlog (bytes still queued after its socket took all it would) that it may
    /// not exceed for longer than --slow-consumer-ms, or it is disconnected as a slow consumer
    /// (close 1008); a connection is not read while its queue is above a quarter of this
    /// [default: 4194304].
    #[arg(long, env = "SHARDCAST_MAX_QUEUED_BYTES", value_name = "BYTES")]
    max_queued_bytes: Option<usize>,
    /// Largest HTTP request head (request line + headers), in bytes [default: 8192].
    #[arg(long, env = "SHARDCAST_MAX_HTTP_HEAD", value_name = "BYTES")]
    max_http_head: Option<usize>,
    /// Largest HTTP request body (the publish API), in bytes [default: 1048576].
    #[arg(long, env = "SHARDCAST_MAX_HTTP_BODY", value_name = "BYTES")]
    max_http_body: Option<usize>,
    /// Most connections one user (the id authentication gives a connection) may hold in the
    /// whole process; the next is refused with close 4003 / ERROR "too many connections for
    /// this user"; 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_USER", value_name = "N")]
    max_connections_per_user: Option<usize>,

    /// How often the server pings a client, in milliseconds [default: 30000].
    #[arg(long, env = "SHARDCAST_HEARTBEAT_INTERVAL_MS", value_name = "MS")]
    heartbeat_interval_ms: Option<u64>,
    /// Drop a client silent for this many milliseconds [default: 60000].
    #[arg(long, env = "SHARDCAST_HEARTBEAT_TIMEOUT_MS", value_name = "MS")]
    heartbeat_timeout_ms: Option<u64>,
    /// Close a socket that has not completed its handshake / HTTP request within this many
    /// milliseconds [default: 10000].
    #[arg(long, env = "SHARDCAST_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    handshake_timeout_ms: Option<u64>,
    /// On shutdown, how long clients get to close before they are cut off, in milliseconds
    /// [default: 10000].
    #[arg(long, env = "SHARDCAST_SHUTDOWN_TIMEOUT_MS", value_name = "MS")]
    shutdown_timeout_ms: Option<u64>,
    /// How long a client may stay more than --max-queued-bytes behind before it is
    /// disconnected as a slow consumer, in milliseconds; 0 = at once [default: 5000].
    #[arg(long, env = "SHARDCAST_SLOW_CONSUMER_MS", value_name = "MS")]
    slow_consumer_ms: Option<u64>,

    /// Memory for frames queued to clients, all clients together, in bytes; 0 = a quarter of
    /// the machine's (or cgroup's) memory. When full, the clients with the largest queues are
    /// disconnected as slow consumers [default: 0].
    #[arg(long, env = "SHARDCAST_OUTPUT_BUDGET", value_name = "BYTES")]
    output_budget: Option<usize>,
    /// Memory for partly received messages, all connections together, in bytes; 0 = an eighth
    /// of the machine's (or cgroup's) memory. When full, the connections holding the most are
    /// closed (1013) [default: 0].
    #[arg(long, env = "SHARDCAST_INPUT_BUDGET", value_name = "BYTES")]
    input_budget: Option<usize>,
    /// Per shard: bytes of cross-shard messages held while another shard's inbox is full;
    /// above half of it the shard stops reading its clients, at the bound messages are
    /// dropped and counted [default: 67108864].
    #[arg(long, env = "SHARDCAST_MESH_OVERFLOW", value_name = "BYTES")]
    mesh_overflow: Option<usize>,

    /// Negotiate permessage-deflate when a client offers it [default: true].
    #[arg(long, env = "SHARDCAST_COMPRESSION", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    compression: Option<bool>,
    /// Deprecated spelling of `--compression=false`, kept so that scripts and environments
    /// that used it still turn compression off [default: false].
    #[arg(long, env = "SHARDCAST_NO_COMPRESSION", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true", hide = true,
        conflicts_with = "compression")]
    no_compression: Option<bool>,
    /// Send messages shorter than this many bytes uncompressed [default: 128].
    #[arg(long, env = "SHARDCAST_COMPRESSION_THRESHOLD", value_name = "BYTES")]
    compression_threshold: Option<usize>,

    /// Clients may `publish` to rooms [default: true].
    #[arg(long, env = "SHARDCAST_RELAY_PUBLISH", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    relay_publish: Option<bool>,
    /// Clients may `publish` only to rooms they are in [default: false].
    #[arg(long, env = "SHARDCAST_RELAY_PUBLISH_REQUIRES_MEMBERSHIP", value_name = "BOOL",
        num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    relay_publish_requires_membership: Option<bool>,
    /// Clients may `broadcast` to every client [default: true].
    #[arg(long, env = "SHARDCAST_RELAY_BROADCAST", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    relay_broadcast: Option<bool>,
    /// Clients may send `direct` messages to a client id [default: true].
    #[arg(long, env = "SHARDCAST_RELAY_DIRECT", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    relay_direct: Option<bool>,
    /// Clients may call the `members` ACK for a room they are in (member ids and user ids;
    /// in a cluster, of every node) [default: false].
    #[arg(long, env = "SHARDCAST_RELAY_MEMBERS", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    relay_members: Option<bool>,
    /// Rooms (patterns, `*` wildcard; repeat or comma-separate) whose members get
    /// `member-joined` / `member-left` events when others join or leave [default: none].
    #[arg(
        long = "member-events",
        env = "SHARDCAST_MEMBER_EVENTS",
        value_name = "PATTERN",
        value_delimiter = ','
    )]
    member_events: Option<Vec<String>>,
    /// The dialect a WebSocket path speaks, PATH=NAME (repeat or comma-separate): NAME is
    /// stelar, stellarstack, ignis or stonyx; other paths speak stelar [default: none].
    #[arg(
        long = "dialect",
        env = "SHARDCAST_DIALECT",
        value_name = "PATH=NAME",
        value_delimiter = ','
    )]
    dialect: Option<Vec<shardcast::config::DialectRoute>>,
    /// Rooms every client of an ignis path joins once authenticated, for the ignis paths that
    /// name none in the configuration file (repeat or comma-separate) [default:
    /// ws-default,ws-notification].
    #[arg(
        long = "ignis-default-rooms",
        env = "SHARDCAST_IGNIS_DEFAULT_ROOMS",
        value_name = "ROOM",
        value_delimiter = ','
    )]
    ignis_default_rooms: Option<Vec<String>>,

    /// Client authentication: `off` (anyone, anonymous), `optional` (a token presented must
    /// be valid; clients without one are anonymous) or `required` (a valid token within
    /// --auth-timeout-ms, before anything else is processed) [default: off].
    #[arg(long, env = "SHARDCAST_AUTH", value_name = "MODE",
        value_parser = clap::builder::EnumValueParser::<AuthModeArg>::new())]
    auth: Option<AuthModeArg>,
    /// How long a client has to authenticate, in milliseconds; then it is closed with 4001
    /// (TCP: ERROR frame) [default: 10000].
    #[arg(long, env = "SHARDCAST_AUTH_TIMEOUT_MS", value_name = "MS")]
    auth_timeout_ms: Option<u64>,
    /// What a client whose token has no rooms (publish) claim may join (publish to): `allow`
    /// any room, or `deny` all; anonymous clients follow it too [default: allow].
    #[arg(long, env = "SHARDCAST_AUTH_DEFAULT_ROOMS", value_name = "POLICY",
        value_parser = clap::builder::EnumValueParser::<DefaultRoomsArg>::new())]
    auth_default_rooms: Option<DefaultRoomsArg>,
    /// HMAC secret (at least 32 bytes) for HS256/HS384/HS512 tokens [default: none].
    #[arg(
        long,
        env = "SHARDCAST_JWT_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    jwt_secret: Option<String>,
    /// Public key for RS*/PS*/ES*/EdDSA tokens: a PEM file (-----BEGIN PUBLIC KEY-----) or a
    /// JWKS JSON file (key chosen by the token's `kid`); re-read on SIGHUP [default: none].
    #[arg(long, env = "SHARDCAST_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// Clock leeway for a token's `exp` and `nbf`, in seconds [default: 30].
    #[arg(long, env = "SHARDCAST_JWT_LEEWAY_SECS", value_name = "SECS")]
    jwt_leeway_secs: Option<u64>,
    /// Require this `aud` claim in tokens [default: none].
    #[arg(long, env = "SHARDCAST_JWT_AUDIENCE", value_name = "AUD")]
    jwt_audience: Option<String>,
    /// Require this `iss` claim in tokens [default: none].
    #[arg(long, env = "SHARDCAST_JWT_ISSUER", value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Token claim listing the rooms a client may join (strings, `*` matches any run of
    /// characters) [default: rooms].
    #[arg(long, env = "SHARDCAST_JWT_ROOMS_CLAIM", value_name = "NAME")]
    jwt_rooms_claim: Option<String>,
    /// Token claim listing the rooms a client may publish to (same patterns)
    /// [default: publish].
    #[arg(long, env = "SHARDCAST_JWT_PUBLISH_CLAIM", value_name = "NAME")]
    jwt_publish_claim: Option<String>,
    // --- Protection (issue 9, item 4) ---
    /// Allow WebSocket handshakes only from pages of this origin: exact
    /// (https://app.example.com[:port]) or a wildcard subdomain (https://*.example.com);
    /// others get HTTP 403. Repeat the flag or separate with commas. None = any origin
    /// [default: none].
    #[arg(
        long = "allowed-origin",
        env = "SHARDCAST_ALLOWED_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    allowed_origins: Option<Vec<String>>,
    /// Refuse (HTTP 403) WebSocket handshakes that carry no Origin header (non-browser
    /// clients send none) [default: false].
    #[arg(long, env = "SHARDCAST_REQUIRE_ORIGIN", value_name = "BOOL", num_args = 0..=1,
        require_equals = true, default_missing_value = "true")]
    require_origin: Option<bool>,
    /// Most simultaneous clients from one IP address, process-wide; more get HTTP 429 /
    /// a TCP ERROR frame before any client state is kept; 0 = unlimited [default: 0].
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// A proxy (CIDR such as 10.0.0.0/8; one address is /32) whose X-Forwarded-For /
    /// X-Real-IP name the WebSocket client's address for the per-IP limits; from other peers
    /// those headers are ignored. Repeat or separate with commas [default: none].
    #[arg(
        long = "trusted-proxy",
        env = "SHARDCAST_TRUSTED_PROXIES",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    trusted_proxies: Option<Vec<ipnet::IpNet>>,
    /// Handshakes (WebSocket upgrades and TCP connections) per IP address, N/s or N/m, in
    /// bursts of up to N, process-wide; excess gets HTTP 429 / TCP ERROR [default: none].
    #[arg(long, env = "SHARDCAST_HANDSHAKE_RATE_PER_IP", value_name = "N/s")]
    handshake_rate_per_ip: Option<Rate>,
    /// Messages one client may send, N/s or N/m (token bucket; pings exempt); excess is
    /// dropped and answered with server:error code rate_limited. Per-event limits:
    /// [rate_limit.events] in the config file [default: none].
    #[arg(long, env = "SHARDCAST_RATE_LIMIT", value_name = "N/s")]
    rate_limit: Option<Rate>,
    /// Messages a client may send at once after a quiet spell (the bucket's size); 0 = the
    /// N of --rate-limit [default: 0].
    #[arg(long, env = "SHARDCAST_RATE_BURST", value_name = "B")]
    rate_burst: Option<u32>,
    /// Disconnect a client (close 1008 / TCP ERROR "Rate limit exceeded") after this many
    /// messages over its rate limit in a row; 0 = never, only drop and answer [default: 0].
    #[arg(long, env = "SHARDCAST_RATE_LIMIT_STRIKES", value_name = "K")]
    rate_limit_strikes: Option<u32>,

    /// Log format [default: text].
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_name = "FORMAT",
        value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Log filter, tracing env-filter syntax such as `debug` or `shardcast=debug`; TOML `log`,
    /// which a reload (SIGHUP) changes live [default: info].
    #[arg(long, env = "SHARDCAST_LOG", value_name = "FILTER", value_parser = log_filter)]
    log: Option<String>,

    // --- TLS (issue 9, item 1) ---
    /// PEM certificate chain (leaf first); with --tls-key the WebSocket port serves wss and
    /// the TCP port stelar TCP over TLS (TLS 1.2/1.3); re-read on SIGHUP [default: none].
    #[arg(long, env = "SHARDCAST_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert; re-read on SIGHUP
    /// [default: none].
    #[arg(long, env = "SHARDCAST_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve wss on this extra port and keep --port plain; 0 picks a free one
    /// [default: none].
    #[arg(long, env = "SHARDCAST_TLS_WS_PORT", value_name = "PORT")]
    tls_ws_port: Option<u16>,
    /// Serve stelar TCP over TLS on this extra port and keep --tcp-port plain; 0 picks a
    /// free one [default: none].
    #[arg(long, env = "SHARDCAST_TLS_TCP_PORT", value_name = "PORT")]
    tls_tcp_port: Option<u16>,

    // --- Cluster (issue 11) ---
    /// Share rooms, broadcasts, clients and users with other nodes through this Redis
    /// (`redis://host:port`; Redis 7, sharded pub/sub). Redis down at start-up is not an
    /// error: the node serves its own clients and retries [default: none, a single node].
    #[arg(long, env = "SHARDCAST_REDIS", value_name = "URL")]
    redis: Option<String>,
    /// This node's name in the cluster; without one a random id is made and logged at
    /// start-up [default: none].
    #[arg(long, env = "SHARDCAST_NODE_ID", value_name = "ID")]
    node_id: Option<String>,
    /// Also deliver what another system's publishers send through Redis: `ignis`
    /// (WebSocketEmitter's `ws:*` channels) [default: none].
    #[arg(long, env = "SHARDCAST_REDIS_COMPAT", value_name = "SYSTEM",
        value_parser = ["ignis"])]
    redis_compat: Option<String>,
}

/// `--auth` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum AuthModeArg {
    Off,
    Optional,
    Required,
}

/// `--auth-default-rooms` values.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum DefaultRoomsArg {
    Allow,
    Deny,
}

/// Accepts what `EnvFilter` accepts, so a typo is reported instead of logging at `info`.
fn log_filter(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl ServeArgs {
    fn to_config(&self) -> Result<Config, String> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path).map_err(|e| e.to_string())?,
            None => Config::default(),
        };
        fn set<T: Clone>(slot: &mut T, v: &Option<T>) {
            if let Some(v) = v {
                *slot = v.clone();
            }
        }
        set(&mut c.host, &self.host);
        set(&mut c.port, &self.port);
        if let Some(v) = self.tcp_port {
            c.tcp_port = Some(v);
        }
        set(&mut c.shards, &self.shards);
        set(&mut c.bench_endpoints, &self.bench_endpoints);
        if let Some(keys) = &self.api_key {
            let mut keys = keys.iter().filter(|k| !k.is_empty()).cloned();
            c.api_key = keys.next();
            c.api_keys = keys.collect();
        }
        set(&mut c.api_insecure, &self.api_insecure);
        set(&mut c.api_cors_origins, &self.api_cors_origins);
        let l = &mut c.limits;
        set(&mut l.max_connections, &self.max_connections);
        set(&mut l.max_rooms, &self.max_rooms);
        set(&mut l.max_rooms_per_client, &self.max_rooms_per_client);
        set(&mut l.max_room_name, &self.max_room_name);
        set(&mut l.max_frame_size, &self.max_frame_size);
        set(&mut l.max_message_size, &self.max_message_size);
        set(&mut l.max_queued_bytes, &self.max_queued_bytes);
        set(&mut l.max_http_head, &self.max_http_head);
        set(&mut l.max_http_body, &self.max_http_body);
        set(
            &mut l.max_connections_per_user,
            &self.max_connections_per_user,
        );
        let t = &mut c.timeouts;
        set(&mut t.heartbeat_interval_ms, &self.heartbeat_interval_ms);
        set(&mut t.heartbeat_timeout_ms, &self.heartbeat_timeout_ms);
        set(&mut t.handshake_timeout_ms, &self.handshake_timeout_ms);
        set(&mut t.shutdown_timeout_ms, &self.shutdown_timeout_ms);
        set(&mut t.slow_consumer_ms, &self.slow_consumer_ms);
        let m = &mut c.memory;
        set(&mut m.output_budget, &self.output_budget);
        set(&mut m.input_budget, &self.input_budget);
        set(&mut m.mesh_overflow, &self.mesh_overflow);
        // The two never come together (clap refuses the pair).
        if let Some(off) = self.no_compression {
            c.compression.enabled = !off;
        }
        set(&mut c.compression.enabled, &self.compression);
        set(&mut c.compression.threshold, &self.compression_threshold);
        let r = &mut c.relay;
        set(&mut r.publish, &self.relay_publish);
        set(
            &mut r.publish_requires_membership,
            &self.relay_publish_requires_membership,
        );
        set(&mut r.broadcast, &self.relay_broadcast);
        set(&mut r.direct, &self.relay_direct);
        set(&mut r.members, &self.relay_members);
        if let Some(patterns) = &self.member_events {
            r.member_events = patterns.iter().filter(|p| !p.is_empty()).cloned().collect();
        }
        if let Some(routes) = &self.dialect {
            for route in routes {
                c.dialects.retain(|r| r.path != route.path);
                c.dialects.push(route.clone());
            }
        }
        if let Some(rooms) = &self.ignis_default_rooms {
            for route in c.dialects.iter_mut() {
                if route.name == "ignis" && route.default_rooms.is_none() {
                    route.default_rooms = Some(rooms.clone());
                }
            }
        }
        let a = &mut c.auth;
        if let Some(m) = self.auth {
            a.mode = match m {
                AuthModeArg::Off => AuthMode::Off,
                AuthModeArg::Optional => AuthMode::Optional,
                AuthModeArg::Required => AuthMode::Required,
            };
        }
        set(&mut a.timeout_ms, &self.auth_timeout_ms);
        if let Some(d) = self.auth_default_rooms {
            a.default_rooms = match d {
                DefaultRoomsArg::Allow => DefaultRooms::Allow,
                DefaultRoomsArg::Deny => DefaultRooms::Deny,
            };
        }
        if let Some(v) = &self.jwt_secret {
            a.jwt_secret = Some(v.clone());
        }
        if let Some(v) = &self.jwt_public_key {
            a.jwt_public_key = Some(v.clone());
        }
        set(&mut a.jwt_leeway_secs, &self.jwt_leeway_secs);
        if let Some(v) = &self.jwt_audience {
            a.jwt_audience = Some(v.clone());
        }
        if let Some(v) = &self.jwt_issuer {
            a.jwt_issuer = Some(v.clone());
        }
        set(&mut a.jwt_rooms_claim, &self.jwt_rooms_claim);
        set(&mut a.jwt_publish_claim, &self.jwt_publish_claim);
        set(&mut c.log, &self.log);
        // Protection.
        if let Some(origins) = &self.allowed_origins {
            // The flag replaces the file's list, wherever the file put it.
            c.allowed_origins.clear();
            c.security.allowed_origins = origins.clone();
        }
        let sec = &mut c.security;
        set(&mut sec.require_origin, &self.require_origin);
        set(
            &mut sec.max_connections_per_ip,
            &self.max_connections_per_ip,
        );
        set(&mut sec.trusted_proxies, &self.trusted_proxies);
        if let Some(r) = self.handshake_rate_per_ip {
            sec.handshake_rate_per_ip = Some(r);
        }
        let rl = &mut c.rate_limit;
        if let Some(r) = self.rate_limit {
            rl.rate = Some(r);
        }
        set(&mut rl.burst, &self.rate_burst);
        set(&mut rl.strikes, &self.rate_limit_strikes);
        // TLS (issue 9, item 1).
        if let Some(v) = &self.tls_cert {
            c.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls.key = Some(v.clone());
        }
        if let Some(v) = self.tls_ws_port {
            c.tls.ws_port = Some(v);
        }
        if let Some(v) = self.tls_tcp_port {
            c.tls.tcp_port = Some(v);
        }
        // Cluster (issue 11).
        if let Some(v) = &self.redis {
            c.cluster.redis = Some(v.clone());
        }
        if let Some(v) = &self.node_id {
            c.cluster.node_id = Some(v.clone());
        }
        if let Some(v) = &self.redis_compat {
            c.cluster.compat = Some(v.clone());
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// The configuration as `check-config` prints it: TOML that `--config` reads back, with the
/// API keys and the JWT secret (if any) replaced by [`REDACTED`] and the Redis password by `***`.
fn printable_config(config: &Config) -> Result<String, String> {
    let mut shown = config.clone();
    if shown.api_key.is_some() {
        shown.api_key = Some(REDACTED.to_owned());
    }
    for key in &mut shown.api_keys {
        *key = REDACTED.to_owned();
    }
    if shown.auth.jwt_secret.is_some() {
        shown.auth.jwt_secret = Some(REDACTED.to_owned());
    }
    if let Some(url) = &shown.cluster.redis {
        shown.cluster.redis = Some(shardcast::config::redact_url(url));
    }
    let toml = toml::to_string_pretty(&shown).map_err(|e| e.to_string())?;
    Ok(format!(
        "# shardcast effective configuration (defaults < config file < environment < flags)\n{toml}"
    ))
}

/// Whether log lines carry ANSI colours: only on a terminal, and not when `NO_COLOR` is set
/// to anything non-empty (no-color.org).
fn log_colours(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// Changes the log filter of the running subscriber.
type SetFilter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Installs the subscriber with `filter` (checked by `Config::validate`); returns what changes
/// the filter later (a reload).
fn init_logging(args: &ServeArgs, filter: &str) -> SetFilter {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    // A log line that cannot be written (a closed pipe) is dropped: by default the subscriber
    // reports it with `eprintln!`, which panics on the same closed pipe and would take down
    // the thread that logged (a shard, or the signal thread).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    fn setter<L, S>(handle: tracing_subscriber::reload::Handle<L, S>) -> SetFilter
    where
        L: From<tracing_subscriber::EnvFilter> + Send + Sync + 'static,
        S: 'static,
    {
        Box::new(move |filter: &str| {
            let filter =
                tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
            handle.reload(filter).map_err(|e| e.to_string())
        })
    }
    if args.log_format.as_deref() == Some("json") {
        let builder = builder.json().with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        setter(handle)
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        setter(handle)
    }
}

/// Parses the command line; on a usage error exits 2 with clap's message, except that a bad
/// value taken from an environment variable is reported under the variable's name.
fn parse_cli() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let mut cmd = cli_command(args.get(1).map(OsString::as_os_str));
    let err = match cmd.try_get_matches_from_mut(&args) {
        Ok(matches) => match Cli::from_arg_matches(&matches) {
            Ok(cli) => return cli,
            Err(e) => e.format(&mut cmd),
        },
        Err(e) => e,
    };
    match env_value_error(&err, args) {
        Some(message) => {
            eprintln!("shardcast: {message}");
            std::process::exit(2);
        }
        None => err.exit(),
    }
}

/// The parser for a command line whose first argument is `first`. A subcommand comes first
/// (the top level's flags conflict with one) and has its own copy of the flags, which reads
/// the environment; the top level's copy must not read it too, or a bad variable would be
/// reported where the subcommand's flag replaces it (`SHARDCAST_PORT=x shardcast serve -p 1`).
fn cli_command(first: Option<&OsStr>) -> clap::Command {
    let cmd = Cli::command();
    let subcommand = first
        .and_then(OsStr::to_str)
        .is_some_and(|a| a == "help" || cmd.find_subcommand(a).is_some());
    if subcommand {
        cmd.mut_args(|a| a.env(None))
    } else {
        cmd
    }
}

/// For a value error whose value came from the environment, the message naming the variable
/// (`invalid value 'abc' for SHARDCAST_PORT: invalid digit found in string`). `None` when the
/// value was on the command line: clap's message, which names the flag, is right then.
fn env_value_error(err: &clap::Error, args: impl IntoIterator<Item = OsString>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return None;
    }
    let ContextValue::String(arg) = err.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let ContextValue::String(value) = err.get(ContextKind::InvalidValue)? else {
        return None;
    };
    let mut cmd = Cli::command();
    // Built, so that flags render as clap's messages render them (`--port <PORT>`).
    cmd.build();
    // Every command takes the same flags, so the top level names them all.
    let var = cmd
        .get_arguments()
        .find(|a| a.to_string() == *arg)?
        .get_env()?
        .to_owned();
    if std::env::var_os(&var).as_deref() != Some(OsStr::new(value)) {
        return None;
    }
    // clap reads a variable only for a flag the command line left out. Whether it did: the
    // command line parses without any variable exactly when the bad value was not on it.
    without_env().try_get_matches_from(args).ok()?;
    let why = match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(valid)) => format!("possible values: {}", valid.join(", ")),
        _ => std::error::Error::source(err).map_or_else(String::new, ToString::to_string),
    };
    let var = var.to_string_lossy();
    Some(if why.is_empty() {
        format!("invalid value '{value}' for {var}")
    } else {
        format!("invalid value '{value}' for {var}: {why}")
    })
}

/// The parser with no flag reading the environment, at any level.
fn without_env() -> clap::Command {
    let mut cmd = Cli::command().mut_args(|a| a.env(None));
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_owned())
        .collect();
    for name in subcommands {
        cmd = cmd.mut_subcommand(name, |s| s.mut_args(|a| a.env(None)));
    }
    cmd
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let (args, check_only) = match cli.command {
        Some(Command::Serve(a)) => (a, false),
        Some(Command::CheckConfig(a)) => (a, true),
        None => (cli.serve, false),
    };
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardcast: {e}");
            return ExitCode::from(2);
        }
    };
    let set_filter = init_logging(&args, &config.log);
    if check_only {
        return match printable_config(&config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shardcast: cannot print the configuration as TOML: {e}");
                ExitCode::from(1)
            }
        };
    }
    let filter_now = std::sync::Mutex::new(config.log.clone());
    let builder = Server::builder()
        .config(config)
        .relay(true)
        // SIGHUP: the same flags and environment as at start, the --config file read again.
        .reload_on_hangup(move || args.to_config())
        .on_reload(move |c| {
            let mut now = filter_now.lock().unwrap_or_else(|p| p.into_inner());
            if c.log != *now {
                match set_filter(&c.log) {
                    Ok(()) => {
                        tracing::info!(filter = %c.log, "log filter changed");
                        c.log.clone_into(&mut now);
                    }
                    Err(e) => tracing::warn!(filter = %c.log, error = %e, "log filter unchanged"),
                }
            }
        });
    let running = match builder.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shardcast: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    server::log_listening(&running);
    match running.join() {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardcast: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` as flags only: the tests' own environment must not leak in.
    fn parse(args: &[&str]) -> ServeArgs {
        let cli = without_env()
            .try_get_matches_from(std::iter::once("shardcast").chain(args.iter().copied()))
            .and_then(|m| Cli::from_arg_matches(&m))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match cli.command {
            Some(Command::Serve(a) | Command::CheckConfig(a)) => a,
            None => cli.serve,
        }
    }

    /// The `[default: X]` a flag's help names.
    fn documented_default(arg: &clap::Arg) -> Option<String> {
        let help = arg.get_help()?.to_string();
        let (_, rest) = help.split_once("[default: ")?;
        Some(rest.split([']', ',', ' ']).next()?.to_owned())
    }

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every flag has a variable and says what it does; every flag but those without a
    /// default names its default exactly once, and clap adds none of its own (a clap default
    /// would also override the config file).
    #[test]
    fn every_flag_has_a_variable_and_one_default() {
        let no_default = ["config"];
        for arg in Cli::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            let want_env = format!("SHARDCAST_{}", id.to_ascii_uppercase());
            assert_eq!(env.as_deref(), Some(want_env.as_str()), "--{id}");
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            assert!(help.len() > 20, "--{id} says what it does: {help:?}");
            let defaults = help.matches("[default:").count();
            let want = usize::from(!no_default.contains(&id));
            assert_eq!(defaults, want, "--{id}: {help:?}");
            assert!(
                arg.get_default_values().is_empty(),
                "--{id} has a clap default"
            );
        }
    }

    /// A flag set to the default its help names changes nothing, so the help is right.
    #[test]
    fn documented_defaults_are_the_defaults() {
        let mut checked = 0;
        for arg in Cli::command().get_arguments() {
            let Some(value) = documented_default(arg) else {
                continue;
            };
            let Some(long) = arg.get_long() else {
                continue;
            };
            // `--tcp-port`'s default is `--port + 1`, not a value.
            if value.starts_with("--") || value == "none" {
                continue;
            }
            let flag = format!("--{long}={value}");
            let config = parse(&[&flag]).to_config().unwrap();
            assert_eq!(config, Config::default(), "{flag}");
            checked += 1;
        }
        assert!(checked >= 25, "{checked}");
    }

    #[test]
    fn flags_reach_every_setting() {
        let args = parse(&[
            "--host=127.0.0.1",
            "--port=4000",
            "--tcp-port=0",
            "--shards=2",
            "--bench-endpoints",
            "--api-key=k",
            "--api-key=k2,k3",
            "--api-insecure",
            "--api-cors-origin=https://a.example",
            "--api-cors-origin=http://b.example:8080",
            "--max-connections=7",
            "--max-rooms=8",
            "--max-rooms-per-client=9",
            "--max-room-name=10",
            "--max-frame-size=1000",
            "--max-message-size=2000",
            "--max-queued-bytes=70000",
            "--max-http-head=2048",
            "--max-http-body=3000",
            "--max-connections-per-user=12",
            "--heartbeat-interval-ms=100",
            "--heartbeat-timeout-ms=200",
            "--handshake-timeout-ms=300",
            "--shutdown-timeout-ms=400",
            "--slow-consumer-ms=500",
            "--output-budget=2000000",
            "--input-budget=3000000",
            "--mesh-overflow=4000000",
            "--compression=false",
            "--compression-threshold=64",
            "--relay-publish=false",
            "--relay-publish-requires-membership",
            "--relay-broadcast=false",
            "--relay-direct=false",
            "--relay-members",
            "--redis=redis://10.1.2.3:6380",
            "--node-id=eu-2",
            "--redis-compat=ignis",
            "--auth=required",
            "--auth-timeout-ms=600",
            "--auth-default-rooms=deny",
            "--jwt-secret=0123456789abcdef0123456789abcdef",
            "--jwt-public-key=/keys.pem",
            "--jwt-leeway-secs=7",
            "--jwt-audience=aud",
            "--jwt-issuer=iss",
            "--jwt-rooms-claim=r",
            "--jwt-publish-claim=p",
            "--member-events=lobby*,chat",
            "--dialect=/api/ws=stellarstack",
            "--dialect=/ws=ignis,/s=stonyx",
            "--ignis-default-rooms=a,b",
        ]);
        let c = args.to_config().unwrap();
        let want = Config::from_toml(
            r#"
            host = "127.0.0.1"
            port = 4000
            tcp_port = 0
            shards = 2
            bench_endpoints = true
            api_key = "k"
            api_keys = ["k2", "k3"]
            api_insecure = true
            api_cors_origins = ["https://a.example", "http://b.example:8080"]
            [limits]
            max_connections = 7
            max_rooms = 8
            max_rooms_per_client = 9
            max_room_name = 10
            max_frame_size = 1000
            max_message_size = 2000
            max_queued_bytes = 70000
            max_http_head = 2048
            max_http_body = 3000
            max_connections_per_user = 12
            [timeouts]
            heartbeat_interval_ms = 100
            heartbeat_timeout_ms = 200
            handshake_timeout_ms = 300
            shutdown_timeout_ms = 400
            slow_consumer_ms = 500
            [memory]
            output_budget = 2000000
            input_budget = 3000000
            mesh_overflow = 4000000
            [compression]
            enabled = false
            threshold = 64
            [relay]
            publish = false
            publish_requires_membership = true
            broadcast = false
            direct = false
            members = true
            member_events = ["lobby*", "chat"]
            [cluster]
            redis = "redis://10.1.2.3:6380"
            node_id = "eu-2"
            compat = "ignis"
            [auth]
            mode = "required"
            timeout_ms = 600
            default_rooms = "deny"
            jwt_secret = "0123456789abcdef0123456789abcdef"
            jwt_public_key = "/keys.pem"
            jwt_leeway_secs = 7
            jwt_audience = "aud"
            jwt_issuer = "iss"
            jwt_rooms_claim = "r"
            jwt_publish_claim = "p"
            [[dialect]]
            path = "/api/ws"
            name = "stellarstack"
            [[dialect]]
            path = "/ws"
            name = "ignis"
            default_rooms = ["a", "b"]
            [[dialect]]
            path = "/s"
            name = "stonyx"
            "#,
        )
        .unwrap();
        assert_eq!(c, want);
    }

    #[test]
    fn protection_flags_reach_their_settings() {
        let c = parse(&[
            "--allowed-origin=https://a.example,https://*.b.example",
            "--require-origin",
            "--max-connections-per-ip=3",
            "--trusted-proxy=10.0.0.0/8",
            "--trusted-proxy=192.0.2.1/32",
            "--handshake-rate-per-ip=20/m",
            "--rate-limit=100/s",
            "--rate-burst=50",
            "--rate-limit-strikes=4",
        ])
        .to_config()
        .unwrap();
        let s = &c.security;
        assert_eq!(
            s.allowed_origins,
            ["https://a.example", "https://*.b.example"]
        );
        assert!(s.require_origin);
        assert_eq!(s.max_connections_per_ip, 3);
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.handshake_rate_per_ip.unwrap().to_string(), "20/m");
        let r = &c.rate_limit;
        assert_eq!(r.rate.unwrap().to_string(), "100/s");
        assert_eq!((r.burst, r.strikes), (50, 4));
        // A bad value names the flag's problem.
        let err = parse(&["--allowed-origin=app.example"])
            .to_config()
            .unwrap_err();
        assert!(err.contains("allowed_origins"), "{err}");
        for bad in [
            "--rate-limit=fast",
            "--rate-limit=0/s",
            "--trusted-proxy=10.0.0.1",
        ] {
            assert!(
                without_env()
                    .try_get_matches_from(["shardcast", bad])
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn flags_override_the_file_both_ways() {
        let path = std::env::temp_dir().join(format!("shardcast-cli-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "bench_endpoints = true\n[relay]\ndirect = false\n[limits]\nmax_rooms = 5\n",
        )
        .unwrap();
        let file = format!("--config={}", path.display());
        let from_file = parse(&[&file]).to_config().unwrap();
        assert!(from_file.bench_endpoints && !from_file.relay.direct);
        assert_eq!(from_file.limits.max_rooms, 5);
        let c = parse(&[
            &file,
            "--bench-endpoints=false",
            "--relay-direct",
            "--max-rooms=6",
        ])
        .to_config()
        .unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(!c.bench_endpoints && c.relay.direct);
        assert_eq!(c.limits.max_rooms, 6);
    }

    #[test]
    fn no_compression_still_turns_compression_off() {
        let c = parse(&["--no-compression"]).to_config().unwrap();
        assert!(!c.compression.enabled);
        assert!(without_env()
            .try_get_matches_from(["shardcast", "--no-compression", "--compression"])
            .is_err());
    }

    #[test]
    fn check_config_prints_toml_that_reads_back() {
        let c = parse(&["--port=4000", "--relay-broadcast=false"])
            .to_config()
            .unwrap();
        let text = printable_config(&c).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        assert!(!text.contains("api_key"), "{text}");
    }

    #[test]
    fn check_config_redacts_every_api_key() {
        let c = parse(&["--api-key=s3cret-one,s3cret-two"])
            .to_config()
            .unwrap();
        assert_eq!(c.api_keys, ["s3cret-two"]);
        let text = printable_config(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn check_config_redacts_the_api_key() {
        let c = parse(&["--api-key=s3cret"]).to_config().unwrap();
        let text = printable_config(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        let shown = Config::from_toml(&text).unwrap();
        assert_eq!(shown.api_key.as_deref(), Some(REDACTED));
        assert_eq!(
            Config {
                api_key: c.api_key.clone(),
                ..shown
            },
            c
        );
    }

    #[test]
    fn check_config_redacts_the_jwt_secret() {
        let c = parse(&["--jwt-secret=0123456789abcdef0123456789abcdef"])
            .to_config()
            .unwrap();
        let text = printable_config(&c).unwrap();
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(text.contains("[auth]"), "{text}");
    }

    #[test]
    fn check_config_redacts_the_redis_password() {
        let c = parse(&["--redis=redis://u:s3cret@127.0.0.1:6379"])
            .to_config()
            .unwrap();
        let text = printable_config(&c).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("redis://u:***@127.0.0.1:6379"), "{text}");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new("1"))));
    }

    #[test]
    fn a_bad_log_filter_is_refused() {
        assert!(without_env()
            .try_get_matches_from(["shardcast", "--log=shardcast=loud"])
            .is_err());
        assert_eq!(
            parse(&["--log=shardcast=debug"]).log.as_deref(),
            Some("shardcast=debug")
        );
    }

    #[test]
    fn a_bad_flag_value_is_reported_by_clap() {
        // On the command line the flag is named, by clap: no variable is involved.
        let args = ["shardcast", "--port", "abc"];
        let err = without_env().try_get_matches_from(args).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(env_value_error(&err, args.map(OsString::from)), None);
    }
}
