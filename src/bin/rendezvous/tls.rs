//! `serve --tls-cert/--tls-key`: the certificate of `/wss` listeners, from PEM files.

use std::path::Path;

use libp2p::websocket::tls;
use rustls_pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

use crate::common::CliError;

/// The TLS configuration of `/wss` listeners: the certificate chain in `cert` (PEM, the
/// server's certificate first, as a CA issues it in `fullchain.pem`) and its private key in
/// `key` (PEM: PKCS#8, PKCS#1 or SEC1).
pub fn load(cert: &Path, key: &Path) -> Result<tls::Config, CliError> {
    let cert_pem = read("--tls-cert", cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            CliError::Usage(format!(
                "--tls-cert {}: not a PEM certificate chain ({e})",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(CliError::Usage(format!(
            "--tls-cert {}: no certificate in it; expected PEM (-----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let key_pem = read("--tls-key", key)?;
    let der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        CliError::Usage(format!(
            "--tls-key {}: no private key in it ({e}); expected PEM (-----BEGIN PRIVATE KEY-----, \
             RSA PRIVATE KEY or EC PRIVATE KEY)",
            key.display()
        ))
    })?;
    // libp2p-websocket takes the key as DER bytes and panics on a format it cannot tell: check
    // first that it can.
    let bytes = der.secret_der().to_vec();
    if PrivateKeyDer::try_from(bytes.as_slice()).is_err() {
        return Err(CliError::Usage(format!(
            "--tls-key {}: a private key in a format that cannot be used; expected PKCS#8, \
             PKCS#1 or SEC1",
            key.display()
        )));
    }
    tls::Config::new(
        tls::PrivateKey::new(bytes),
        certs.into_iter().map(|c| tls::Certificate::new(c.to_vec())),
    )
    .map_err(|e| {
        CliError::Usage(format!(
            "--tls-cert {} with --tls-key {}: cannot be used together ({e}); is the key the \
             certificate's?",
            cert.display(),
            key.display()
        ))
    })
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, CliError> {
    std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("{flag} {}: cannot read ({e})", path.display())))
}
