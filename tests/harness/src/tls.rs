//! A throwaway certificate authority and one server certificate it issued (rcgen, ring).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM texts of a CA certificate, a server certificate it signed, and the server's key.
pub(crate) struct ServerTls {
    pub(crate) ca_cert_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// A new CA and a server certificate for `names` (DNS names or IP addresses).
pub(crate) fn server_certificate(names: &[&str]) -> Result<ServerTls> {
    let ca = TestCa::new()?;
    let (cert_pem, key_pem) = ca.issue(names)?;
    Ok(ServerTls {
        ca_cert_pem: ca.cert_pem().to_string(),
        cert_pem,
        key_pem,
    })
}

/// A throwaway certificate authority that issues server certificates for any names, e.g. an
/// Aurora cluster endpoint name and an AWS API endpoint name trusted by the same test CA.
pub struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA (fresh key, self-signed).
    pub fn new() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the test CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "harness throwaway test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .context("self-signing the test CA")?;
        Ok(Self {
            cert_pem: ca_cert.pem(),
            issuer: Issuer::new(ca_params, ca_key),
        })
    }

    /// The CA certificate (PEM): what a client is told to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is also the
    /// common name) and its key, both PEM.
    pub fn issue(&self, names: &[&str]) -> Result<(String, String)> {
        let server_key = KeyPair::generate().context("generating the server key")?;
        let mut server_params =
            CertificateParams::new(names.iter().map(|name| (*name).to_string()).collect::<Vec<_>>())
                .context("server certificate names")?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params
            .signed_by(&server_key, &self.issuer)
            .context("signing the server certificate")?;
        Ok((server_cert.pem(), server_key.serialize_pem()))
    }
}
