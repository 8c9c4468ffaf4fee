//! Server configuration: defaults, the TOML file, and validation.
//!
//! Precedence (lowest first): built-in defaults, the `--config` TOML file, environment
//! variables, command-line flags. The binary (`main.rs`) maps flags and environment onto
//! [`Config`]; this module owns the defaults, the file format and the checks, so an
//! embedding application can build a `Config` the same way.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Everything the server can be told. Field docs are the reference for the TOML file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
    /// When set, the HTTP API (`/api/*`) requires `Authorization: Bearer KEY` or `X-API-Key`.
    pub api_key: Option<String>,
    /// Connection and message limits.
    pub limits: Limits,
    /// Heartbeats and timeouts.
    pub timeouts: Timeouts,
    /// permessage-deflate.
    pub compression: Compression,
    /// What the standalone relay lets clients do.
    pub relay: Relay,
}

/// Connection and message limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most simultaneous clients in the process (WebSocket + TCP). 0 = unlimited.
    pub max_connections: usize,
    /// Most rooms in the process. New rooms beyond it are refused.
    pub max_rooms: usize,
    /// Most rooms one client may be in.
    pub max_rooms_per_client: usize,
    /// Longest room name, in bytes.
    pub max_room_name: usize,
    /// Largest WebSocket frame payload / stelar TCP frame (header included), in bytes.
    pub max_frame_size: usize,
    /// Largest message (after reassembly and decompression), in bytes.
    pub max_message_size: usize,
    /// Bytes queued for one client beyond which it is disconnected as a slow consumer
    /// (WebSocket close 1008 "slow consumer", TCP ERROR frame), and counted.
    pub max_queued_bytes: usize,
    /// Largest HTTP request head (request line + headers), in bytes.
    pub max_http_head: usize,
    /// Largest HTTP request body (the publish API), in bytes.
    pub max_http_body: usize,
}

/// Heartbeats and timeouts, in milliseconds in the file.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// How often the server pings a client (WebSocket ping, TCP PING frame).
    pub heartbeat_interval_ms: u64,
    /// A client that has shown no sign of life (any frame) for this long is dropped
    /// (WebSocket close 1001, TCP ERROR frame) and counted.
    pub heartbeat_timeout_ms: u64,
    /// A socket that has not completed its WebSocket handshake (or sent a full HTTP request)
    /// within this time is closed.
    pub handshake_timeout_ms: u64,
    /// On shutdown, how long clients get to close before they are cut off.
    pub shutdown_timeout_ms: u64,
}

/// permessage-deflate (RFC 7692).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Compression {
    /// Negotiate permessage-deflate when a client offers it.
    pub enabled: bool,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub threshold: usize,
}

/// The standalone relay's client-facing features (DESIGN.md "The standalone relay").
#[derive(Clone, Debug, Deserialize, PartialEq)]
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
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            compression: Compression::default(),
            relay: Relay::default(),
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
            max_queued_bytes: 16 * 1024 * 1024,
            max_http_head: 8 * 1024,
            max_http_body: 1024 * 1024,
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

    /// Parses TOML text over the defaults.
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
        let l = &self.limits;
        if l.max_frame_size < 126 {
            return bad("limits.max_frame_size", "must be at least 126 bytes");
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
        if l.max_http_head < 1024 {
            return bad("limits.max_http_head", "must be at least 1024");
        }
        let t = &self.timeouts;
        if t.heartbeat_interval_ms == 0 {
            return bad("timeouts.heartbeat_interval_ms", "must be positive");
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
        Ok(())
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
    fn validation_names_the_setting() {
        let mut c = Config::default();
        c.timeouts.heartbeat_timeout_ms = 10;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("timeouts.heartbeat_timeout_ms"), "{err}");
    }
}
