//! jsonlink on smol: a server and a client on 127.0.0.1 with development
//! certificates; a message by op, and a request each way.
//!
//! Run with `cargo run -p jsonlink-smol --example echo_smol`.

use std::time::Duration;

use jsonlink_smol::{DevPki, Identity, Link, Secret};
use serde_json::{Value, json};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    smol::block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let pki = DevPki::generate()?;
    let secret = Secret::generate()?;

    let server = jsonlink_smol::server(
        pki.server_config()?,
        secret.clone(),
        Identity::new("echo-server", "echo"),
    )
    .bind(([127, 0, 0, 1], 0).into())
    .await?;
    let (log_tx, log_rx) = async_channel::bounded(1);
    server.handlers().on_message("log", move |m| {
        let log_tx = log_tx.clone();
        async move {
            let _ = log_tx.send(m.body.get().to_owned()).await;
        }
    });
    server
        .handlers()
        .handle_request("echo", |link: Link, v: Value| async move {
            Ok(json!({ "echo": v["text"], "to": link.peer().map(|p| p.node.clone()) }))
        });
    println!("server listening on {}", server.local_addr());

    let client = jsonlink_smol::client(
        server.local_addr(),
        pki.client_config()?,
        pki.server_name(),
        secret,
        Identity::new("echo-client", "echo"),
    )
    .connect()
    .await?;
    client
        .handlers()
        .handle_request("status", |_link, _: Value| async move {
            Ok(json!({ "ok": true }))
        });

    client
        .send(&json!({ "op": "log", "text": "hello" }))
        .await?;
    println!("server got message: {}", log_rx.recv().await?);

    let answer: Value = client
        .request(&json!({ "op": "echo", "text": "hi" }))
        .await?;
    println!("client got response: {answer}");

    let link = server.links().into_iter().next().ok_or("no link")?;
    let status: Value = server
        .request(link.id(), &json!({ "op": "status" }))
        .await?;
    println!("server got response from {:?}: {status}", link.peer());

    client.close().await;
    server
        .shutdown(std::time::Instant::now() + Duration::from_secs(1))
        .await;
    Ok(())
}
