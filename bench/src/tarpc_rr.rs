//! The Rust peer a user would pick instead: tarpc with its serde-json
//! transport (length-delimited JSON) over the same tokio-rustls streams and
//! rustls configurations, request/response only.
#![allow(missing_docs, unreachable_pub)]

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::Value;
use tarpc::serde_transport;
use tarpc::server::{BaseChannel, Channel as _};
use tarpc::tokio_serde::formats::Json;
use tarpc::tokio_util::codec::length_delimited::LengthDelimitedCodec;
use tokio::net::{TcpListener, TcpStream};

use crate::opts::Opts;
use crate::scenario::{add_up, body, round_trips, rr_result, secs_since};
use crate::setup::{Material, server_name};

/// The request and response body: the same fields as the other stacks' body.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Body {
    pub op: String,
    pub seq: u64,
    pub data: String,
}

#[tarpc::service]
pub trait Echo {
    /// Returns its argument.
    async fn echo(body: Body) -> Body;
}

#[derive(Clone)]
struct EchoServer;

impl Echo for EchoServer {
    async fn echo(self, _: tarpc::context::Context, body: Body) -> Body {
        body
    }
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// The tarpc server process (tokio only).
pub(crate) async fn server(m: Arc<Material>) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    println!("PORT {}", listener.local_addr()?.port());
    let acceptor = tokio_rustls::TlsAcceptor::from(m.server_tls.clone());
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let framed = LengthDelimitedCodec::builder().new_framed(tls);
            let transport = serde_transport::new(framed, Json::default());
            BaseChannel::with_defaults(transport)
                .execute(EchoServer.serve())
                .for_each(spawn)
                .await;
        });
    }
}

/// `k` callers, each a task of its own, for `dur`: (round trips, seconds,
/// latencies).
async fn run(
    client: &EchoClient,
    b: &Body,
    k: usize,
    dur: Duration,
) -> io::Result<(u64, f64, Vec<u64>)> {
    let t0 = Instant::now();
    let end = t0 + dur;
    let mut set = tokio::task::JoinSet::new();
    // Shared, so a call's future owns a handle for one reference count
    // rather than a clone of tarpc's client.
    let client = Arc::new(client.clone());
    for _ in 0..k {
        let client = client.clone();
        let b = b.clone();
        set.spawn(round_trips(k, end, move || {
            let (client, b) = (client.clone(), b.clone());
            async move {
                let mut ctx = tarpc::context::current();
                ctx.deadline = Instant::now() + Duration::from_secs(30);
                client.echo(ctx, b).await.map_err(io::Error::other)?;
                Ok(())
            }
        }));
    }
    let mut callers = Vec::with_capacity(k);
    while let Some(r) = set.join_next().await {
        callers.push(r.map_err(io::Error::other)?);
    }
    let (n, lat) = add_up(callers)?;
    Ok((n, secs_since(t0), lat))
}

/// The tarpc client process: request/response with `--inflight` outstanding.
pub(crate) async fn client(m: Arc<Material>, o: Opts) -> io::Result<Value> {
    let port: u16 = o.num("port", 0);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let tls = tokio_rustls::TlsConnector::from(m.client_tls.clone())
        .connect(server_name(), tcp)
        .await?;
    let framed = LengthDelimitedCodec::builder().new_framed(tls);
    let transport = serde_transport::new(framed, Json::default());
    let client = EchoClient::new(tarpc::client::Config::default(), transport).spawn();
    let b: Body = serde_json::from_str(body(o.num("size", 100)).get()).map_err(io::Error::other)?;
    let k: usize = o.num("inflight", 1);
    run(&client, &b, k, o.warmup()).await?;
    let (n, secs, lat) = run(&client, &b, k, o.measured()).await?;
    Ok(rr_result(n, secs, k, lat))
}
