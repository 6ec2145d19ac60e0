//! WebRTC-direct (feature `webrtc`): browsers dial `/ip4/.../udp/PORT/webrtc-direct/certhash/..`
//! with no certificate from a CA. The certhash is the hash of the server's DTLS certificate and
//! part of the address every browser app is given, so the certificate is kept in the data
//! directory: a restart must not change the address.

use std::{fs, path::Path};

use libp2p_webrtc::tokio::Certificate;

use crate::common::{create_private_file, CliError};

/// The certificate's file in the data directory (PEM: an `EXPIRES` block, then the private
/// key and the certificate, as webrtc-rs writes them).
pub const CERTIFICATE_FILE: &str = "webrtc-certificate.pem";

/// Makes ring the process's rustls crypto provider, once. webrtc-rs's DTLS takes the process
/// default, and rustls has none when both of its providers are in the build (libp2p's QUIC
/// brings aws-lc-rs, its WebSocket ring): the first WebRTC handshake would then panic inside
/// webrtc-rs's task, and the connection would hang until its timeout.
pub fn install_crypto_provider() {
    // An error means a provider is installed already, which is all DTLS needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A new certificate (valid until the year 4096, rcgen's default: it never needs renewing).
pub fn generate() -> Result<Certificate, CliError> {
    Certificate::generate(&mut rand_webrtc::rng()).map_err(|e| {
        CliError::Failed(format!(
            "cannot make the WebRTC certificate: {}",
            crate::output::chain(&e)
        ))
    })
}

/// Loads the certificate in `path`, or creates one there (mode 0600: it holds a private key)
/// when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Certificate, CliError> {
    let broken = |why: String| {
        CliError::Usage(format!(
            "{}: not a WebRTC certificate ({why}); move it away to start with a new one \
             (browsers then need the new /certhash address)",
            path.display()
        ))
    };
    match fs::read_to_string(path) {
        Ok(pem) => {
            check_expires_block(&pem).map_err(broken)?;
            Certificate::from_pem(&pem).map_err(|e| broken(crate::output::chain(&e)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let certificate = generate()?;
            create_private_file(
                path,
                certificate.serialize_pem().as_bytes(),
                "",
                "WebRTC certificate file",
            )?;
            Ok(certificate)
        }
        Err(e) => Err(CliError::Usage(format!(
            "{}: cannot read the WebRTC certificate file ({e}); check its permissions",
            path.display()
        ))),
    }
}

/// webrtc-rs 0.17 reads the first PEM block as an 8-byte expiry and panics when it holds fewer
/// bytes (a truncated file): this refuses such a file first. Base64 of at least 8 bytes is at
/// least 12 characters, of which at most one is padding.
fn check_expires_block(pem: &str) -> Result<(), String> {
    let body = pem
        .trim_start()
        .strip_prefix("-----BEGIN EXPIRES-----")
        .and_then(|rest| rest.split("-----END EXPIRES-----").next())
        .ok_or("it does not start with an EXPIRES block")?;
    let chars: Vec<char> = body.chars().filter(|c| !c.is_whitespace()).collect();
    let padding = chars.iter().rev().take_while(|c| **c == '=').count();
    match (chars.len() / 4 * 3).saturating_sub(padding) >= 8 {
        true => Ok(()),
        false => Err("its EXPIRES block holds fewer than 8 bytes".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_file_is_created_once_and_reloaded_with_the_same_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CERTIFICATE_FILE);
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_truncated_or_foreign_file_is_a_usage_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CERTIFICATE_FILE);
        for text in [
            "",
            "not a certificate",
            "-----BEGIN EXPIRES-----\nAAAA\n-----END EXPIRES-----\n\n",
            "-----BEGIN EXPIRES-----\nAAAAAAAAAAA=\n-----END EXPIRES-----\n\nno key here",
        ] {
            fs::write(&path, text).unwrap();
            assert!(
                matches!(load_or_create(&path), Err(CliError::Usage(_))),
                "{text:?}"
            );
        }
    }
}
