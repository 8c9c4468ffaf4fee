//! Server configuration: defaults, the TOML file, and validation.
//!
//! Precedence (lowest first): built-in defaults, the `--config` TOML file, environment
//! variables, command-line flags. The binary (`main.rs`) maps flags and environment onto
//! [`Config`]; this module owns the defaults, the file format and the checks, so an
//! embedding application can build a `Config` the same way.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything the server can be told. Field docs are the reference for the TOML file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub host: IpAddr,
    /// WebSocket + HTTP port. 0 picks a free port (printed at start-up).
    pub port: u16,
    /// stelar TCP port. Default: `port + 1` (stelar TCP clients dial the WebSocket port + 1).
    /// 0 disables the TCP listener. `None` means "the default".
    pub tcp_port: Option<u16>,
    /// Shards (threads, one per core). 0 = one per available core.
    pub shards: usize,
    /// Adds the raw `/echo` and `/broadcast` WebSocket paths (conformance and comparison runs).
    pub bench_endpoints: bool,
    /// Turns the HTTP API (`/api/*`) on, for requests carrying `Authorization: Bearer KEY` or
    /// `X-API-Key: KEY`. Without a key the API is off (403) unless `api_insecure` is set.
    pub api_key: Option<String>,
    /// Turns the HTTP API on without a key: anyone who can reach the port may publish and
    /// broadcast (member listings still need a key). For local use; a warning is logged.
    pub api_insecure: bool,
    /// More API keys, each accepted like `api_key` (several at once let a key be rotated:
    /// add the new one, move the backends, remove the old one; a reload applies the list).
    /// `api_key` and these are all valid together.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
    /// Origins (`scheme://host[:port]`, exactly as browsers send them) whose pages may call
    /// the API from a browser (CORS). Other origins get no CORS headers.
    pub api_cors_origins: Vec<String>,
    /// Log filter, tracing env-filter syntax (`info`, `shardcast=debug,warn`). Reloads live.
    pub log: String,
    /// Protection (issue 9): the same list as `security.allowed_origins`, accepted at the top
    /// level too; the two are joined. Written back (by `check-config`) under `[security]`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Connection and message limits.
    pub limits: Limits,
    /// Heartbeats and timeouts.
    pub timeouts: Timeouts,
    /// permessage-deflate.
    pub compression: Compression,
    /// What the standalone relay lets clients do.
    pub relay: Relay,
    /// Process-wide memory budgets.
    pub memory: Memory,
    /// Client authentication and authorization (`[auth]`).
    pub auth: Auth,
    /// Protection at the handshake: origins, per-IP limits, trusted proxies.
    pub security: Security,
    /// Per-client message rate limits.
    pub rate_limit: RateLimit,
    /// TLS (wss and stelar TCP over TLS).
    pub tls: Tls,
    /// More than one node: rooms, broadcasts, clients and users shared through Redis
    /// (`[cluster]`; off unless `redis` is set).
    pub cluster: Cluster,
    /// The message format (dialect) spoken on a WebSocket path (`[[dialect]]`, repeatable):
    /// `stelar` on every path not listed. Read at start-up only.
    #[serde(rename = "dialect", skip_serializing_if = "Vec::is_empty")]
    pub dialects: Vec<DialectRoute>,
}

/// One `[[dialect]]`: the dialect a WebSocket path speaks (README "Dialects").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DialectRoute {
    /// The request path, matched exactly (the query is not part of it), e.g. `/api/ws`.
    pub path: String,
    /// `stelar`, `stellarstack`, `ignis`, `stonyx`, or a dialect the embedder registered.
    pub name: String,
    /// Rooms a client joins once authenticated (ignis: default `ws-default`,
    /// `ws-notification`; other dialects: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_rooms: Option<Vec<String>>,
}

impl std::str::FromStr for DialectRoute {
    type Err = String;

    /// `PATH=NAME`, as `--dialect` takes it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, name) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not PATH=NAME (e.g. /api/ws=stellarstack)"))?;
        Ok(DialectRoute {
            path: path.trim().to_owned(),
            name: name.trim().to_owned(),
            default_rooms: None,
        })
    }
}

/// More than one node through Redis (README "Cluster"). Read at start-up only.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// `redis://[user:password@]host:port[/db]`. Unset = a single node (the default).
    pub redis: Option<String>,
    /// This node's name in the cluster (envelopes, presence). Default: random, logged.
    pub node_id: Option<String>,
    /// Prefix of every channel and key (`PREFIX:room:NAME`, ...).
    pub prefix: String,
    /// Also take messages from another system's publishers: `ignis` (its `ws:*` channels
    /// and `IRedisSocketMessage` envelope). Default: none.
    pub compat: Option<String>,
    /// Bytes of messages waiting to go to Redis; beyond it messages for other nodes are
    /// dropped and counted (`shardcast_cluster_dropped_total{reason="queue_full"}`).
    pub queue_bytes: usize,
    /// Presence entries of a node that stopped refreshing them (crashed, cut off) are gone
    /// from every answer within this many milliseconds.
    pub presence_ttl_ms: u64,
    /// Longest wait between reconnection attempts while Redis is away (the wait starts at
    /// 100 ms and doubles).
    pub reconnect_max_ms: u64,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis: None,
            node_id: None,
            prefix: "shardcast".into(),
            compat: None,
            queue_bytes: 8 << 20,
            presence_ttl_ms: 15_000,
            reconnect_max_ms: 5_000,
        }
    }
}

/// Protection at the handshake (README: "Running in production").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Origins whose pages may open a WebSocket: exact (`https://app.example.com[:port]`) or
    /// with a wildcard first label (`https://*.example.com`, which matches any subdomain but
    /// not `example.com` itself). A handshake with another `Origin` gets HTTP 403. Empty (the
    /// default) = any origin.
    pub allowed_origins: Vec<String>,
    /// Refuse (HTTP 403) WebSocket handshakes without an `Origin` header (non-browser
    /// clients send none).
    pub require_origin: bool,
    /// Most simultaneous clients (WebSocket + TCP) from one IP address, process-wide; more
    /// are refused (HTTP 429 / TCP ERROR) before any client state is kept. 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Proxies (CIDR, e.g. `10.0.0.0/8`; one address is `/32` or `/128`) whose
    /// `X-Forwarded-For` / `X-Real-IP` headers name the client's address (WebSocket only).
    /// From any other peer those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Handshakes (WebSocket upgrades and TCP connections together) one IP address may make,
    /// as `"N/s"` or `"N/m"`, with bursts of up to N; excess gets HTTP 429 / TCP ERROR.
    /// Process-wide. Unset = unlimited.
    pub handshake_rate_per_ip: Option<Rate>,
}

/// Per-client message rate limits: token buckets kept by each connection.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimit {
    /// Inbound messages (every JSON event, binary message, ACK request, TCP JOIN/LEAVE;
    /// not pings) one client may send, `"N/s"` or `"N/m"`. Unset = unlimited.
    pub rate: Option<Rate>,
    /// The bucket's size: messages a client may send at once after being quiet. 0 = N of
    /// `rate`.
    pub burst: u32,
    /// 0 (default): a message over the limit is dropped and answered with `server:error`
    /// code `rate_limited` (at most one answer per message let through). K > 0: also, after
    /// K excesses in a row the client is disconnected (close 1008 / TCP ERROR
    /// "Rate limit exceeded").
    pub strikes: u32,
    /// Limits for single events, on top of `rate`: `publish = "50/s"` (bursts of up to N).
    pub events: BTreeMap<String, Rate>,
}

impl RateLimit {
    /// The bucket size for the all-messages limit.
    pub fn effective_burst(&self) -> u32 {
        match (self.burst, self.rate) {
            (0, Some(r)) => r.count,
            (b, _) => b,
        }
    }
}

/// A rate, written `"N/s"` (per second) or `"N/m"` (per minute); N ≥ 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rate {
    /// Events per period.
    pub count: u32,
    /// The period in milliseconds (1000 or 60000).
    pub period_ms: u64,
}

impl Rate {
    /// Tokens earned per millisecond.
    pub fn per_ms(self) -> f64 {
        f64::from(self.count) / self.period_ms as f64
    }
}

impl std::str::FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("`{s}` is not a rate like 100/s or 30/m");
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let period_ms = match unit.trim() {
            "s" | "sec" | "second" => 1000,
            "m" | "min" | "minute" => 60_000,
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(format!(
                "`{s}`: the count must be at least 1 (leave the rate unset for no limit)"
            ));
        }
        Ok(Rate { count, period_ms })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Rate, String> {
        s.parse()
    }
}

impl From<Rate> for String {
    fn from(r: Rate) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = if self.period_ms == 60_000 { "m" } else { "s" };
        write!(f, "{}/{unit}", self.count)
    }
}

/// Whether `origin` (as a browser sends it) matches the allow-list `pattern`: equal, ASCII
/// case-insensitively, or for `scheme://*.rest` a non-empty subdomain label sequence in front
/// of `.rest`.
pub fn origin_matches(pattern: &str, origin: &str) -> bool {
    if pattern.eq_ignore_ascii_case(origin) {
        return true;
    }
    let Some((scheme, host)) = pattern.split_once("://") else {
        return false;
    };
    let Some(suffix) = host.strip_prefix('*') else {
        return false;
    };
    let Some((o_scheme, o_host)) = origin.split_once("://") else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(o_scheme) || o_host.len() <= suffix.len() {
        return false;
    }
    let (label, tail) = o_host.split_at(o_host.len() - suffix.len());
    tail.eq_ignore_ascii_case(suffix)
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !label.starts_with('.')
        && !label.ends_with('.')
}

fn valid_origin_pattern(origin: &str) -> bool {
    let Some((scheme, host)) = origin.split_once("://") else {
        return false;
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    (scheme == "http" || scheme == "https")
        && !host.is_empty()
        && !host.contains(['/', '*', '?', '#', '@'])
        && host.bytes().all(|b| b.is_ascii_graphic())
}

/// TLS with rustls (TLS 1.2 and 1.3 only). With `cert` and `key` set, the WebSocket port
/// serves wss and the TCP port stelar TCP over TLS, unless `ws_port` or `tcp_port` is set:
/// then TLS is served on those extra ports and the main ports stay plain. The certificate and
/// key are read again on reload (SIGHUP); the ports are not.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Option<std::path::PathBuf>,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<std::path::PathBuf>,
    /// An extra port serving wss while `port` stays plain WebSocket.
    pub ws_port: Option<u16>,
    /// An extra port serving stelar TCP over TLS while `tcp_port` stays plain.
    pub tcp_port: Option<u16>,
}

impl Tls {
    /// Whether TLS is configured at all.
    pub fn enabled(&self) -> bool {
        self.cert.is_some()
    }
    /// Whether the main ports speak TLS (TLS configured and no extra TLS port).
    pub fn on_main_ports(&self) -> bool {
        self.enabled() && self.ws_port.is_none() && self.tcp_port.is_none()
    }
}

/// Connection and message limits.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most simultaneous clients in the process (WebSocket + TCP); more are refused (close
    /// 1008 / ERROR "Server full"). 0 = the open-file limit less a reserve of descriptors
    /// (64 plus 1/64 of the limit) that keeps `/health`, the API and the server's own files
    /// working when clients fill the rest (logged at start-up).
    pub max_connections: usize,
    /// Most rooms in the process. New rooms beyond it are refused.
    pub max_rooms: usize,
    /// Most rooms one client may be in.
    pub max_rooms_per_client: usize,
    /// Longest room name, in bytes.
    pub max_room_name: usize,
    /// Largest WebSocket frame payload / stelar TCP frame (header included), in bytes (at
    /// most 1 GiB).
    pub max_frame_size: usize,
    /// Largest message (after reassembly and decompression), in bytes (at most 1 GiB).
    pub max_message_size: usize,
    /// A client's *backlog*: bytes (with a per-frame overhead) still queued for it after its
    /// socket took all it would. A client whose backlog stays above this for
    /// `timeouts.slow_consumer_ms` is disconnected as a slow consumer (WebSocket close 1008
    /// "slow consumer", TCP ERROR frame), and counted. A connection whose queue passes a
    /// quarter of it is not read until the queue drains (its own replies cannot pile up).
    pub max_queued_bytes: usize,
    /// Largest HTTP request head (request line + headers), in bytes.
    pub max_http_head: usize,
    /// Largest HTTP request body (the publish API), in bytes.
    pub max_http_body: usize,
    /// Most connections one user (the id authentication gives a connection) may hold in the
    /// whole process; the next is refused (close 4003 / ERROR "too many connections for this
    /// user"). 0 = unlimited. Read when a connection is given its user, so a reload applies
    /// to the next one.
    pub max_connections_per_user: usize,
}

/// The longest heartbeat interval (one day): an open connection's timer is a 32-bit word of
/// milliseconds (`conn/open.rs`).
const MAX_HEARTBEAT_INTERVAL_MS: u64 = 86_400_000;
/// The largest frame and message size limits (1 GiB).
const MAX_MESSAGE_LIMIT: usize = 1 << 30;
/// The longest heartbeat timeout and slow-consumer allowance (a week): a client's times are
/// kept in milliseconds modulo 2^32 (≈ 49.7 days).
const MAX_CLIENT_WAIT_MS: u64 = 7 * 86_400_000;

/// Heartbeats and timeouts, in milliseconds in the file.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How often the server pings a client (WebSocket ping, TCP PING frame); at most a day.
    pub heartbeat_interval_ms: u64,
    /// A client that has shown no sign of life (any frame) for this long is dropped
    /// (WebSocket close 1001, TCP ERROR frame) and counted; at most a week.
    pub heartbeat_timeout_ms: u64,
    /// A socket that has not completed its WebSocket handshake (or sent a full HTTP request)
    /// within this time is closed.
    pub handshake_timeout_ms: u64,
    /// On shutdown, how long clients get to close before they are cut off.
    pub shutdown_timeout_ms: u64,
    /// How long a client may stay more than `limits.max_queued_bytes` behind before it is
    /// disconnected as a slow consumer. 0 = as soon as it is; at most a week.
    pub slow_consumer_ms: u64,
}

/// Process-wide memory budgets, in bytes, split evenly between shards. See the README
/// ("Limits and what happens at each") for what the server does at each.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Memory {
    /// Frames queued to clients, all clients together. 0 = a quarter of the memory available
    /// to the process (physical memory, or the cgroup's limit if lower). When a shard's share
    /// is full, the clients with the largest queues are disconnected as slow consumers.
    pub output_budget: usize,
    /// Partly received messages, all connections together. 0 = an eighth of the memory
    /// available. When a shard's share is full, the connections holding the most are closed
    /// (WebSocket 1013 "Try Again Later", TCP ERROR).
    pub input_budget: usize,
    /// Per shard: cross-shard messages held back while another shard's inbox is full. Above
    /// half of it the shard stops reading from its clients until the backlog drains; at the
    /// bound further cross-shard messages are dropped and counted (`mesh_overflow`).
    pub mesh_overflow: usize,
}

/// permessage-deflate (RFC 7692).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// Negotiate permessage-deflate when a client offers it.
    pub enabled: bool,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub threshold: usize,
}

/// The standalone relay's client-facing features (DESIGN.md "The standalone relay").
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Relay {
    /// Clients may `publish` to rooms.
    pub publish: bool,
    /// Clients may `publish` only to rooms they are in.
    pub publish_requires_membership: bool,
    /// Clients may `broadcast` to everyone.
    pub broadcast: bool,
    /// Clients may send `direct` messages to a client id.
    pub direct: bool,
    /// Clients may call the `members` ACK for a room they are in (its members' client ids and
    /// user ids; in a cluster, on every node). Off by default: member lists are not for
    /// strangers.
    pub members: bool,
    /// Rooms (patterns, `*` matches any run of characters) whose members are told when
    /// another client joins or leaves: events `member-joined` / `member-left` with
    /// `{"room","id","user"}`. Empty (the default): no such events.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub member_events: Vec<String>,
}

/// Whether clients must authenticate (`auth.mode`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication (stelar's behaviour): every client is anonymous.
    #[default]
    Off,
    /// A token is checked when one is presented with the upgrade request (`Authorization:
    /// Bearer`, `?token=`); clients without one are anonymous.
    Optional,
    /// Every client authenticates (header, query or a first `auth` message within
    /// `auth.timeout_ms`) before anything else it sends is processed.
    Required,
}

/// What a client may do with rooms when its token does not say (`auth.default_rooms`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DefaultRooms {
    /// Without a rooms (publish) claim, any room may be joined (published to).
    #[default]
    Allow,
    /// Without a rooms (publish) claim, no room may be joined (published to).
    Deny,
}

/// Client authentication (JWT) and authorization by claims. See the README, "Running in
/// production": token sources, answers, claims.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    /// `off`, `optional` or `required`.
    pub mode: AuthMode,
    /// How long a client has to authenticate (first `auth` message included), in ms; past it
    /// the connection is closed (WebSocket 4001, TCP ERROR).
    pub timeout_ms: u64,
    /// HMAC secret for HS256/HS384/HS512 tokens (at least 32 bytes).
    pub jwt_secret: Option<String>,
    /// Public key file for RS*/PS*/ES*/EdDSA tokens: a PEM public key, or a JWKS JSON file
    /// (`{"keys":[...]}`, the key picked by the token's `kid`). Re-read on reload.
    pub jwt_public_key: Option<std::path::PathBuf>,
    /// Leeway for `exp` and `nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Required `aud` claim (one of the token's audiences), if set.
    pub jwt_audience: Option<String>,
    /// Required `iss` claim, if set.
    pub jwt_issuer: Option<String>,
    /// Claim listing the rooms a client may join (strings; `*` matches any run of characters).
    pub jwt_rooms_claim: String,
    /// Claim listing the rooms a client may publish to (same patterns).
    pub jwt_publish_claim: String,
    /// Whether a client whose token has no rooms (publish) claim may join (publish to) any
    /// room (`allow`) or none (`deny`). Anonymous clients (`optional` mode) follow it too.
    pub default_rooms: DefaultRooms,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            mode: AuthMode::Off,
            timeout_ms: 10_000,
            jwt_secret: None,
            jwt_public_key: None,
            jwt_leeway_secs: 30,
            jwt_audience: None,
            jwt_issuer: None,
            jwt_rooms_claim: "rooms".to_owned(),
            jwt_publish_claim: "publish".to_owned(),
            default_rooms: DefaultRooms::Allow,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 3000,
            tcp_port: None,
            shards: 0,
            bench_endpoints: false,
            api_key: None,
            api_insecure: false,
            api_keys: Vec::new(),
            api_cors_origins: Vec::new(),
            log: "info".to_owned(),
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            compression: Compression::default(),
            relay: Relay::default(),
            memory: Memory::default(),
            auth: Auth::default(),
            allowed_origins: Vec::new(),
            security: Security::default(),
            rate_limit: RateLimit::default(),
            tls: Tls::default(),
            cluster: Cluster::default(),
            dialects: Vec::new(),
        }
    }
}

impl Default for Memory {
    fn default() -> Self {
        Memory {
            output_budget: 0,
            input_budget: 0,
            mesh_overflow: 64 * 1024 * 1024,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 0,
            max_rooms: 100_000,
            max_rooms_per_client: 50,
            max_room_name: 256,
            max_frame_size: 10 * 1024 * 1024,
            max_message_size: 10 * 1024 * 1024,
            max_queued_bytes: 4 * 1024 * 1024,
            max_http_head: 8 * 1024,
            max_http_body: 1024 * 1024,
            max_connections_per_user: 0,
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            heartbeat_interval_ms: 30_000,
            heartbeat_timeout_ms: 60_000,
            handshake_timeout_ms: 10_000,
            shutdown_timeout_ms: 10_000,
            slow_consumer_ms: 5_000,
        }
    }
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            threshold: 128,
        }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            publish: true,
            publish_requires_membership: false,
            broadcast: true,
            direct: true,
            members: false,
            member_events: Vec::new(),
        }
    }
}

/// A configuration problem, with the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting `{setting}`: {problem}")]
    Invalid {
        /// The setting, as written in the file.
        setting: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl Config {
    /// Reads a TOML file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text over the defaults. [`Config`] also implements `Serialize`:
    /// `toml::to_string_pretty` writes text this reads back to the same `Config`.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: String::new(),
            message: e.to_string(),
        })
    }

    /// The TCP port to bind, if any. `Some(0)` when the WebSocket port is 0 and `tcp_port` is
    /// unset: both ports are then picked at start-up, TCP's as the WebSocket port + 1
    /// (`server::start` binds it next to the WebSocket listener).
    pub fn effective_tcp_port(&self) -> Option<u16> {
        match self.tcp_port {
            Some(0) => None,
            Some(p) => Some(p),
            // Known only once the WebSocket port is bound: still its port + 1.
            None if self.port == 0 => Some(0),
            None => Some(self.port.checked_add(1).unwrap_or(0)),
        }
    }

    /// Every API key the server accepts (`api_key` and `api_keys`); none = the API is off
    /// unless `api_insecure`.
    pub fn all_api_keys(&self) -> impl Iterator<Item = &str> {
        self.api_key
            .iter()
            .chain(&self.api_keys)
            .map(String::as_str)
    }

    /// Heartbeat interval.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.timeouts.heartbeat_interval_ms)
    }
    /// Heartbeat timeout.
    pub fn heartbeat_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.heartbeat_timeout_ms)
    }
    /// Handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.handshake_timeout_ms)
    }
    /// Shutdown drain timeout.
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.timeouts.shutdown_timeout_ms)
    }

    /// `limits.max_connections`, with 0 ("auto") resolved against an open-file limit of
    /// `open_files`: that limit less a reserve of 64 + `open_files` / 64 descriptors.
    pub fn connection_cap(&self, open_files: u64) -> usize {
        if self.limits.max_connections > 0 {
            return self.limits.max_connections;
        }
        let reserve = 64 + open_files / 64;
        usize::try_from(open_files.saturating_sub(reserve))
            .unwrap_or(usize::MAX)
            .max(1)
    }

    /// The output and input budgets in bytes, with 0 ("auto") resolved against `available`
    /// bytes of memory (a quarter and an eighth of it).
    pub fn memory_budgets(&self, available: u64) -> (usize, usize) {
        let auto = |setting: usize, share: u64| {
            if setting > 0 {
                setting
            } else {
                usize::try_from(available / share).unwrap_or(usize::MAX)
            }
        };
        (
            auto(self.memory.output_budget, 4),
            auto(self.memory.input_budget, 8),
        )
    }

    /// The WebSocket origin allow-list: `allowed_origins` (top level) and
    /// `security.allowed_origins` together. Empty = any origin.
    pub fn allowed_origins(&self) -> impl Iterator<Item = &str> {
        self.allowed_origins
            .iter()
            .chain(&self.security.allowed_origins)
            .map(String::as_str)
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(setting: &'static str, problem: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                setting,
                problem: problem.into(),
            })
        }
        if self.shards > crate::hub::rooms::MAX_SHARDS {
            return bad(
                "shards",
                format!("at most {} shards", crate::hub::rooms::MAX_SHARDS),
            );
        }
        if self.port != 0 && self.tcp_port.is_none() && self.port == u16::MAX {
            return bad("tcp_port", "port 65535 has no port + 1; set tcp_port");
        }
        if let Some(t) = self.tcp_port {
            if t != 0 && t == self.port {
                return bad("tcp_port", "must differ from port");
            }
        }
        let mut paths = std::collections::HashSet::new();
        for route in &self.dialects {
            if !route.path.starts_with('/') || route.path.contains('?') {
                return bad(
                    "dialect.path",
                    format!("`{}` is not a request path like /api/ws", route.path),
                );
            }
            if !paths.insert(route.path.as_str()) {
                return bad(
                    "dialect.path",
                    format!("`{}` is given more than one dialect", route.path),
                );
            }
            if route.name.is_empty() {
                return bad(
                    "dialect.name",
                    format!("no dialect named for `{}`", route.path),
                );
            }
            for room in route.default_rooms.iter().flatten() {
                if room.is_empty() || room.len() > self.limits.max_room_name {
                    return bad(
                        "dialect.default_rooms",
                        format!(
                            "`{room}` is not a room name (1 to limits.max_room_name = {} bytes)",
                            self.limits.max_room_name
                        ),
                    );
                }
            }
        }
        for pattern in &self.relay.member_events {
            if pattern.is_empty() {
                return bad("relay.member_events", "an empty pattern matches no room");
            }
        }
        for origin in &self.api_cors_origins {
            let ok = (origin.starts_with("http://") || origin.starts_with("https://"))
                && origin.bytes().all(|b| b.is_ascii_graphic())
                && !origin.ends_with('/');
            if !ok {
                return bad(
                    "api_cors_origins",
                    format!("`{origin}` is not an origin like https://app.example.com[:port]"),
                );
            }
        }
        for key in self.all_api_keys() {
            // Sent in a header: visible ASCII only.
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(
                    if self.api_key.as_deref() == Some(key) {
                        "api_key"
                    } else {
                        "api_keys"
                    },
                    "an API key must be non-empty visible ASCII (no spaces)",
                );
            }
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return bad("log", format!("`{}` is not a log filter: {e}", self.log));
        }
        for origin in self.allowed_origins() {
            if !valid_origin_pattern(origin) {
                return bad(
                    "security.allowed_origins",
                    format!(
                        "`{origin}` is not an origin like https://app.example.com[:port] or \
                         https://*.example.com"
                    ),
                );
            }
        }
        if self.rate_limit.burst > 1_000_000 {
            return bad("rate_limit.burst", "at most 1000000");
        }
        for name in self.rate_limit.events.keys() {
            if name.is_empty() || name.len() > 256 {
                return bad(
                    "rate_limit.events",
                    format!("`{name}` is not an event name"),
                );
            }
        }
        let l = &self.limits;
        if l.max_frame_size < 126 {
            return bad("limits.max_frame_size", "must be at least 126 bytes");
        }
        // A connection's held input is counted in 32 bits (`hub::Client`): 1 GiB is far
        // beyond any message a server should take whole.
        for (name, size) in [
            ("limits.max_frame_size", l.max_frame_size),
            ("limits.max_message_size", l.max_message_size),
        ] {
            if size > MAX_MESSAGE_LIMIT {
                return bad(name, "must be at most 1073741824 (1 GiB)");
            }
        }
        if l.max_message_size < l.max_frame_size.min(125) {
            return bad("limits.max_message_size", "too small");
        }
        if l.max_room_name == 0 {
            return bad("limits.max_room_name", "must be at least 1");
        }
        if l.max_queued_bytes < 64 * 1024 {
            return bad("limits.max_queued_bytes", "must be at least 65536");
        }
        let m = &self.memory;
        let min_budget = 1024 * 1024;
        if m.output_budget != 0 && m.output_budget < min_budget {
            return bad(
                "memory.output_budget",
                "must be 0 (auto) or at least 1048576",
            );
        }
        if m.input_budget != 0 && m.input_budget < min_budget {
            return bad(
                "memory.input_budget",
                "must be 0 (auto) or at least 1048576",
            );
        }
        if m.mesh_overflow < min_budget {
            return bad("memory.mesh_overflow", "must be at least 1048576");
        }
        if l.max_http_head < 1024 {
            return bad("limits.max_http_head", "must be at least 1024");
        }
        let t = &self.timeouts;
        if t.heartbeat_interval_ms == 0 {
            return bad("timeouts.heartbeat_interval_ms", "must be positive");
        }
        if t.heartbeat_interval_ms > MAX_HEARTBEAT_INTERVAL_MS {
            return bad(
                "timeouts.heartbeat_interval_ms",
                "must be at most 86400000 (one day)",
            );
        }
        for (name, ms) in [
            ("timeouts.heartbeat_timeout_ms", t.heartbeat_timeout_ms),
            ("timeouts.slow_consumer_ms", t.slow_consumer_ms),
        ] {
            if ms > MAX_CLIENT_WAIT_MS {
                return bad(name, "must be at most 604800000 (a week)");
            }
        }
        if t.heartbeat_timeout_ms < t.heartbeat_interval_ms {
            return bad(
                "timeouts.heartbeat_timeout_ms",
                "must be at least heartbeat_interval_ms",
            );
        }
        if t.handshake_timeout_ms == 0 {
            return bad("timeouts.handshake_timeout_ms", "must be positive");
        }
        let a = &self.auth;
        if a.timeout_ms == 0 {
            return bad("auth.timeout_ms", "must be positive");
        }
        if let Some(secret) = &a.jwt_secret {
            // RFC 7518 §3.2: an HS256 key of at least the hash's size (256 bits).
            if secret.len() < 32 {
                return bad(
                    "auth.jwt_secret",
                    "must be at least 32 bytes (RFC 7518 §3.2)",
                );
            }
        }
        if a.jwt_leeway_secs > 3600 {
            return bad("auth.jwt_leeway_secs", "at most 3600 seconds");
        }
        if a.jwt_rooms_claim.is_empty() || a.jwt_publish_claim.is_empty() {
            return bad("auth.jwt_rooms_claim", "claim names must not be empty");
        }
        let tls = &self.tls;
        match (&tls.cert, &tls.key) {
            (Some(_), None) => return bad("tls.key", "--tls-cert is set without --tls-key"),
            (None, Some(_)) => return bad("tls.cert", "--tls-key is set without --tls-cert"),
            _ => {}
        }
        if !tls.enabled() {
            if tls.ws_port.is_some() {
                return bad(
                    "tls.ws_port",
                    "--tls-ws-port needs --tls-cert and --tls-key",
                );
            }
            if tls.tcp_port.is_some() {
                return bad(
                    "tls.tcp_port",
                    "--tls-tcp-port needs --tls-cert and --tls-key",
                );
            }
        }
        for (setting, p) in [("tls.ws_port", tls.ws_port), ("tls.tcp_port", tls.tcp_port)] {
            if let Some(p) = p {
                if p != 0 && (p == self.port || Some(p) == self.tcp_port) {
                    return bad(setting, format!("port {p} is already a plain port"));
                }
            }
        }
        if let (Some(a), Some(b)) = (tls.ws_port, tls.tcp_port) {
            if a != 0 && a == b {
                return bad("tls.tcp_port", "must differ from tls.ws_port");
            }
        }
        let cl = &self.cluster;
        if let Some(url) = &cl.redis {
            if !url.starts_with("redis://") {
                return bad(
                    "cluster.redis",
                    "not a redis:// URL (redis://[user:password@]host:port[/db]; TLS to Redis \
                     is not supported)",
                );
            }
            if let Err(e) = fred::types::config::Config::from_url(url) {
                return bad("cluster.redis", format!("not a usable Redis URL: {e}"));
            }
        }
        if let Some(id) = &cl.node_id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                return bad(
                    "cluster.node_id",
                    "1 to 64 printable ASCII characters without spaces",
                );
            }
        }
        if cl.prefix.is_empty() || cl.prefix.len() > 64 || cl.prefix.contains(char::is_whitespace) {
            return bad("cluster.prefix", "1 to 64 characters without spaces");
        }
        match cl.compat.as_deref() {
            None | Some("ignis") => {}
            Some(other) => {
                return bad(
                    "cluster.compat",
                    format!("unknown {other:?}; the one supported is \"ignis\""),
                )
            }
        }
        if cl.queue_bytes < 64 << 10 {
            return bad("cluster.queue_bytes", "at least 65536");
        }
        if !(300..=3_600_000).contains(&cl.presence_ttl_ms) {
            return bad("cluster.presence_ttl_ms", "between 300 and 3600000");
        }
        if !(100..=600_000).contains(&cl.reconnect_max_ms) {
            return bad("cluster.reconnect_max_ms", "between 100 and 600000");
        }
        Ok(())
    }
}

/// `url` with its password replaced, for logs and `check-config`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => format!("{}***{}", &url[..s + 3], &url[at..]),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
        assert_eq!(Config::default().effective_tcp_port(), Some(3001));
    }

    #[test]
    fn the_connection_cap_keeps_descriptors_in_reserve() {
        let mut c = Config::default();
        assert_eq!(c.connection_cap(20_000), 20_000 - 64 - 312);
        assert_eq!(c.connection_cap(1024), 1024 - 80);
        assert_eq!(c.connection_cap(10), 1);
        c.limits.max_connections = 7;
        assert_eq!(c.connection_cap(20_000), 7);
    }

    #[test]
    fn tcp_port_rules() {
        let mut c = Config {
            port: 0,
            ..Config::default()
        };
        assert_eq!(c.effective_tcp_port(), Some(0));
        c.tcp_port = Some(0);
        assert_eq!(c.effective_tcp_port(), None);
        c.port = 4000;
        c.tcp_port = Some(4000);
        assert!(c.validate().is_err());
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let c = Config::from_toml(
            "port = 4000\n[limits]\nmax_rooms = 5\n[timeouts]\nheartbeat_interval_ms = 1000\n",
        )
        .unwrap();
        assert_eq!(c.port, 4000);
        assert_eq!(c.limits.max_rooms, 5);
        assert_eq!(c.limits.max_rooms_per_client, 50);
        assert_eq!(c.timeouts.heartbeat_interval_ms, 1000);
        let err = Config::from_toml("prot = 1").unwrap_err().to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn toml_round_trip() {
        // The defaults (`tcp_port` and `api_key` unset, which TOML leaves out)...
        let c = Config::default();
        let text = toml::to_string_pretty(&c).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        // ...and a value other than the default everywhere (with no API key: `check-config`
        // prints a key redacted, so that output does not read back to the same key).
        let c = Config {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 4000,
            tcp_port: Some(0),
            shards: 3,
            bench_endpoints: true,
            api_key: None,
            api_insecure: true,
            api_keys: Vec::new(),
            api_cors_origins: vec!["https://app.example".to_owned()],
            log: "shardcast=debug".to_owned(),
            limits: Limits {
                max_connections: 1,
                max_rooms: 2,
                max_rooms_per_client: 3,
                max_room_name: 4,
                max_frame_size: 5000,
                max_message_size: 6000,
                max_queued_bytes: 70_000,
                max_http_head: 8000,
                max_http_body: 9000,
                max_connections_per_user: 11,
            },
            timeouts: Timeouts {
                heartbeat_interval_ms: 10,
                heartbeat_timeout_ms: 20,
                handshake_timeout_ms: 30,
                shutdown_timeout_ms: 40,
                slow_consumer_ms: 45,
            },
            compression: Compression {
                enabled: false,
                threshold: 50,
            },
            relay: Relay {
                publish: false,
                publish_requires_membership: true,
                broadcast: false,
                direct: false,
                members: true,
                member_events: vec!["lobby*".to_owned()],
            },
            memory: Memory {
                output_budget: 1 << 21,
                input_budget: 1 << 22,
                mesh_overflow: 1 << 23,
            },
            auth: Auth {
                mode: AuthMode::Required,
                timeout_ms: 55,
                jwt_secret: None,
                jwt_public_key: Some("/etc/keys.jwks".into()),
                jwt_leeway_secs: 5,
                jwt_audience: Some("aud".to_owned()),
                jwt_issuer: Some("iss".to_owned()),
                jwt_rooms_claim: "r".to_owned(),
                jwt_publish_claim: "p".to_owned(),
                default_rooms: DefaultRooms::Deny,
            },
            allowed_origins: Vec::new(),
            security: Security {
                allowed_origins: vec!["https://*.example.com".to_owned()],
                require_origin: true,
                max_connections_per_ip: 9,
                trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
                handshake_rate_per_ip: Some(Rate {
                    count: 5,
                    period_ms: 60_000,
                }),
            },
            rate_limit: RateLimit {
                rate: Some(Rate {
                    count: 100,
                    period_ms: 1000,
                }),
                burst: 7,
                strikes: 3,
                events: [(
                    "publish".to_owned(),
                    Rate {
                        count: 50,
                        period_ms: 1000,
                    },
                )]
                .into(),
            },
            tls: Tls {
                cert: Some("/etc/shardcast/cert.pem".into()),
                key: Some("/etc/shardcast/key.pem".into()),
                ws_port: Some(8443),
                tcp_port: Some(8444),
            },
            cluster: Cluster {
                redis: Some("redis://10.0.0.5:6379".into()),
                node_id: Some("eu-1".into()),
                prefix: "sc".into(),
                compat: Some("ignis".into()),
                queue_bytes: 1 << 20,
                presence_ttl_ms: 3000,
                reconnect_max_ms: 1000,
            },
            dialects: vec![
                DialectRoute {
                    path: "/api/ws".into(),
                    name: "stellarstack".into(),
                    default_rooms: None,
                },
                DialectRoute {
                    path: "/ws".into(),
                    name: "ignis".into(),
                    default_rooms: Some(vec!["a".into(), "b".into()]),
                },
            ],
        };
        let text = toml::to_string_pretty(&c).unwrap();
        assert_eq!(Config::from_toml(&text).unwrap(), c, "{text}");
        assert!(text.contains("[relay]\npublish = false\n"), "{text}");
    }

    #[test]
    fn origins_are_accepted_at_the_top_level_and_under_security() {
        let c = Config::from_toml(
            "allowed_origins = [\"https://a.example\"]\n[security]\nallowed_origins = [\"https://*.b.example\"]\n",
        )
        .unwrap();
        c.validate().unwrap();
        let all: Vec<&str> = c.allowed_origins().collect();
        assert_eq!(all, ["https://a.example", "https://*.b.example"]);
        let c = Config::from_toml("allowed_origins = [\"app.example\"]").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("allowed_origins"), "{err}");
    }

    #[test]
    fn origin_patterns() {
        let p = "https://*.example.com";
        assert!(origin_matches(p, "https://a.example.com"));
        assert!(origin_matches(p, "https://A.b.Example.com"));
        assert!(!origin_matches(p, "https://example.com"));
        assert!(!origin_matches(p, "https://.example.com"));
        assert!(!origin_matches(p, "http://a.example.com"));
        assert!(!origin_matches(p, "https://a.example.com.evil.net"));
        assert!(!origin_matches(p, "https://evil.net/x.example.com"));
        assert!(!origin_matches(p, "https://a.example.com:8443"));
        assert!(origin_matches(
            "https://*.example.com:8443",
            "https://a.example.com:8443"
        ));
        assert!(origin_matches(
            "https://app.example.com",
            "https://APP.example.com"
        ));
        assert!(!origin_matches(
            "https://app.example.com",
            "https://app.example.co"
        ));
    }

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "50/s".parse().unwrap();
        assert_eq!((r.count, r.period_ms), (50, 1000));
        let r: Rate = "30/m".parse().unwrap();
        assert_eq!((r.count, r.period_ms), (30, 60_000));
        assert_eq!(r.to_string(), "30/m");
        for bad in ["0/s", "10", "10/h", "x/s", "-1/s", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
        let c = Config::from_toml(
            "[rate_limit]\nrate = \"10/s\"\n[rate_limit.events]\npublish = \"5/m\"\n",
        )
        .unwrap();
        assert_eq!(c.rate_limit.effective_burst(), 10);
        assert_eq!(c.rate_limit.events["publish"].period_ms, 60_000);
        let err = Config::from_toml("[rate_limit]\nrate = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("fast"), "{err}");
    }

    #[test]
    fn validation_names_the_setting() {
        let mut c = Config::default();
        c.timeouts.heartbeat_timeout_ms = 10;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("timeouts.heartbeat_timeout_ms"), "{err}");
        let mut c = Config::default();
        c.timeouts.heartbeat_interval_ms = MAX_HEARTBEAT_INTERVAL_MS + 1;
        c.timeouts.heartbeat_timeout_ms = 2 * MAX_HEARTBEAT_INTERVAL_MS;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("timeouts.heartbeat_interval_ms"), "{err}");
        c.timeouts.heartbeat_interval_ms = MAX_HEARTBEAT_INTERVAL_MS;
        c.validate().unwrap();
        let mut big = Config::default();
        big.limits.max_message_size = MAX_MESSAGE_LIMIT + 1;
        let err = big.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_message_size"), "{err}");
        c.timeouts.heartbeat_timeout_ms = MAX_CLIENT_WAIT_MS + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("timeouts.heartbeat_timeout_ms"), "{err}");
        c.timeouts.heartbeat_timeout_ms = MAX_CLIENT_WAIT_MS;
        c.timeouts.slow_consumer_ms = MAX_CLIENT_WAIT_MS + 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("timeouts.slow_consumer_ms"), "{err}");
        let c = Config {
            log: "shardcast=loud".into(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.starts_with("invalid setting `log`"), "{err}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact_url("redis://h:1"), "redis://h:1");
        assert_eq!(redact_url("redis://:pw@h:1"), "redis://:***@h:1");
        assert_eq!(redact_url("redis://u:pw@h:1/0"), "redis://u:***@h:1/0");
    }

    #[test]
    fn cluster_settings_are_checked() {
        let check = |f: &dyn Fn(&mut Cluster)| {
            let mut c = Config::default();
            f(&mut c.cluster);
            c.validate().err().map(|e| e.to_string())
        };
        assert_eq!(
            check(&|c| c.redis = Some("redis://127.0.0.1:6379".into())),
            None
        );
        for (f, setting) in [
            (
                &(|c: &mut Cluster| c.redis = Some("http://h".into())) as &dyn Fn(&mut Cluster),
                "cluster.redis",
            ),
            (
                &|c: &mut Cluster| c.redis = Some("redis://h:port".into()),
                "cluster.redis",
            ),
            (
                &|c: &mut Cluster| c.node_id = Some("a b".into()),
                "cluster.node_id",
            ),
            (
                &|c: &mut Cluster| c.prefix = String::new(),
                "cluster.prefix",
            ),
            (
                &|c: &mut Cluster| c.compat = Some("socketio".into()),
                "cluster.compat",
            ),
            (&|c: &mut Cluster| c.queue_bytes = 10, "cluster.queue_bytes"),
            (
                &|c: &mut Cluster| c.presence_ttl_ms = 1,
                "cluster.presence_ttl_ms",
            ),
            (
                &|c: &mut Cluster| c.reconnect_max_ms = 1,
                "cluster.reconnect_max_ms",
            ),
        ] {
            let err = check(f).unwrap_or_default();
            assert!(err.contains(setting), "{setting}: {err}");
        }
    }

    #[test]
    fn tls_settings_come_in_pairs_and_name_the_flag() {
        let mut c = Config::default();
        c.tls.cert = Some("c.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("tls.key") && err.contains("--tls-key"),
            "{err}"
        );
        c.tls.cert = None;
        c.tls.key = Some("k.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--tls-cert"), "{err}");
        let mut c = Config::default();
        c.tls.tcp_port = Some(9000);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("--tls-tcp-port"), "{err}");
        c.tls.cert = Some("c.pem".into());
        c.tls.key = Some("k.pem".into());
        assert!(c.validate().is_ok());
        assert!(!c.tls.on_main_ports());
        c.tls.tcp_port = Some(c.port);
        assert!(
            c.validate().is_err(),
            "a plain port cannot be a TLS port too"
        );
        let from_file = Config::from_toml("[tls]\ncert = \"a.pem\"\nkey = \"b.pem\"\n").unwrap();
        assert!(from_file.tls.on_main_ports());
    }
}
