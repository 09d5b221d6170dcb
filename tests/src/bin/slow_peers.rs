//! The adversaries of the L2 load test (tests/tests/load.rs), in a process
//! of their own so that the test process's resident memory is the server's
//! (plus one well-behaved client), not the attackers'.
//!
//! Usage: `slow_peers <addr> <ca.pem> <secret-hex> <tcp> <tls> <trickle>
//! <burst> <gap-ms>`. Opens, against the jsonlink server at `addr`:
//!
//! - `tcp` sockets that connect and then stay silent (no TLS);
//! - `tls` sockets that complete TLS and then stay silent;
//! - `trickle` sockets that complete TLS, write `burst` bytes of a hello
//!   that never ends (no `\n`), then one byte every `gap-ms` until one byte
//!   short of `burst + 4096`, then stay silent;
//! - one reader that authenticates with the real handshake (secret
//!   `secret-hex`) and then never reads again.
//!
//! Prints `ready` on stdout once every socket is open and every burst
//! written, then keeps trickling until its stdin closes (or it is killed).

use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use jsonlink_proto::{Config, Identity, Secret, Side};
use jsonlink_tests::RawTlsClient;
use tokio::net::TcpStream;

/// Sockets opened at once.
const BATCH: usize = 100;
/// Bytes a trickling socket may add after its burst.
const TRICKLE_MAX: usize = 4096;

struct Args {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    secret: Secret,
    tcp: usize,
    tls_silent: usize,
    trickle: usize,
    burst: usize,
    gap: Duration,
}

fn parse() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [addr, ca, secret, tcp, tls, trickle, burst, gap] = a.as_slice() else {
        return Err(
            "usage: slow_peers <addr> <ca.pem> <secret-hex> <tcp> <tls> <trickle> <burst> <gap-ms>"
                .into(),
        );
    };
    let num = |s: &str| s.parse::<usize>().map_err(|e| format!("{s}: {e}"));
    let pem = std::fs::read(ca).map_err(|e| format!("{ca}: {e}"))?;
    let certs = jsonlink_rt::certs::certs_from_pem(&pem).map_err(|e| e.to_string())?;
    let roots = jsonlink_rt::certs::root_store(certs).map_err(|e| e.to_string())?;
    let tls_config = jsonlink_rt::certs::client_config(roots).map_err(|e| e.to_string())?;
    Ok(Args {
        addr: addr.parse().map_err(|e| format!("{addr}: {e}"))?,
        tls: Arc::new(tls_config),
        secret: Secret::from_hex(secret).map_err(|e| e.to_string())?,
        tcp: num(tcp)?,
        tls_silent: num(tls)?,
        trickle: num(trickle)?,
        burst: num(burst)?,
        gap: Duration::from_millis(num(gap)? as u64),
    })
}

async fn tls_batch(args: &Args, n: usize) -> Result<Vec<RawTlsClient>, String> {
    let mut out = Vec::with_capacity(n);
    let mut left = n;
    while left > 0 {
        let k = left.min(BATCH);
        left -= k;
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..k {
            batch.spawn(RawTlsClient::connect(args.addr, args.tls.clone()));
        }
        for s in batch.join_all().await {
            out.push(s.map_err(|e| format!("TLS connect: {e}"))?);
        }
    }
    Ok(out)
}

async fn run(args: Args) -> Result<(), String> {
    // Silent after TCP.
    let mut silent_tcp = Vec::with_capacity(args.tcp);
    let mut left = args.tcp;
    while left > 0 {
        let k = left.min(BATCH);
        left -= k;
        let mut batch = tokio::task::JoinSet::new();
        for _ in 0..k {
            batch.spawn(TcpStream::connect(args.addr));
        }
        for s in batch.join_all().await {
            silent_tcp.push(s.map_err(|e| format!("TCP connect: {e}"))?);
        }
    }
    // Silent after TLS.
    let silent_tls = tls_batch(&args, args.tls_silent).await?;
    // A hello that never ends: a burst, then one byte at a time.
    let mut trickling = tls_batch(&args, args.trickle).await?;
    let mut hello = br#"{"t":"hello","pad":""#.to_vec();
    hello.resize(args.burst.max(hello.len()), b'x');
    for s in &mut trickling {
        s.send(&hello).await.map_err(|e| format!("burst: {e}"))?;
    }
    let gap = args.gap;
    for mut s in trickling {
        tokio::spawn(async move {
            for _ in 0..TRICKLE_MAX - 1 {
                tokio::time::sleep(gap).await;
                if s.send(b"x").await.is_err() {
                    return;
                }
            }
            // Silent from here on, until the process ends.
            std::future::pending::<()>().await;
        });
    }
    // Authenticated, then never reads again.
    let mut reader = RawTlsClient::connect(args.addr, args.tls.clone())
        .await
        .map_err(|e| format!("reader TLS: {e}"))?;
    let config = Config::new(args.secret.clone(), Identity::new("never-reads", "load"));
    let _conn = reader
        .handshake(config, Side::Client, Duration::from_secs(30))
        .await
        .map_err(|e| format!("reader handshake: {e}"))?;

    println!("ready");
    let _ = std::io::stdout().flush();
    // Until the test closes our stdin.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut line)
            .is_ok_and(|n| n > 0)
        {
            line.clear();
        }
    })
    .await;
    drop((silent_tcp, silent_tls, reader));
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("slow_peers: {e}");
            return ExitCode::from(2);
        }
    };
    // The file limit is the test's (raised before it starts us).
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("slow_peers: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("slow_peers: {e}");
            ExitCode::from(1)
        }
    }
}
