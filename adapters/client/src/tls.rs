//! Which servers a `wss://` session trusts: the public CAs (Mozilla's list, compiled in),
//! the operating system's trust store (where a studio's IT installs its own CA), and an
//! extra PEM file the host names (`Options::ca_cert`, else `TANDEM_CA_CERT`): a studio CA,
//! or a self-signed server certificate itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// The environment variable naming an extra trusted CA or certificate (PEM).
pub(crate) const CA_CERT_ENV: &str = "TANDEM_CA_CERT";

/// The extra trusted PEM: the option, else the environment variable.
pub(crate) fn extra_ca(option: Option<&Path>) -> Option<PathBuf> {
    option
        .map(Path::to_owned)
        .or_else(|| std::env::var_os(CA_CERT_ENV).map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
}

/// The rustls client configuration of a `wss://` session.
pub(crate) fn client_config(extra: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    if !native.errors.is_empty() {
        tracing::debug!(errors = ?native.errors, "some system trust store certificates could not be read");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|e| {
                Error::Tls(format!(
                    "reading trusted certificates from {}: {e}",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        for c in certs {
            roots.add(c).map_err(|e| {
                Error::Tls(format!("{}: not a usable certificate: {e}", path.display()))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS failure inside an I/O error (how tokio-rustls reports handshake failures), in words
/// a host can act on.
pub(crate) fn describe_io(e: &std::io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(why) => format!(
            "the server's certificate is not trusted ({why:?}); trust its CA or the certificate itself with ca_cert / {CA_CERT_ENV}"
        ),
        other => format!("handshake failed: {other}"),
    })
}
