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
//! After [`Event::Closed`], write out what `poll_transmit` still gives (the
//! close frame), then shut the transport down. A graceful close is not
//! acknowledged: the peer may already have dropped its socket, so errors
//! while tearing down the transport at that point are expected and benign.
//!
//! ## Two connections by hand
//!
//! ```
#![doc = include_str!("../examples/two_peers.rs")]
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod args;
mod binding;
mod config;
mod connection;
pub mod crypto;
mod error;
mod event;
mod line_reader;
mod secret;
mod wire;

#[cfg(feature = "testing")]
pub mod internals;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use binding::{EXPORTER_LABEL, EXPORTER_LEN};
pub use config::*;
pub use connection::{
    Connection, ConnectionParams, MAX_ADDR_LEN, MAX_EXTENSIONS, MAX_REASON_LEN, MAX_SIGN_ALGS,
    MIN_PEER_MAX_FRAME, MIN_RELAYED_MAX_FRAME, RELAY_WRAPPER_OVERHEAD, SEAL_ALG,
    SUPPORTED_VERSIONS, Side, Stats,
};
pub use error::{CloseCode, CloseReason, ProtocolError, RemoteError, RequestError, SendError};
pub use event::{Authenticated, ClientId, Event, Joined, Op, PeerRequestId, RawJson, RequestId};
pub use secret::{GENERATED_SECRET_LEN, Secret, SecretError};
