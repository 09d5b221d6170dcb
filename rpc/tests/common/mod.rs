//! Shared by the socket tests: a server and client pair on 127.0.0.1,
//! fault-outcome recording, log capture.
#![allow(dead_code, unreachable_pub)]

use jsonlink_rpc::{LinkOptions, Registry};
use jsonlink_tokio::{self as jl, Client, DevPki, Identity, Secret, Server};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Records a fault case's outcome as jsonlink-tests' `faults::record` does:
/// `$JSONLINK_FAULT_RESULTS/<id>` (a sub-case `P6/x` as `P6~x`) when the
/// variable is set (scripts/check.sh sets it; `fault_table` compares).
pub fn record(id: &str, outcome: &str) {
    if let Some(dir) = std::env::var_os("JSONLINK_FAULT_RESULTS") {
        let dir = std::path::PathBuf::from(dir);
        let path = dir.join(id.replace('/', "~"));
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, outcome))
            .unwrap_or_else(|e| panic!("recording {id} in {}: {e}", path.display()));
    }
}

pub struct Pair {
    pub pki: DevPki,
    pub secret: Secret,
    pub server: Server,
    pub client: Client,
}

/// A server serving `registry` over `rpc.call` and a client connected to it
/// (node `cli-1`, designation `dashboard`).
pub async fn pair(registry: Registry, options: LinkOptions) -> Pair {
    let pki = DevPki::generate().expect("dev pki");
    let secret = Secret::generate().expect("secret");
    let server = jl::server(
        pki.server_config().expect("tls"),
        secret.clone(),
        Identity::new("srv-1", "procs"),
    )
    .bind("127.0.0.1:0".parse().expect("addr"))
    .await
    .expect("bind");
    jsonlink_rpc::serve(server.handlers(), registry, jl::runtime(), options);
    let client = jl::client(
        server.local_addr(),
        pki.client_config().expect("tls"),
        pki.server_name(),
        secret.clone(),
        Identity::new("cli-1", "dashboard"),
    )
    .connect()
    .await
    .expect("connect");
    Pair {
        pki,
        secret,
        server,
        client,
    }
}

/// Everything logged, at every level, by this test binary.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }
}

/// Installs (once) a TRACE-level subscriber writing into the capture.
pub fn capture_logs() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .init();
        capture
    })
}
