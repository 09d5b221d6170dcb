//! Certificates and rustls configurations for real deployments.
//!
//! [`load_certs`] and [`load_private_key`] read PEM files (through
//! rustls-pki-types' [`PemObject`]), and [`server_config`],
//! [`client_config`] and friends build configurations from them.
//! Development certificates (a throwaway CA made in memory) are in
//! [`dev_certs`](crate::dev_certs), behind the default-on `dev-certs`
//! feature.
//!
//! Every configuration uses rustls' `ring` provider given explicitly through
//! `builder_with_provider` (see [`crypto_provider`]), never the process-level
//! default provider, so nothing panics for want of one and no aws-lc is built.
//!
//! Every configuration a [`Server`](crate::Server) or [`Client`](crate::Client)
//! uses requires the extended master secret (RFC 7627) when TLS 1.2 is
//! negotiated (rustls' `require_ems`): the channel binding is only unique to
//! one TLS session with TLS 1.3 or with it (PROTOCOL.md §3). The builders
//! here set it, and the server and client set it on any configuration they
//! are given.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Where PEM data came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemOrigin {
    /// A file.
    File(PathBuf),
    /// Bytes handed over in memory.
    Bytes,
}

impl fmt::Display for PemOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Bytes => f.write_str("PEM bytes"),
        }
    }
}

/// Why making, loading or using certificates failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen could not generate a key or certificate.
    #[cfg(feature = "dev-certs")]
    #[error("generating a development certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// PEM data could not be read or parsed (this includes a file that could
    /// not be opened).
    #[error("reading PEM from {origin} failed: {source}")]
    Pem {
        /// Where the PEM came from.
        origin: PemOrigin,
        /// What went wrong.
        source: rustls_pki_types::pem::Error,
    },
    /// The PEM data held no `CERTIFICATE` section.
    #[error("no certificate found in {0}")]
    NoCertificates(PemOrigin),
    /// The PEM data held no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("no private key found in {0}")]
    NoPrivateKey(PemOrigin),
    /// A PEM file could not be written.
    #[error("writing {path} failed: {source}", path = path.display())]
    Write {
        /// The file being written.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// rustls refused the configuration (for example a key that does not
    /// match the certificate, or a certificate it cannot parse).
    #[error("invalid TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built (for example from
    /// an empty root store).
    #[error("invalid client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
}

/// `config` with `require_ems` set (a copy only if it was not): a TLS 1.2
/// peer without the extended master secret is refused.
pub(crate) fn require_ems_server(config: Arc<ServerConfig>) -> Arc<ServerConfig> {
    if config.require_ems {
        return config;
    }
    let mut c = (*config).clone();
    c.require_ems = true;
    Arc::new(c)
}

/// `config` with `require_ems` set (a copy only if it was not): a TLS 1.2
/// server without the extended master secret is refused.
pub(crate) fn require_ems_client(config: Arc<ClientConfig>) -> Arc<ClientConfig> {
    if config.require_ems {
        return config;
    }
    let mut c = (*config).clone();
    c.require_ems = true;
    Arc::new(c)
}

/// The crypto provider every configuration here uses: rustls' `ring` default
/// provider.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server configuration presenting `cert_chain` (leaf first) and
/// `key`, with no client authentication.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, CertError> {
    let mut c = ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)?;
    c.require_ems = true;
    Ok(c)
}

/// Builds a server configuration presenting `cert_chain` and `key` that
/// requires every client to present a certificate issued by one of
/// `client_roots`.
pub fn server_config_with_client_auth(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: RootCertStore,
) -> Result<ServerConfig, CertError> {
    let provider = crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
            .build()?;
    let mut c = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)?;
    c.require_ems = true;
    Ok(c)
}

/// Builds a client configuration trusting `roots`, presenting no client
/// certificate.
pub fn client_config(roots: RootCertStore) -> Result<ClientConfig, CertError> {
    let mut c = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.require_ems = true;
    Ok(c)
}

/// Builds a client configuration trusting `roots` and presenting
/// `cert_chain` (leaf first) and `key` when the server asks for a client
/// certificate.
pub fn client_config_with_client_cert(
    roots: RootCertStore,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ClientConfig, CertError> {
    let mut c = ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(cert_chain, key)?;
    c.require_ems = true;
    Ok(c)
}

/// A root store holding `certs`. Fails with [`CertError::Tls`] if one of
/// them is not a usable trust anchor.
pub fn root_store(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
) -> Result<RootCertStore, CertError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// Reads every certificate from a PEM file, in file order (for a chain:
/// leaf first). Fails if the file holds none.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let origin = PemOrigin::File(path.as_ref().to_owned());
    let iter = CertificateDer::pem_file_iter(path).map_err(|source| CertError::Pem {
        origin: origin.clone(),
        source,
    })?;
    collect_certs(iter, origin)
}

/// Reads every certificate from PEM bytes, in order. Fails if there are none.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertError> {
    collect_certs(CertificateDer::pem_slice_iter(pem), PemOrigin::Bytes)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from a PEM file.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, CertError> {
    let origin = PemOrigin::File(path.as_ref().to_owned());
    key_result(PrivateKeyDer::from_pem_file(path), origin)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) from PEM bytes.
pub fn private_key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, CertError> {
    key_result(PrivateKeyDer::from_pem_slice(pem), PemOrigin::Bytes)
}

fn collect_certs(
    iter: impl Iterator<Item = Result<CertificateDer<'static>, rustls_pki_types::pem::Error>>,
    origin: PemOrigin,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = iter
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CertError::Pem {
            origin: origin.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificates(origin));
    }
    Ok(certs)
}

fn key_result(
    result: Result<PrivateKeyDer<'static>, rustls_pki_types::pem::Error>,
    origin: PemOrigin,
) -> Result<PrivateKeyDer<'static>, CertError> {
    match result {
        Ok(key) => Ok(key),
        Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(CertError::NoPrivateKey(origin)),
        Err(source) => Err(CertError::Pem { origin, source }),
    }
}
