//! What a benchmark process is set up with: its runtime ([`Rt`]), the
//! protection mode of its links ([`Mode`]) and the TLS material and secret
//! the orchestrator wrote ([`Material`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jsonlink_proto::{Config, Identity, Policy, Secret, SignAlg};
use jsonlink_rt::{Runtime, ServerName, certs};

/// Which async runtime a process runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rt {
    Tokio,
    Smol,
}

impl Rt {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "tokio" => Ok(Self::Tokio),
            "smol" => Ok(Self::Smol),
            _ => Err(format!("unknown runtime {s:?}")),
        }
    }

    /// Runs `f` to completion on this runtime, on the calling thread (tokio:
    /// a current-thread runtime; smol: an `Executor` run inside `block_on`,
    /// given to `jsonlink-smol` with `SmolRuntime::on`).
    pub(crate) fn block_on<F, Fut>(self, f: F) -> Fut::Output
    where
        F: FnOnce(Arc<dyn Runtime>) -> Fut,
        Fut: Future,
    {
        match self {
            Self::Tokio => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async {
                    let r: Arc<dyn Runtime> = Arc::new(jsonlink_tokio::TokioRuntime::current());
                    f(r).await
                })
            }
            Self::Smol => {
                // One thread, as the tokio side: an executor run by
                // `block_on`, which jsonlink-smol spawns on.
                let ex = Arc::new(smol::Executor::new());
                let rt: Arc<dyn Runtime> = Arc::new(jsonlink_smol::SmolRuntime::on(ex.clone()));
                smol::block_on(ex.run(f(rt)))
            }
        }
    }
}

/// Protection mode of a jsonlink link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Plain,
    /// Signed with the default algorithm list (AES-256-GMAC chosen).
    Signed,
    /// Signed with HMAC-SHA256 only.
    SignedHmac,
    Sealed,
    /// Plain, and the API server answers the benchmark's requests with an
    /// inline handler (`Handlers::on_request_inline`) instead of from its
    /// event loop.
    Inline,
}

impl Mode {
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "signed" => Ok(Self::Signed),
            "signed-hmac" => Ok(Self::SignedHmac),
            "sealed" => Ok(Self::Sealed),
            "inline" => Ok(Self::Inline),
            _ => Err(format!("unknown mode {s:?}")),
        }
    }

    /// Sets the signing and encryption policies and the signing algorithms
    /// of this mode (both sides use the same).
    pub(crate) fn apply(self, c: &mut Config) {
        (c.signing, c.encryption) = match self {
            Self::Plain | Self::Inline => (Policy::Off, Policy::Off),
            Self::Signed | Self::SignedHmac => (Policy::Required, Policy::Off),
            Self::Sealed => (Policy::Required, Policy::Required),
        };
        c.sign_algs = match self {
            Self::SignedHmac => vec![SignAlg::HmacSha256],
            _ => SignAlg::ALL.to_vec(),
        };
    }
}

/// TLS material and the jsonlink secret, loaded from the orchestrator's
/// temporary directory.
pub(crate) struct Material {
    pub(crate) server_tls: Arc<rustls::ServerConfig>,
    pub(crate) client_tls: Arc<rustls::ClientConfig>,
    pub(crate) secret: Secret,
}

impl Material {
    /// Loads the material; `resumption: false` turns TLS session resumption
    /// off on the client (for the handshake scenario: a client that never
    /// reads after the handshake never stores the server's tickets, so only
    /// the stacks that read would resume).
    pub(crate) fn load(dir: &Path, resumption: bool) -> Result<Self, String> {
        let e = |x: certs::CertError| x.to_string();
        let server_tls = certs::server_config(
            certs::load_certs(dir.join("server.pem")).map_err(e)?,
            certs::load_private_key(dir.join("server.key")).map_err(e)?,
        )
        .map_err(e)?;
        let roots =
            certs::root_store(certs::load_certs(dir.join("ca.pem")).map_err(e)?).map_err(e)?;
        let mut client_tls = certs::client_config(roots).map_err(e)?;
        if !resumption {
            client_tls.resumption = rustls::client::Resumption::disabled();
        }
        let hex = std::fs::read_to_string(dir.join("secret.hex")).map_err(|x| x.to_string())?;
        let secret = Secret::from_hex(hex.trim()).map_err(|x| x.to_string())?;
        Ok(Self {
            server_tls: Arc::new(server_tls),
            client_tls: Arc::new(client_tls),
            secret,
        })
    }

    /// A jsonlink core configuration for `mode` (keepalive at its default).
    pub(crate) fn jsonlink_config(&self, mode: Mode, server: bool) -> Arc<Config> {
        let mut c = Config::new(self.secret.clone(), identity(server));
        mode.apply(&mut c);
        Arc::new(c)
    }
}

/// The identity of the benchmark's server or client, on every stack.
pub(crate) fn identity(server: bool) -> Identity {
    let node = if server {
        "bench-server"
    } else {
        "bench-client"
    };
    Identity::new(node, "jsonlink-bench")
}

/// The name the server's certificate is for (`DevPki`'s leaf).
pub(crate) fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("a valid DNS name")
}

/// Writes certificates and a secret for one benchmark run into a fresh
/// temporary directory.
pub(crate) fn make_material_dir() -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("jsonlink-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let pki = jsonlink_rt::DevPki::generate().map_err(|e| e.to_string())?;
    pki.write_pem(&dir).map_err(|e| e.to_string())?;
    let secret = Secret::generate().map_err(|e| e.to_string())?;
    std::fs::write(dir.join("secret.hex"), secret.to_hex()).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}
