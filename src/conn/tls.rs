//! TLS (rustls, server side): the acceptor configuration that reloads on SIGHUP, the
//! handshake, and the record layer under [`super::Io`].
//!
//! A TLS connection is a plain [`super::Io`] with a sans-IO `rustls::ServerConnection` in it:
//! ciphertext is read from the socket (through the shard's ring), is fed to rustls, and the
//! plaintext is appended to the connection's read buffer where plain bytes would go; the write
//! queue's frames are handed to rustls' plaintext writer as one vectored write (rustls packs
//! them into full-size records) and the records leave in one call (`outq::send_iov`). So the
//! codecs, `Drive`, the budgets and the slow-consumer rule are the same for plain and TLS
//! connections; a plain connection pays one `Option` test per read and per flush.
//!
//! Bounds per connection: rustls holds at most [`TLS_BUFFER`] of encrypted output (frames
//! stay in the write queue, and in the output budget, until rustls takes them), one record of
//! input being reassembled (handshake messages up to 64 KiB) and 16 KiB of decrypted input,
//! which is moved to the read buffer (and the input budget) after every read.
//!
//! The handshake runs on the shard like any read: a client that is slow or silent costs a
//! pending read and is closed by the handshake timeout (counted `timeout`).

use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use arc_swap::ArcSwap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use super::{Io, Shared};
use crate::config::{Config, Tls as TlsConfig};
use crate::hub::client::Client;
use crate::hub::Hub;
use crate::reload::{Commit, Reloadable};
use crate::stats::Counters;

/// Most encrypted output rustls holds for one connection (and most plaintext it takes
/// before the handshake completes).
pub(crate) const TLS_BUFFER: usize = 64 * 1024;

/// The server's TLS configuration, shared by every shard and swapped whole on reload: new
/// connections take the current one; open connections keep the one they started with.
pub(crate) struct TlsAcceptor {
    current: Arc<ArcSwap<ServerConfig>>,
}

impl TlsAcceptor {
    /// Reads the certificate and key named by `tls` (both set: `Config::validate`).
    pub(crate) fn load(tls: &TlsConfig) -> Result<TlsAcceptor, String> {
        let config = server_config(tls)?;
        Ok(TlsAcceptor {
            current: Arc::new(ArcSwap::from(config)),
        })
    }

    /// The configuration a new connection uses.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }
}

impl Reloadable for TlsAcceptor {
    fn name(&self) -> &'static str {
        "tls"
    }

    fn prepare(&self, new: &Config) -> Result<Commit, String> {
        if !new.tls.enabled() {
            return Err(
                "TLS cannot be turned off by a reload (the ports stay as they are); keep \
                 tls.cert and tls.key, or restart"
                    .into(),
            );
        }
        let config = server_config(&new.tls)?;
        let current = self.current.clone();
        let cert = new.tls.cert.clone().unwrap_or_default();
        Ok(Box::new(move || {
            current.store(config);
            tracing::info!(cert = %cert.display(), "TLS certificate reloaded; new connections use it");
        }))
    }
}

/// Builds the rustls configuration: TLS 1.2 and 1.3 only, the `ring` provider (no C
/// toolchain beyond what `ring` needs; the load generator uses the same one), no client
/// certificates.
fn server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, String> {
    let (Some(cert_path), Some(key_path)) = (&tls.cert, &tls.key) else {
        return Err("tls.cert and tls.key must both be set".into());
    };
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "TLS certificate {} and key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    // Session resumption is served from a small per-process cache (rustls' default); no
    // ALPN: the WebSocket port speaks HTTP/1.1 only, which is what a client assumes without.
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read TLS certificate file {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "TLS certificate file {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate file {} holds no CERTIFICATE block",
            path.display()
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path)
        .map_err(|e| format!("cannot read TLS key file {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => format!(
            "TLS key file {} holds no PRIVATE KEY block (PKCS#8, RSA or EC)",
            path.display()
        ),
        e => format!("TLS key file {} is not valid PEM: {e}", path.display()),
    })
}

/// A connection's TLS session.
pub(crate) struct TlsIo {
    conn: rustls::ServerConnection,
    /// The peer sent close_notify: no more input.
    closed: bool,
}

impl TlsIo {
    pub(crate) fn new(config: Arc<ServerConfig>) -> io::Result<TlsIo> {
        let mut conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        conn.set_buffer_limit(Some(TLS_BUFFER));
        Ok(TlsIo {
            conn,
            closed: false,
        })
    }
}

/// Non-blocking writes straight to the socket (`outq::send_iov`), so the records rustls holds
/// leave in one call.
struct FdWriter(RawFd);

impl Write for FdWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        crate::hub::outq::send_iov(self.0, bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Io {
    /// Sends close_notify if the socket takes it (best effort: the socket closes next).
    pub(super) fn close_tls(&mut self) {
        if let Some(t) = self.tls.as_deref_mut() {
            t.conn.send_close_notify();
            let _ = t.conn.write_tls(&mut FdWriter(self.fd));
        }
    }

    /// [`Io::poll_fill`] for TLS: reads ciphertext once, decrypts it into `rbuf`. `Ok(n)` is
    /// the ciphertext read (`rbuf` may not have grown: a handshake message, a partial
    /// record); `Ok(0)` is the end of the stream (EOF or close_notify).
    pub(super) fn poll_fill_tls(
        &mut self,
        cx: &mut TaskContext<'_>,
        shared: &Shared,
    ) -> Poll<io::Result<usize>> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        if tls.closed {
            return Poll::Ready(Ok(0));
        }
        let cipher = match self.poll_recv_owned(cx) {
            Poll::Ready(Ok(b)) => b,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = cipher.len();
        if n == 0 {
            return Poll::Ready(Ok(0));
        }
        let Some(tls) = self.tls.as_deref_mut() else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        Counters::add(&shared.hub.counters.bytes_received, n as u64);
        let mut input = &cipher[..];
        let mut got_plaintext = false;
        while !input.is_empty() {
            // rustls takes up to one buffer's worth per call.
            match tls.conn.read_tls(&mut input) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::InvalidData.into())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            let state = match tls.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // rustls queued an alert telling the peer why; send it if the socket
                    // takes it now.
                    let _ = tls.conn.write_tls(&mut FdWriter(self.fd));
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
                }
            };
            let avail = state.plaintext_bytes_to_read();
            if avail > 0 {
                let len = self.rbuf.len();
                self.rbuf.resize(len + avail, 0);
                let got = tls.conn.reader().read(&mut self.rbuf[len..]).unwrap_or(0);
                self.rbuf.truncate(len + got);
                got_plaintext |= got > 0;
            }
            if state.peer_has_closed() {
                tls.closed = true;
                break;
            }
        }
        // Handshake replies, alerts and key updates go out now if the socket takes them; what
        // it does not is written by the next flush.
        if tls.conn.wants_write() {
            if let Ok(w) = tls.conn.write_tls(&mut FdWriter(self.fd)) {
                Counters::add(&shared.hub.counters.bytes_sent, w as u64);
            }
        }
        if tls.closed && !got_plaintext {
            return Poll::Ready(Ok(0));
        }
        Poll::Ready(Ok(n))
    }

    /// [`Io::poll_flush`] for TLS: encrypts the queue's frames and writes the records.
    /// `Ready(Ok)` once both the queue and rustls' output are empty.
    pub(super) fn poll_flush_tls(
        &mut self,
        cx: &mut TaskContext<'_>,
        client: &Client,
        hub: &Hub,
    ) -> Poll<io::Result<()>> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return Poll::Ready(Err(io::ErrorKind::InvalidInput.into()));
        };
        loop {
            if tls.conn.wants_write() {
                match tls.conn.write_tls(&mut FdWriter(self.fd)) {
                    Ok(n) => {
                        hub.tls_sent(client, n);
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        hub.tls_blocked(client);
                        // Wait for write readiness (a poll on the shard's ring).
                        match Io::poll_writable(&self.sock, cx) {
                            Poll::Ready(Ok(())) => continue,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            }
            if client.queue_is_empty() {
                return Poll::Ready(Ok(()));
            }
            let moved = hub.queue_into(client, &mut tls.conn.writer(), TLS_BUFFER);
            if moved == 0 {
                // Only before the handshake completes, with rustls' plaintext buffer full:
                // the next read (which completes it) wakes us.
                return Poll::Pending;
            }
        }
    }
}

/// Why a handshake failed, as counted in `shardcast_tls_handshake_failures_total`.
fn failure_label(e: &io::Error) -> &'static str {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::InvalidData => "bad_record",
            _ => "io",
        };
    };
    match err {
        rustls::Error::AlertReceived(_) => "alert",
        rustls::Error::PeerIncompatible(_) => "no_shared_cipher",
        rustls::Error::InvalidMessage(_)
        | rustls::Error::InappropriateMessage { .. }
        | rustls::Error::InappropriateHandshakeMessage { .. }
        | rustls::Error::DecryptError => "bad_record",
        rustls::Error::PeerMisbehaved(_) => "peer_misbehaved",
        _ => "other",
    }
}

/// Runs the TLS handshake within the handshake timeout (armed by the caller). `false` when it
/// failed (counted by reason); the caller then drops the connection.
pub(crate) async fn handshake(io: &mut Io, shared: &Shared, client: &Client) -> bool {
    let hub = &shared.hub;
    let r: Result<(), &'static str> = poll_fn(|cx| loop {
        if client.close_requested().is_some() {
            return Poll::Ready(Err("shutdown"));
        }
        if client.take_timer() {
            return Poll::Ready(Err("timeout"));
        }
        if let Poll::Ready(Err(e)) = io.poll_flush_tls(cx, client, hub) {
            return Poll::Ready(Err(failure_label(&e)));
        }
        if io.tls.as_ref().is_some_and(|t| !t.conn.is_handshaking()) {
            return Poll::Ready(Ok(()));
        }
        match io.poll_fill_tls(cx, shared) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err("eof")),
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(failure_label(&e))),
            Poll::Pending => {
                client.register(cx.waker());
                return Poll::Pending;
            }
        }
    })
    .await;
    match r {
        Ok(()) => {
            hub.counters.tls_handshake();
            true
        }
        Err(reason) => {
            hub.counters.tls_failure(reason);
            tracing::debug!(client = %client.id, reason, "TLS handshake failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn bad_files_are_named_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("shardcast-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let good_cert = write(&dir, "cert.pem", &cert.cert.pem());
        let good_key = write(&dir, "key.pem", &cert.key_pair.serialize_pem());
        let junk = write(&dir, "junk.pem", "hello\n");
        let missing = dir.join("missing.pem");
        let cfg = |c: &Path, k: &Path| TlsConfig {
            cert: Some(c.into()),
            key: Some(k.into()),
            ..TlsConfig::default()
        };
        assert!(TlsAcceptor::load(&cfg(&good_cert, &good_key)).is_ok());
        let e = TlsAcceptor::load(&cfg(&missing, &good_key)).err().unwrap();
        assert!(
            e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let e = TlsAcceptor::load(&cfg(&junk, &good_key)).err().unwrap();
        assert!(
            e.contains("junk.pem") && e.contains("no CERTIFICATE"),
            "{e}"
        );
        let e = TlsAcceptor::load(&cfg(&good_cert, &junk)).err().unwrap();
        assert!(
            e.contains("junk.pem") && e.contains("no PRIVATE KEY"),
            "{e}"
        );
        // A key that is not the certificate's.
        let other = rcgen::KeyPair::generate().unwrap();
        let other_key = write(&dir, "other.pem", &other.serialize_pem());
        let e = TlsAcceptor::load(&cfg(&good_cert, &other_key))
            .err()
            .unwrap();
        assert!(e.contains("do not make a usable pair"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_reload_keeps_the_old_configuration() {
        let dir = std::env::temp_dir().join(format!("shardcast-tls-r-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let c = write(&dir, "cert.pem", &cert.cert.pem());
        let k = write(&dir, "key.pem", &cert.key_pair.serialize_pem());
        let mut config = Config::default();
        config.tls.cert = Some(c);
        config.tls.key = Some(k);
        let acceptor = TlsAcceptor::load(&config.tls).unwrap();
        let before = acceptor.current();
        let mut bad = config.clone();
        bad.tls.cert = Some(dir.join("nope.pem"));
        let e = acceptor.prepare(&bad).err().unwrap();
        assert!(e.contains("nope.pem"), "{e}");
        assert!(Arc::ptr_eq(&before, &acceptor.current()));
        let commit = acceptor.prepare(&config).unwrap();
        assert!(
            Arc::ptr_eq(&before, &acceptor.current()),
            "nothing before commit"
        );
        commit();
        assert!(!Arc::ptr_eq(&before, &acceptor.current()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
