//! Shared by the socket tests: a server and client pair on 127.0.0.1, and
//! the workspace harness's fault-outcome recording and log capture.
#![allow(dead_code, unreachable_pub)]

use jsonlink_rpc::{LinkOptions, Registry};
use jsonlink_tokio::{self as jl, Client, DevPki, Identity, Secret, Server};

/// Records a fault case's outcome in the workspace's results table
/// (`tests/faults/expected.md`, checked by `fault_table`).
pub fn record(id: &str, outcome: &str) {
    jsonlink_tests::faults::record(id, outcome);
}

/// Everything logged, at every level, by this test binary.
pub fn capture_logs() -> &'static jsonlink_tests::logs::Capture {
    jsonlink_tests::logs::capture_logs(tracing::Level::TRACE)
}

pub struct Pair {
    pub pki: DevPki,
    pub secret: Secret,
    pub server: Server,
    pub client: Client,
}

impl Pair {
    /// Closes the client, then shuts the server down (5 s drain at most).
    pub async fn close(self) {
        self.client.close().await;
        self.server
            .shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5))
            .await;
    }
}

/// A server serving `registry` over `rpc.call` and a client connected to it
/// (node `cli-1`, designation `dashboard`); the server's graceful close
/// waits 200 ms at most for requests in flight.
pub async fn pair(registry: Registry, options: LinkOptions) -> Pair {
    let pki = DevPki::generate().expect("dev pki");
    let secret = Secret::generate().expect("secret");
    let server = jl::server(
        pki.server_config().expect("tls"),
        secret.clone(),
        Identity::new("srv-1", "procs"),
    )
    .close_timeout(std::time::Duration::from_millis(200))
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
