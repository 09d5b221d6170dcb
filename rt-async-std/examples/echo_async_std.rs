//! jsonlink on async-std (discontinued upstream: prefer smol or tokio): a
//! server and a client on 127.0.0.1 with development certificates, and a
//! request each way. `echo_tokio` and `echo_smol` are the same program on
//! their runtimes; the whole tour is the `demo` example of jsonlink-tokio.
//!
//! Run with `cargo run -p jsonlink-async-std --example echo_async_std`.

use std::time::{Duration, Instant};

use jsonlink_async_std::{self as jl, DevPki, Identity, Link, Secret};
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pki = DevPki::generate()?;
    let secret = Secret::generate()?;
    let server_id = Identity::new("echo-server", "echo");
    let server = jl::server(pki.server_config()?, secret.clone(), server_id)
        .bind(([127, 0, 0, 1], 0).into())
        .await?;
    // {"op":"echo","args":"hi"} is answered {"echo":"hi","from":"echo-client"}.
    let echo = |link: Link, text: String| async move {
        Ok(json!({ "echo": text, "from": link.peer().map(|p| p.node.clone()) }))
    };
    server.handlers().handle_request("echo", echo);

    let client_id = Identity::new("echo-client", "echo");
    let addr = server.local_addr();
    let tls = pki.client_config()?;
    let client = jl::client(addr, tls, pki.server_name(), secret, client_id)
        .connect()
        .await?;
    let status = |_link, _: Value| async { Ok(json!({ "ok": true })) };
    client.handlers().handle_request("status", status);

    let answer: Value = client.request(&json!({"op": "echo", "args": "hi"})).await?;
    println!("client got {answer}");
    let link = server.links().pop().ok_or("no link")?;
    let status: Value = server.request(link.id(), &json!({"op": "status"})).await?;
    println!("server got {status} from {:?}", link.peer());

    client.close().await;
    let deadline = Instant::now() + Duration::from_secs(1);
    server.shutdown(deadline).await;
    Ok(())
}
