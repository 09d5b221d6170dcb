//! Shared pieces: options, runtimes, certificates, message bodies, stream I/O.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::io::{AsyncReadExt as _, AsyncWriteExt as _};
use jsonlink_proto::{Config, Identity, Policy, Secret, SignAlg};
use jsonlink_rt::certs;
use jsonlink_rt::{BoxStream, Runtime};
use serde_json::value::RawValue;

/// Read buffer per connection, the same for every stack (jsonlink-rt's
/// `DEFAULT_READ_BUFFER`).
pub(crate) const READ_BUF: usize = 16 * 1024;

/// Parsed `--key value` options.
#[derive(Debug, Clone, Default)]
pub(crate) struct Opts(HashMap<String, String>);

impl Opts {
    pub(crate) fn parse(args: &[String]) -> Result<Self, String> {
        let mut m = HashMap::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(k) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if k == "quick" {
                m.insert(k.to_owned(), "1".to_owned());
                continue;
            }
            let v = it.next().ok_or_else(|| format!("--{k} needs a value"))?;
            m.insert(k.to_owned(), v.clone());
        }
        Ok(Self(m))
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub(crate) fn str_or<'a>(&'a self, k: &str, d: &'a str) -> &'a str {
        self.get(k).unwrap_or(d)
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, k: &str, d: T) -> T {
        self.get(k).and_then(|v| v.parse().ok()).unwrap_or(d)
    }

    pub(crate) fn secs(&self, k: &str, d: f64) -> Duration {
        Duration::from_secs_f64(self.num(k, d))
    }
}

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

    pub(crate) fn policies(self) -> (Policy, Policy) {
        match self {
            Self::Plain | Self::Inline => (Policy::Off, Policy::Off),
            Self::Signed | Self::SignedHmac => (Policy::Required, Policy::Off),
            Self::Sealed => (Policy::Required, Policy::Required),
        }
    }

    /// The signing algorithms both sides accept.
    pub(crate) fn sign_algs(self) -> Vec<SignAlg> {
        match self {
            Self::SignedHmac => vec![SignAlg::HmacSha256],
            _ => SignAlg::ALL.to_vec(),
        }
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
        let id = if server {
            Identity::new("bench-server", "jsonlink-bench")
        } else {
            Identity::new("bench-client", "jsonlink-bench")
        };
        let mut c = Config::new(self.secret.clone(), id);
        (c.signing, c.encryption) = mode.policies();
        c.sign_algs = mode.sign_algs();
        Arc::new(c)
    }
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

/// A JSON object body of about `len` bytes:
/// `{"op":"bench","seq":1,"data":"xxx…"}`.
pub(crate) fn body(len: usize) -> Box<RawValue> {
    let head = r#"{"op":"bench","seq":1,"data":""}"#.len();
    let pad = "x".repeat(len.saturating_sub(head));
    RawValue::from_string(format!(r#"{{"op":"bench","seq":1,"data":"{pad}"}}"#))
        .expect("valid JSON")
}

/// The request a client sends to learn how many messages the server has
/// parsed so far (answered with `{"count":N}`).
pub(crate) fn count_body() -> Box<RawValue> {
    RawValue::from_string(r#"{"op":"count"}"#.to_owned()).expect("valid JSON")
}

/// Parses `{"count":N}`.
pub(crate) fn parse_count(v: &RawValue) -> u64 {
    #[derive(serde::Deserialize)]
    struct C {
        count: u64,
    }
    serde_json::from_str::<C>(v.get()).map_or(0, |c| c.count)
}

/// Writes all of `out` and flushes, then clears it.
pub(crate) async fn write_out(s: &mut BoxStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        s.write_all(out).await?;
        s.flush().await?;
        out.clear();
    }
    Ok(())
}

/// Reads once; EOF is an error here.
pub(crate) async fn read_some(s: &mut BoxStream, buf: &mut [u8]) -> io::Result<usize> {
    let n = s.read(buf).await?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}

/// Reads a process's resident set size in KiB from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
pub(crate) fn raise_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0)
}

/// Percentile (0..=1) of sorted samples.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(0)
}

/// Elapsed seconds since `t0`, never zero.
/// One caller's round trips until `end`: how many, and at one in flight
/// (`k == 1`) each one's latency in nanoseconds. The clock is read per
/// round trip only to time it, else once per 16, as the raw baseline reads
/// it once per batch it reads; every stack's callers share this loop.
pub(crate) async fn round_trips<F, Fut>(
    k: usize,
    end: Instant,
    mut call: F,
) -> io::Result<(u64, Vec<u64>)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<()>>,
{
    let per_check = if k == 1 { 1 } else { 16 };
    let (mut n, mut lat) = (0u64, Vec::new());
    while Instant::now() < end {
        for _ in 0..per_check {
            let t = (k == 1).then(Instant::now);
            call().await?;
            n += 1;
            if let Some(t) = t {
                lat.push(t.elapsed().as_nanos() as u64);
            }
        }
    }
    Ok((n, lat))
}

pub(crate) fn secs_since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64().max(1e-9)
}
