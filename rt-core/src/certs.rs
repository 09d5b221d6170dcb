//! Certificates and rustls configurations.
//!
//! Two uses:
//!
//! - **Development and tests**: [`DevPki::generate`] makes a throwaway CA, a
//!   server certificate for `localhost` and `127.0.0.1`, and a client
//!   certificate, all in memory with rcgen (no openssl step), and builds
//!   matching rustls configurations.
//! - **Real deployments**: [`load_certs`] and [`load_private_key`] read PEM
//!   files (through rustls-pki-types' [`PemObject`]), and [`server_config`],
//!   [`client_config`] and friends build configurations from them.
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
use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// The DNS name in the server certificate of a [`DevPki`]; clients of a dev
/// server connect with this server name.
pub const DEV_SERVER_NAME: &str = "localhost";

/// The IP address (besides [`DEV_SERVER_NAME`]) in the server certificate of
/// a [`DevPki`].
pub const DEV_SERVER_IP: &str = "127.0.0.1";

/// File names [`DevPki::write_pem`] writes, in this order: CA certificate,
/// server certificate, server key, client certificate, client key.
pub const DEV_PEM_FILES: [&str; 5] = [
    "ca.pem",
    "server.pem",
    "server.key",
    "client.pem",
    "client.key",
];

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

/// A certificate and its private key, as DER and as PEM.
struct Identity {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key: PrivatePkcs8KeyDer<'static>,
    key_pem: String,
}

impl Identity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }
}

/// A throwaway public-key infrastructure for development and tests: a CA, a
/// server certificate for [`DEV_SERVER_NAME`] and [`DEV_SERVER_IP`], and a
/// client certificate, all signed by that CA and valid until the year 4096.
///
/// Keys are ECDSA P-256, generated fresh by [`DevPki::generate`]; nothing
/// touches the disk unless [`DevPki::write_pem`] is called. Never use these
/// in production: whoever holds the PEM files can impersonate either side.
///
/// `Debug` shows no private key.
///
/// ```
/// use std::sync::Arc;
/// use jsonlink_rt::certs::DevPki;
///
/// let pki = DevPki::generate()?;
/// let server = Arc::new(pki.server_config()?);
/// let client = Arc::new(pki.client_config()?);
/// # let _ = (server, client);
/// # Ok::<(), jsonlink_rt::certs::CertError>(())
/// ```
pub struct DevPki {
    ca: Identity,
    server: Identity,
    client: Identity,
}

impl fmt::Debug for DevPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevPki")
            .field("server_name", &DEV_SERVER_NAME)
            .finish_non_exhaustive()
    }
}

impl DevPki {
    /// Generates a fresh CA, server certificate and client certificate.
    pub fn generate() -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        // A name unique to this CA: two DevPkis must not look like the same
        // issuer, or a certificate from the other one fails as a bad
        // signature rather than as an unknown issuer.
        let key_id: String = ca_params
            .key_identifier(&ca_key)
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        ca_params.distinguished_name.push(
            DnType::CommonName,
            format!("jsonlink development CA {key_id}"),
        );
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca = identity(ca_cert, &ca_key);
        let issuer = Issuer::new(ca_params, ca_key);

        let server = leaf(
            &issuer,
            vec![DEV_SERVER_NAME.to_owned(), DEV_SERVER_IP.to_owned()],
            "jsonlink development server",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let client = leaf(
            &issuer,
            Vec::new(),
            "jsonlink development client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        Ok(Self { ca, server, client })
    }

    /// The CA certificate.
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca.cert
    }

    /// The CA certificate as PEM.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    /// The server certificate (for [`DEV_SERVER_NAME`] and [`DEV_SERVER_IP`]).
    pub fn server_cert(&self) -> &CertificateDer<'static> {
        &self.server.cert
    }

    /// The client certificate.
    pub fn client_cert(&self) -> &CertificateDer<'static> {
        &self.client.cert
    }

    /// The server name clients should use: [`DEV_SERVER_NAME`].
    pub fn server_name(&self) -> ServerName<'static> {
        ServerName::try_from(DEV_SERVER_NAME).expect("DEV_SERVER_NAME is a valid DNS name")
    }

    /// A root store trusting only this CA.
    pub fn root_store(&self) -> Result<RootCertStore, CertError> {
        root_store([self.ca.cert.clone()])
    }

    /// A server configuration presenting the server certificate, with no
    /// client authentication.
    pub fn server_config(&self) -> Result<ServerConfig, CertError> {
        server_config(vec![self.server.cert.clone()], self.server.key())
    }

    /// A server configuration presenting the server certificate that requires
    /// a client certificate issued by this CA.
    pub fn server_config_requiring_client_cert(&self) -> Result<ServerConfig, CertError> {
        server_config_with_client_auth(
            vec![self.server.cert.clone()],
            self.server.key(),
            self.root_store()?,
        )
    }

    /// A client configuration trusting this CA, presenting no client
    /// certificate.
    pub fn client_config(&self) -> Result<ClientConfig, CertError> {
        client_config(self.root_store()?)
    }

    /// A client configuration trusting this CA and presenting the client
    /// certificate.
    pub fn client_config_with_client_cert(&self) -> Result<ClientConfig, CertError> {
        client_config_with_client_cert(
            self.root_store()?,
            vec![self.client.cert.clone()],
            self.client.key(),
        )
    }

    /// Writes the CA certificate, the server certificate and key, and the
    /// client certificate and key as PEM files named [`DEV_PEM_FILES`] into
    /// `dir` (which must exist), replacing files of those names. Key files
    /// are created readable by their owner only (on Unix). Returns the paths
    /// written, in the order of [`DEV_PEM_FILES`].
    pub fn write_pem(&self, dir: impl AsRef<Path>) -> Result<[PathBuf; 5], CertError> {
        let dir = dir.as_ref();
        let contents = [
            (&self.ca.cert_pem, false),
            (&self.server.cert_pem, false),
            (&self.server.key_pem, true),
            (&self.client.cert_pem, false),
            (&self.client.key_pem, true),
        ];
        let paths = DEV_PEM_FILES.map(|name| dir.join(name));
        for (path, (pem, secret)) in paths.iter().zip(contents) {
            write_file(path, pem.as_bytes(), secret).map_err(|source| CertError::Write {
                path: path.clone(),
                source,
            })?;
        }
        Ok(paths)
    }
}

fn identity(cert: rcgen::Certificate, key: &KeyPair) -> Identity {
    Identity {
        cert_pem: cert.pem(),
        cert: cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        key_pem: key.serialize_pem(),
    }
}

fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    common_name: &str,
    usage: ExtendedKeyUsagePurpose,
) -> Result<Identity, CertError> {
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    Ok(identity(cert, &key))
}

fn write_file(path: &Path, bytes: &[u8], secret: bool) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{EXPORTER_LEN, channel_binding};
    use rustls::{ClientConnection, ServerConnection};

    /// Moves TLS records between an in-memory client and server until
    /// neither has anything left to say (bounded).
    fn handshake(
        client: &mut ClientConnection,
        server: &mut ServerConnection,
    ) -> Result<(), rustls::Error> {
        for _ in 0..20 {
            let mut buf = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut buf).unwrap();
            }
            let to_server = !buf.is_empty();
            if to_server {
                server.read_tls(&mut &buf[..]).unwrap();
                server.process_new_packets()?;
            }
            buf.clear();
            while server.wants_write() {
                server.write_tls(&mut buf).unwrap();
            }
            let to_client = !buf.is_empty();
            if to_client {
                client.read_tls(&mut &buf[..]).unwrap();
                client.process_new_packets()?;
            }
            if !to_server && !to_client {
                return Ok(());
            }
        }
        panic!("handshake did not settle in 20 rounds");
    }

    fn pair(
        client: ClientConfig,
        server: ServerConfig,
        name: ServerName<'static>,
    ) -> (ClientConnection, ServerConnection) {
        (
            ClientConnection::new(Arc::new(client), name).unwrap(),
            ServerConnection::new(Arc::new(server)).unwrap(),
        )
    }

    #[test]
    fn dev_pki_handshake_yields_equal_channel_bindings() {
        let pki = DevPki::generate().unwrap();
        let (mut client, mut server) = pair(
            pki.client_config().unwrap(),
            pki.server_config().unwrap(),
            pki.server_name(),
        );
        handshake(&mut client, &mut server).unwrap();
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let a = channel_binding(&client).unwrap();
        let b = channel_binding(&server).unwrap();
        assert_eq!(a.len(), EXPORTER_LEN);
        assert_eq!(a, b);
    }

    #[test]
    fn server_certificate_is_valid_for_the_loopback_ip() {
        let pki = DevPki::generate().unwrap();
        let ip = ServerName::try_from(DEV_SERVER_IP).unwrap();
        let (mut client, mut server) = pair(
            pki.client_config().unwrap(),
            pki.server_config().unwrap(),
            ip,
        );
        handshake(&mut client, &mut server).unwrap();
    }

    #[test]
    fn channel_binding_fails_before_the_handshake() {
        let pki = DevPki::generate().unwrap();
        let (client, _server) = pair(
            pki.client_config().unwrap(),
            pki.server_config().unwrap(),
            pki.server_name(),
        );
        assert!(channel_binding(&client).is_err());
    }

    #[test]
    fn a_server_requiring_client_certs_rejects_a_client_without_one() {
        let pki = DevPki::generate().unwrap();
        let (mut client, mut server) = pair(
            pki.client_config().unwrap(),
            pki.server_config_requiring_client_cert().unwrap(),
            pki.server_name(),
        );
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(err, rustls::Error::NoCertificatesPresented),
            "{err:?}"
        );
    }

    #[test]
    fn a_server_requiring_client_certs_accepts_the_dev_client_cert() {
        let pki = DevPki::generate().unwrap();
        let (mut client, mut server) = pair(
            pki.client_config_with_client_cert().unwrap(),
            pki.server_config_requiring_client_cert().unwrap(),
            pki.server_name(),
        );
        handshake(&mut client, &mut server).unwrap();
        assert_eq!(
            server.peer_certificates().unwrap(),
            [pki.client_cert().clone()]
        );
    }

    #[test]
    fn a_client_trusting_another_ca_rejects_the_server() {
        let pki = DevPki::generate().unwrap();
        let other = DevPki::generate().unwrap();
        let (mut client, mut server) = pair(
            other.client_config().unwrap(),
            pki.server_config().unwrap(),
            pki.server_name(),
        );
        let err = handshake(&mut client, &mut server).unwrap_err();
        assert!(
            matches!(
                err,
                rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
            ),
            "{err:?}"
        );
    }

    #[test]
    fn pem_written_to_disk_loads_back() {
        let pki = DevPki::generate().unwrap();
        let dir = std::env::temp_dir().join(format!("jsonlink-certs-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let [ca, server_cert, server_key, client_cert, client_key] = pki.write_pem(&dir).unwrap();
        assert_eq!(load_certs(&ca).unwrap(), [pki.ca_cert().clone()]);
        assert_eq!(
            load_certs(&server_cert).unwrap(),
            [pki.server_cert().clone()]
        );
        assert_eq!(
            load_certs(&client_cert).unwrap(),
            [pki.client_cert().clone()]
        );
        let server = server_config(
            load_certs(&server_cert).unwrap(),
            load_private_key(&server_key).unwrap(),
        );
        let client = client_config_with_client_cert(
            root_store(load_certs(&ca).unwrap()).unwrap(),
            load_certs(&client_cert).unwrap(),
            load_private_key(&client_key).unwrap(),
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&server_key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
        }
        fs::remove_dir_all(&dir).unwrap();
        let (mut client, mut server) = pair(client.unwrap(), server.unwrap(), pki.server_name());
        handshake(&mut client, &mut server).unwrap();
    }

    #[test]
    fn pem_bytes_parse_and_errors_are_typed() {
        let pki = DevPki::generate().unwrap();
        let certs = certs_from_pem(pki.ca_cert_pem().as_bytes()).unwrap();
        assert_eq!(certs, [pki.ca_cert().clone()]);
        assert!(matches!(
            private_key_from_pem(pki.ca_cert_pem().as_bytes()),
            Err(CertError::NoPrivateKey(PemOrigin::Bytes))
        ));
        assert!(matches!(
            certs_from_pem(pki.server.key_pem.as_bytes()),
            Err(CertError::NoCertificates(PemOrigin::Bytes))
        ));
        assert!(private_key_from_pem(pki.server.key_pem.as_bytes()).is_ok());
        let missing = Path::new("/nonexistent/jsonlink/ca.pem");
        let err = load_certs(missing).unwrap_err();
        assert!(matches!(&err, CertError::Pem { origin: PemOrigin::File(p), .. } if p == missing));
        assert!(
            err.to_string().contains("/nonexistent/jsonlink/ca.pem"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_shows_no_private_key() {
        let pki = DevPki::generate().unwrap();
        let debug = format!("{pki:?}");
        assert!(!debug.contains("PRIVATE"), "{debug}");
        let key_b64: String = pki.server.key_pem.lines().nth(1).unwrap().to_owned();
        assert!(!debug.contains(&key_b64), "{debug}");
        assert!(debug.contains("DevPki"));
    }
}
