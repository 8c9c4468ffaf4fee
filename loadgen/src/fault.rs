//! Everything that can go wrong on a load-generating connection, one variant per kind, so
//! that the report counts failures by kind instead of guessing (issue: "errors and
//! disconnects counted by kind").
//!
//! [`Fault`] is the connection layer's one error enum. Socket errors are classified by
//! [`Fault::from_io`]; codec errors arrive as [`crate::wire::WireError`] and map here through
//! `From`. [`Fault::label`] is the counter label used in reports; [`Fault::ALL`] fixes the
//! order of the per-kind counters.

use std::io;

/// One kind of failure or disconnect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Fault {
    /// `ECONNREFUSED`: nothing listens, or the backlog overflowed.
    #[error("connection refused")]
    ConnectRefused,
    /// The TCP connect or the whole handshake took longer than `--connect-timeout`.
    #[error("connect/handshake timed out")]
    ConnectTimeout,
    /// `EADDRNOTAVAIL` / `EADDRINUSE`: the source address has no free port (use `--source`).
    #[error("no free source port (add source addresses with --source)")]
    SourcePortsExhausted,
    /// `EMFILE` / `ENFILE`: the open-file limit (use `--procs`).
    #[error("too many open files (use --procs)")]
    TooManyOpenFiles,
    /// Any other error while connecting.
    #[error("connect failed")]
    ConnectFailed,
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake failed")]
    TlsHandshake,
    /// The server answered the upgrade with a status other than 101.
    #[error("upgrade refused (non-101 status)")]
    UpgradeRefused,
    /// The 101 response broke RFC 6455 (accept key, headers).
    #[error("invalid upgrade response")]
    UpgradeInvalid,
    /// A join was not confirmed with `joined-room` in time.
    #[error("join not confirmed")]
    JoinTimeout,
    /// A dialect's authentication was refused (`auth_error`, an error or a close before
    /// the confirmation).
    #[error("authentication refused")]
    AuthRejected,
    /// The server sent a WebSocket close frame (or a stelar DISCONNECT) before we closed.
    #[error("closed by the server")]
    ClosedByServer,
    /// The server closed the socket without a close frame.
    #[error("server closed the socket")]
    ServerEof,
    /// `ECONNRESET` / `EPIPE`.
    #[error("connection reset")]
    Reset,
    /// Any other socket error.
    #[error("socket error")]
    Io,
    /// The server's WebSocket frames broke RFC 6455.
    #[error("WebSocket protocol violation by the server")]
    WsProtocol,
    /// The server's stelar TCP frames were malformed.
    #[error("stelar protocol violation by the server")]
    StelarProtocol,
    /// A `server:error` event or a stelar ERROR frame.
    #[error("server reported an error")]
    ServerError,
    /// A message that carried no stamp and that the scenario did not expect.
    #[error("unexpected message")]
    Unexpected,
}

impl Fault {
    /// Every kind, in counter order.
    pub const ALL: [Fault; 18] = [
        Fault::ConnectRefused,
        Fault::ConnectTimeout,
        Fault::SourcePortsExhausted,
        Fault::TooManyOpenFiles,
        Fault::ConnectFailed,
        Fault::TlsHandshake,
        Fault::UpgradeRefused,
        Fault::UpgradeInvalid,
        Fault::JoinTimeout,
        Fault::AuthRejected,
        Fault::ClosedByServer,
        Fault::ServerEof,
        Fault::Reset,
        Fault::Io,
        Fault::WsProtocol,
        Fault::StelarProtocol,
        Fault::ServerError,
        Fault::Unexpected,
    ];
    /// Number of kinds.
    pub const COUNT: usize = Self::ALL.len();

    /// Position in [`Fault::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short static counter label.
    pub const fn label(self) -> &'static str {
        match self {
            Fault::ConnectRefused => "connect_refused",
            Fault::ConnectTimeout => "connect_timeout",
            Fault::SourcePortsExhausted => "source_ports_exhausted",
            Fault::TooManyOpenFiles => "too_many_open_files",
            Fault::ConnectFailed => "connect_failed",
            Fault::TlsHandshake => "tls_handshake",
            Fault::UpgradeRefused => "upgrade_refused",
            Fault::UpgradeInvalid => "upgrade_invalid",
            Fault::JoinTimeout => "join_timeout",
            Fault::AuthRejected => "auth_rejected",
            Fault::ClosedByServer => "closed_by_server",
            Fault::ServerEof => "server_eof",
            Fault::Reset => "reset",
            Fault::Io => "io_error",
            Fault::WsProtocol => "ws_protocol",
            Fault::StelarProtocol => "stelar_protocol",
            Fault::ServerError => "server_error",
            Fault::Unexpected => "unexpected_message",
        }
    }

    /// Whether this kind happens while establishing a connection (vs. once open).
    pub const fn is_connect_phase(self) -> bool {
        matches!(
            self,
            Fault::ConnectRefused
                | Fault::ConnectTimeout
                | Fault::SourcePortsExhausted
                | Fault::TooManyOpenFiles
                | Fault::ConnectFailed
                | Fault::TlsHandshake
                | Fault::UpgradeRefused
                | Fault::UpgradeInvalid
        )
    }

    /// Classifies a socket error. `connecting`: it happened before the handshake completed.
    pub fn from_io(e: &io::Error, connecting: bool) -> Fault {
        match e.raw_os_error() {
            Some(libc::ECONNREFUSED) => Fault::ConnectRefused,
            Some(libc::ETIMEDOUT) if connecting => Fault::ConnectTimeout,
            Some(libc::EADDRNOTAVAIL | libc::EADDRINUSE) => Fault::SourcePortsExhausted,
            Some(libc::EMFILE | libc::ENFILE) => Fault::TooManyOpenFiles,
            Some(libc::ECONNRESET | libc::EPIPE) => Fault::Reset,
            _ if e.kind() == io::ErrorKind::TimedOut => Fault::ConnectTimeout,
            _ if connecting => Fault::ConnectFailed,
            _ => Fault::Io,
        }
    }
}

/// Per-kind counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts(pub [u64; Fault::COUNT]);

impl FaultCounts {
    /// Counts one.
    #[inline]
    pub fn add(&mut self, f: Fault) {
        self.0[f.index()] += 1;
    }

    /// Adds another set.
    pub fn merge(&mut self, o: &FaultCounts) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a += b;
        }
    }

    /// Total of every kind.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// The non-zero counters, by label.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, u64> {
        Fault::ALL
            .iter()
            .zip(self.0.iter())
            .filter(|(_, &n)| n > 0)
            .map(|(f, &n)| (f.label().to_string(), n))
            .collect()
    }

    /// Rebuilds counters from a label map (unknown labels are ignored).
    pub fn from_map(map: &std::collections::BTreeMap<String, u64>) -> FaultCounts {
        let mut c = FaultCounts::default();
        for f in Fault::ALL {
            if let Some(n) = map.get(f.label()) {
                c.0[f.index()] = *n;
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_in_index_order_and_labels_unique() {
        for (i, f) in Fault::ALL.iter().enumerate() {
            assert_eq!(f.index(), i);
        }
        let mut labels: Vec<_> = Fault::ALL.iter().map(|f| f.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Fault::COUNT);
    }

    #[test]
    fn io_classification() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert_eq!(
            Fault::from_io(&e(libc::ECONNREFUSED), true),
            Fault::ConnectRefused
        );
        assert_eq!(
            Fault::from_io(&e(libc::EADDRNOTAVAIL), true),
            Fault::SourcePortsExhausted
        );
        assert_eq!(
            Fault::from_io(&e(libc::EMFILE), true),
            Fault::TooManyOpenFiles
        );
        assert_eq!(Fault::from_io(&e(libc::ECONNRESET), false), Fault::Reset);
        assert_eq!(Fault::from_io(&e(libc::EIO), true), Fault::ConnectFailed);
        assert_eq!(Fault::from_io(&e(libc::EIO), false), Fault::Io);
    }

    #[test]
    fn map_round_trip() {
        let mut c = FaultCounts::default();
        c.add(Fault::Reset);
        c.add(Fault::Reset);
        c.add(Fault::ServerError);
        let m = c.to_map();
        assert_eq!(m.len(), 2);
        assert_eq!(FaultCounts::from_map(&m), c);
        assert_eq!(c.total(), 3);
    }
}
