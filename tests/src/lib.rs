//! The one harness of jsonlink's workspace integration tests (the files of
//! `tests/tests/`), over real TLS on 127.0.0.1:
//!
//! - [`runtimes`]: the runtimes a test runs on (tokio, smol on its global
//!   executor or on N threads of its own, async-std) and the runners that
//!   start them for one test, bounded in time: [`on_tokio`], [`on_smol`],
//!   [`on_each_runtime`], [`on_both`].
//! - [`fixtures`]: certificates, a secret, server and client builders
//!   wired to them ([`Fixture`]), a running server with the common
//!   handlers, requests held for the test to answer.
//! - [`waits`]: awaiting a server's or client's events, a future within a
//!   bound, and [`eventually`] for counters with no event to await.
//! - [`adversary`]: an adversarial raw-TLS peer (client and server) that
//!   sends arbitrary bytes at arbitrary times.
//! - [`gauges`]: resident memory, open descriptors, CPU time, live tasks.
//! - [`logs`]: `tracing` output captured for a test to search.
//! - [`faults`]: the fault table and [`record`], which every fault case
//!   calls with the outcome it observed.
//!
//! [`on_tokio`]: runtimes::on_tokio
//! [`on_smol`]: runtimes::on_smol
//! [`on_each_runtime`]: runtimes::on_each_runtime
//! [`on_both`]: runtimes::on_both
//! [`Fixture`]: fixtures::Fixture
//! [`eventually`]: waits::eventually
//! [`record`]: faults::record
#![forbid(unsafe_code)]

pub mod adversary;
pub mod faults;
pub mod fixtures;
pub mod gauges;
pub mod logs;
pub mod runtimes;
pub mod waits;

pub use adversary::{RawTls, RawTlsClient, RawTlsServer};
pub use gauges::{CountingRuntime, cpu_time, open_fds, rss_bytes};
pub use waits::eventually;

/// The harness under the names of its first version (one `fixture`
/// module), for tests written against them.
pub mod fixture {
    pub use crate::fixtures::{
        Add, ClientParts, Fixture, HeldRequests, add_handler, bind, closed_port, common_handlers,
        hold_requests, is_graceful_shutdown, localhost, ms,
    };
    pub use crate::runtimes::{Gauges, LIMIT, on_tokio, on_tokio_within};
    pub use crate::waits::{SETTLE, authenticated, closed, error_event, rebind};
}
