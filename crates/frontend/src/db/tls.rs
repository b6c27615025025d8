//! TLS to PostgreSQL with rustls and the `ring` provider (no C in the build).
//!
//! The three modes mean what they mean in libpq, so an operator's intuition carries over:
//! `disable` sends plain text, `require` encrypts without checking who answers, and
//! `verify-full` checks the chain against a given CA bundle and the host name.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("DB_SSLROOTCERT {path}: {reason}")]
    RootCertificates { path: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The connector for `settings` and the matching libpq `sslmode`.
pub fn connector(settings: &TlsSettings) -> Result<(MakeRustlsConnect, postgres::config::SslMode), TlsError> {
    use postgres::config::SslMode;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let (config, mode) = match settings {
        TlsSettings::Disable => (
            builder
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
            SslMode::Disable,
        ),
        TlsSettings::Require => {
            let verifier = EncryptionOnly {
                algorithms: provider.signature_verification_algorithms,
            };
            let config = builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            (config, SslMode::Require)
        }
        TlsSettings::VerifyFull { ca_bundle } => (
            builder
                .with_root_certificates(root_store(ca_bundle)?)
                .with_no_client_auth(),
            SslMode::Require,
        ),
    };
    Ok((MakeRustlsConnect::new(config), mode))
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError::RootCertificates {
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(error("no usable certificate in the file".to_owned()));
    }
    Ok(store)
}

/// `sslmode=require`: the handshake signatures are checked (so the session is really
/// encrypted to whoever holds the key), but not who that is.
#[derive(Debug)]
struct EncryptionOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptionOnly {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
