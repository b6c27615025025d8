//! TLS to PostgreSQL with rustls and the `ring` provider (no C in the build).
//!
//! The three modes mean what they mean in libpq, so an operator's intuition carries over:
//! `disable` sends plain text, `require` encrypts without checking who answers, and
//! `verify-full` checks the chain and the host name — against Amazon's RDS CA bundle, which is
//! compiled in so the image needs no file of its own, or against DB_SSLROOTCERT.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{TlsSettings, TrustedRoots};

/// Amazon's RDS global CA bundle: the roots of every RDS and Aurora server certificate in the
/// commercial regions. Provenance, sha256 and how to refresh it: `certs/README.md`.
pub const RDS_CA_BUNDLE: &[u8] = include_bytes!("../../certs/rds-global-bundle.pem");

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{source_name}: {reason}")]
    RootCertificates { source_name: String, reason: String },
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
        TlsSettings::VerifyFull { roots } => (
            builder
                .with_root_certificates(root_store(roots)?)
                .with_no_client_auth(),
            SslMode::Require,
        ),
    };
    Ok((MakeRustlsConnect::new(config), mode))
}

fn root_store(roots: &TrustedRoots) -> Result<RootCertStore, TlsError> {
    let error = |reason: String| TlsError::RootCertificates {
        source_name: match roots {
            TrustedRoots::RdsBundle => "the built-in RDS CA bundle".to_owned(),
            TrustedRoots::File(path) => format!("DB_SSLROOTCERT {}", path.display()),
        },
        reason,
    };
    let certificates = match roots {
        TrustedRoots::RdsBundle => {
            CertificateDer::pem_slice_iter(RDS_CA_BUNDLE).collect::<Result<Vec<_>, _>>()
        }
        TrustedRoots::File(path) => CertificateDer::pem_file_iter(path)
            .map_err(|e| error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>(),
    }
    .map_err(|e| error(e.to_string()))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(error("no usable certificate in the file".to_owned()));
    }
    Ok(store)
}

/// Why `verify-full` refused a server: the words an operator needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    /// Not signed by a trusted CA: e.g. not an RDS server, or a region the bundle lacks.
    UnknownIssuer,
    /// Valid, but for other names than the one connected to (e.g. an IP address or a CNAME).
    NameMismatch,
    Expired,
    NotYetValid,
    Other(String),
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer => f.write_str("unknown issuer: no trusted CA signed it"),
            Self::NameMismatch => f.write_str("name mismatch: it is not valid for the host connected to"),
            Self::Expired => f.write_str("expired"),
            Self::NotYetValid => f.write_str("not valid yet"),
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

impl CertificateProblem {
    /// The certificate rejection inside a connection error, if that is what ended it. The
    /// handshake's rustls error travels wrapped in an `io::Error`, whose `source()` skips it.
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use rustls::CertificateError as E;
        let mut cause = Some(error);
        while let Some(current) = cause {
            let rustls_error = current.downcast_ref::<rustls::Error>().or_else(|| {
                current
                    .downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            });
            if let Some(rustls::Error::InvalidCertificate(problem)) = rustls_error {
                return Some(match problem {
                    E::UnknownIssuer => Self::UnknownIssuer,
                    E::NotValidForName | E::NotValidForNameContext { .. } => Self::NameMismatch,
                    E::Expired | E::ExpiredContext { .. } => Self::Expired,
                    E::NotValidYet | E::NotValidYetContext { .. } => Self::NotYetValid,
                    other => Self::Other(other.to_string()),
                });
            }
            cause = current.source();
        }
        None
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_bundle_is_exactly_amazons_108_rds_root_cas() {
        let certificates = CertificateDer::pem_slice_iter(RDS_CA_BUNDLE)
            .collect::<Result<Vec<_>, _>>()
            .expect("the bundle is PEM");
        assert_eq!(certificates.len(), 108, "certs/README.md lists 108");
        for der in &certificates {
            let (rest, certificate) = x509_parser::parse_x509_certificate(der).expect("X.509");
            assert!(rest.is_empty());
            let name = certificate
                .subject()
                .iter_common_name()
                .next()
                .and_then(|name| name.as_str().ok())
                .expect("a common name");
            assert!(
                name.starts_with("Amazon RDS ") && name.contains(" Root CA "),
                "{name}"
            );
            assert!(certificate.is_ca(), "{name} is a CA");
            assert_eq!(certificate.subject(), certificate.issuer(), "{name} is a root");
        }
        let store = root_store(&TrustedRoots::RdsBundle).expect("every certificate is usable");
        assert_eq!(store.len(), 108);
    }

    #[test]
    fn a_certificate_rejection_is_found_inside_the_io_error_that_carries_it() {
        let wrapped = |problem| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(problem),
            )
        };
        use rustls::CertificateError as E;
        assert_eq!(
            CertificateProblem::of(&wrapped(E::UnknownIssuer)),
            Some(CertificateProblem::UnknownIssuer)
        );
        assert_eq!(
            CertificateProblem::of(&wrapped(E::NotValidForName)),
            Some(CertificateProblem::NameMismatch)
        );
        assert_eq!(
            CertificateProblem::of(&wrapped(E::Expired)),
            Some(CertificateProblem::Expired)
        );
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(CertificateProblem::of(&refused), None);
    }
}
