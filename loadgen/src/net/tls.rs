//! TLS configuration (rustls, ring provider) for both roles.
//!
//! Client: with `--ca FILE` only that PEM bundle is trusted; with `--insecure` nothing is
//! verified (the handshake's signatures still are, so the cost measured is real); otherwise
//! the system bundle (`/etc/ssl/certs/ca-certificates.crt`) is used. Server (the sink): a
//! self-signed certificate for `localhost` and `127.0.0.1`, made at start with rcgen; its
//! PEM can be written out for `--ca`.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The system CA bundle on Debian-like systems.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A CA or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The CA file held no usable certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificates(String),
    /// No trust anchors and no `--insecure`.
    #[error("no CA certificates: pass --ca FILE (e.g. the sink's --cert-out) or --insecure")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The self-signed certificate could not be made.
    #[error("cannot generate a certificate: {0}")]
    Certificate(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| TlsSetupError::Read {
        path: shown.clone(),
        source,
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &bytes[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificates(shown));
    }
    Ok(certs)
}

/// Accepts any certificate (`--insecure`) but still checks handshake signatures.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The client configuration for `--insecure` / `--ca`.
pub fn client_config(
    insecure: bool,
    ca: Option<&Path>,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let p = provider();
    let builder =
        ClientConfig::builder_with_provider(p.clone()).with_safe_default_protocol_versions()?;
    let config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(p)))
            .with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        let certs = match ca {
            Some(path) => load_pem(path)?,
            None => load_pem(Path::new(SYSTEM_BUNDLE)).map_err(|_| TlsSetupError::NoRoots)?,
        };
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(TlsSetupError::NoRoots);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// A self-signed server identity.
pub struct SelfSigned {
    /// The server configuration.
    pub config: Arc<ServerConfig>,
    /// The certificate as PEM (for the client's `--ca`).
    pub cert_pem: String,
}

/// Makes a self-signed certificate for `localhost` / `127.0.0.1` / `::1` and a server
/// configuration around it.
pub fn self_signed() -> Result<SelfSigned, TlsSetupError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsSetupError::Certificate(e.to_string()))?;
    let cert_pem = ck.cert.pem();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)?;
    Ok(SelfSigned {
        config: Arc::new(config),
        cert_pem,
    })
}

/// The TLS server name for a URL host (DNS name or IP address).
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
    ServerName::try_from(host.to_string())
        .map_err(|_| TlsSetupError::Certificate(format!("{host:?} is not a valid TLS server name")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_build() {
        let s = self_signed().unwrap();
        assert!(s.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let path = std::env::temp_dir().join(format!("lg-ca-{}.pem", std::process::id()));
        std::fs::write(&path, &s.cert_pem).unwrap();
        assert!(client_config(false, Some(&path)).is_ok());
        std::fs::write(&path, "not pem").unwrap();
        assert!(matches!(
            client_config(false, Some(&path)),
            Err(TlsSetupError::NoCertificates(_))
        ));
        let _ = std::fs::remove_file(&path);
        assert!(client_config(true, None).is_ok());
        assert!(matches!(
            client_config(false, Some(Path::new("/nonexistent/ca.pem"))),
            Err(TlsSetupError::Read { .. })
        ));
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("localhost").is_ok());
    }
}
