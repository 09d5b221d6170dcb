//! Drives two jsonlink connections by hand: no runtime, no sockets; the
//! caller shuttles bytes and owns the clock. Run: `cargo run -p jsonlink-proto --example two_peers`.
#![allow(clippy::disallowed_methods)] // an example owns the real clock

use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Identity, Secret, Side};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let secret = Secret::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
    let client_cfg = Arc::new(Config::new(secret.clone(), Identity::new("n1", "client")));
    let server_cfg = Arc::new(Config::new(secret, Identity::new("n2", "server")));
    let now = Instant::now(); // the caller owns the clock
    let mut client = Connection::new(client_cfg, Side::Client, now, ConnectionParams::default());
    let mut server = Connection::new(server_cfg, Side::Server, now, ConnectionParams::default());

    // Shuttle bytes until both are quiet.
    fn pump(a: &mut Connection, b: &mut Connection, now: Instant) {
        loop {
            let (mut x, mut y) = (Vec::new(), Vec::new());
            a.poll_transmit(&mut x);
            b.poll_transmit(&mut y);
            if x.is_empty() && y.is_empty() {
                break;
            }
            b.handle_input(now, &x);
            a.handle_input(now, &y);
        }
    }
    pump(&mut client, &mut server, now);
    assert!(matches!(client.poll_event(), Some(Event::Authenticated(_))));
    assert!(matches!(server.poll_event(), Some(Event::Authenticated(_))));

    let body = RawValue::from_string(r#"{"op":"add","a":2,"b":3}"#.into()).unwrap();
    let id = client
        .request(now, &body, Some(Duration::from_secs(5)))
        .unwrap();
    pump(&mut client, &mut server, now);
    let Some(Event::Request { id: rid, op, .. }) = server.poll_event() else {
        panic!()
    };
    assert_eq!(op.as_deref(), Some("add"));
    server
        .respond(rid, Ok(&RawValue::from_string("5".into()).unwrap()))
        .unwrap();
    pump(&mut client, &mut server, now);
    assert_eq!(
        client.poll_event(),
        Some(Event::Response {
            id,
            body: jsonlink_proto::RawJson::from_json("5").unwrap()
        })
    );
    println!("request {id} answered: 5");
}
