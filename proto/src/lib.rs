//! # jsonlink-proto
//!
//! The sans-IO heart of jsonlink: one [`Connection`] value per link, with no
//! sockets, no clocks and no threads. Bytes and time go in; bytes to write,
//! the next deadline and [`Event`]s come out. The wire protocol is specified
//! in `PROTOCOL.md` at the repository root.
//!
//! ## The run loop
//!
//! After every input or command, drain the outputs until none remain, then
//! wait for whichever comes first: input, a command, or the deadline.
//!
//! ```text
//! loop {
//!     // (D) outputs: drain all of them
//!     conn.poll_transmit(&mut wbuf);            // write wbuf to the transport
//!     while let Some(ev) = conn.poll_event() { … }
//!     if conn.is_closed() && wbuf.is_empty() { break }   // after Closed: flush, then shut the transport
//!     let deadline = conn.poll_timeout();
//!
//!     // wait for one of:
//!     //   bytes from the transport (only while conn.wants_input())
//!     //       → conn.handle_input(now, &bytes)   (EOF → conn.handle_eof(now))
//!     //   a command from the application
//!     //       → conn.send(..) / request(..) / respond(..) / ping(..) / close(..)
//!     //   now >= deadline
//!     //       → conn.handle_timeout(now)
//! }
//! ```
//!
//! ## Two connections by hand
//!
//! ```
//! use std::sync::Arc;
//! use std::time::{Duration, Instant};
//! use jsonlink_proto::{Config, Connection, ConnectionParams, Event, Identity, Secret, Side};
//! use serde_json::value::RawValue;
//!
//! let secret = Secret::from_hex("000102030405060708090a0b0c0d0e0f").unwrap();
//! let client_cfg = Arc::new(Config::new(secret.clone(), Identity::new("n1", "client")));
//! let server_cfg = Arc::new(Config::new(secret, Identity::new("n2", "server")));
//! let now = Instant::now(); // the caller owns the clock
//! let mut client = Connection::new(client_cfg, Side::Client, now, ConnectionParams::default());
//! let mut server = Connection::new(server_cfg, Side::Server, now, ConnectionParams::default());
//!
//! // Shuttle bytes until both are quiet.
//! fn pump(a: &mut Connection, b: &mut Connection, now: Instant) {
//!     loop {
//!         let (mut x, mut y) = (Vec::new(), Vec::new());
//!         a.poll_transmit(&mut x);
//!         b.poll_transmit(&mut y);
//!         if x.is_empty() && y.is_empty() { break }
//!         b.handle_input(now, &x);
//!         a.handle_input(now, &y);
//!     }
//! }
//! pump(&mut client, &mut server, now);
//! assert!(matches!(client.poll_event(), Some(Event::Authenticated(_))));
//! assert!(matches!(server.poll_event(), Some(Event::Authenticated(_))));
//!
//! let body = RawValue::from_string(r#"{"op":"add","a":2,"b":3}"#.into()).unwrap();
//! let id = client.request(now, &body, Some(Duration::from_secs(5))).unwrap();
//! pump(&mut client, &mut server, now);
//! let Some(Event::Request { id: rid, op, .. }) = server.poll_event() else { panic!() };
//! assert_eq!(op.as_deref(), Some("add"));
//! server.respond(rid, Ok(&RawValue::from_string("5".into()).unwrap())).unwrap();
//! pump(&mut client, &mut server, now);
//! assert_eq!(
//!     client.poll_event(),
//!     Some(Event::Response { id, body: jsonlink_proto::Payload::from_json("5").unwrap() })
//! );
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing))]

mod config;
mod connection;
pub mod crypto;
mod error;
mod event;
pub mod frame;
mod secret;
mod wire;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use config::*;
pub use connection::{
    Connection, ConnectionParams, MAX_REASON_LEN, MIN_PEER_MAX_FRAME, SEAL_ALG, SIGN_ALG,
    SUPPORTED_VERSIONS, Side, Stats,
};
pub use error::{CloseCode, CloseReason, ProtocolError, RemoteError, RequestError, SendError};
pub use event::{Authenticated, Event, Payload, PeerRequestId, RequestId};
pub use secret::{GENERATED_SECRET_LEN, Secret, SecretError};
