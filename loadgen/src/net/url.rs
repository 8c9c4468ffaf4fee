//! Target URLs: `ws://host:port/path`, `wss://…`, `tcp://host:port`, `tcp+tls://host:port`.
//!
//! The scheme picks the protocol (issue: `ws`, `wss`, `tcp`, `tcp+tls`). The host is
//! resolved once, when the URL is parsed, so a run never waits on DNS. Ports default to 80
//! and 443 for WebSocket; stelar TCP URLs must name theirs.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// The protocol of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// WebSocket over TCP.
    Ws,
    /// WebSocket over TLS.
    Wss,
    /// stelar binary TCP.
    Tcp,
    /// stelar binary TCP over TLS.
    TcpTls,
}

impl Scheme {
    /// Whether the transport is WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, Scheme::Ws | Scheme::Wss)
    }

    /// Whether TLS wraps the connection.
    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Wss | Scheme::TcpTls)
    }

    /// The scheme as written in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Tcp => "tcp",
            Scheme::TcpTls => "tcp+tls",
        }
    }
}

/// A parsed and resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// Protocol.
    pub scheme: Scheme,
    /// Host as written (for `Host:` and TLS server names).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Request target for WebSocket (`/path?query`); `None` when the URL had no path, so a
    /// scenario may choose one (raw targets default to `/echo` or `/broadcast`).
    pub path: Option<String>,
    /// Resolved address.
    pub addr: SocketAddr,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`.
    #[error("missing scheme: expected ws://, wss://, tcp:// or tcp+tls://")]
    MissingScheme,
    /// A scheme other than the four.
    #[error("unsupported scheme {0:?}: expected ws, wss, tcp or tcp+tls")]
    Scheme(String),
    /// No host.
    #[error("missing host")]
    MissingHost,
    /// Port missing (TCP) or not a number.
    #[error("invalid or missing port")]
    Port,
    /// The host did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// A path on a stelar TCP URL.
    #[error("stelar TCP URLs take no path")]
    TcpPath,
}

impl FromStr for TargetUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<TargetUrl, UrlError> {
        let (scheme, rest) = s.split_once("://").ok_or(UrlError::MissingScheme)?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => Scheme::Ws,
            "wss" | "https" => Scheme::Wss,
            "tcp" => Scheme::Tcp,
            "tcp+tls" | "tcps" => Scheme::TcpTls,
            other => return Err(UrlError::Scheme(other.to_string())),
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => {
                let p = &rest[i..];
                let p = if p.starts_with('?') {
                    format!("/{p}")
                } else {
                    p.to_string()
                };
                (&rest[..i], Some(p))
            }
            None => (rest, None),
        };
        if !scheme.is_ws() && path.as_deref().is_some_and(|p| p != "/") {
            return Err(UrlError::TcpPath);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(UrlError::MissingHost)?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::MissingHost);
        }
        let port = match (port, scheme) {
            (Some(p), _) => p.parse::<u16>().map_err(|_| UrlError::Port)?,
            (None, Scheme::Ws) => 80,
            (None, Scheme::Wss) => 443,
            (None, _) => return Err(UrlError::Port),
        };
        let addr = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| UrlError::Resolve(host.clone()))?;
        Ok(TargetUrl {
            scheme,
            host,
            port,
            path: if scheme.is_ws() { path } else { None },
            addr,
        })
    }
}

impl TargetUrl {
    /// `host:port` as sent in `Host:`.
    pub fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.host_header(),
            self.path.as_deref().unwrap_or("")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_four_schemes() {
        let u: TargetUrl = "ws://127.0.0.1:3000/echo?x=1".parse().unwrap();
        assert_eq!(
            (u.scheme, u.port, u.path.as_deref()),
            (Scheme::Ws, 3000, Some("/echo?x=1"))
        );
        assert_eq!(u.host_header(), "127.0.0.1:3000");
        let u: TargetUrl = "wss://localhost".parse().unwrap();
        assert_eq!((u.scheme, u.port, u.path), (Scheme::Wss, 443, None));
        let u: TargetUrl = "tcp://127.0.0.1:3001".parse().unwrap();
        assert_eq!((u.scheme, u.port), (Scheme::Tcp, 3001));
        let u: TargetUrl = "tcp+tls://127.0.0.1:3001/".parse().unwrap();
        assert!(u.scheme.is_tls() && !u.scheme.is_ws());
        let u: TargetUrl = "ws://[::1]:9/".parse().unwrap();
        assert_eq!(u.host_header(), "[::1]:9");
        assert_eq!(u.to_string(), "ws://[::1]:9/");
    }

    #[test]
    fn clear_errors() {
        assert_eq!(
            "127.0.0.1:3000".parse::<TargetUrl>(),
            Err(UrlError::MissingScheme)
        );
        assert_eq!(
            "http2://a:1".parse::<TargetUrl>(),
            Err(UrlError::Scheme("http2".into()))
        );
        assert_eq!("tcp://127.0.0.1".parse::<TargetUrl>(), Err(UrlError::Port));
        assert_eq!(
            "ws://127.0.0.1:99999".parse::<TargetUrl>(),
            Err(UrlError::Port)
        );
        assert_eq!("ws://:80".parse::<TargetUrl>(), Err(UrlError::MissingHost));
        assert_eq!(
            "tcp://127.0.0.1:1/x".parse::<TargetUrl>(),
            Err(UrlError::TcpPath)
        );
        assert!(matches!(
            "ws://no-such-host.invalid:1".parse::<TargetUrl>(),
            Err(UrlError::Resolve(_))
        ));
    }
}
