//! The harness every integration test of the core shares (`mod common;`):
//! fixtures that build a [`Pair`](jsonlink_proto::testing::Pair) (two
//! connections joined in memory, with virtual time), readers that name
//! what they pick out of a peer's events and output, what the property
//! tests share (a strategy for a side, a request ledger), [`record`] for
//! the fault table, and PROTOCOL.md's test vectors.
// Each test binary uses a part of the harness: the rest is unused there.
#![allow(unreachable_pub, dead_code, unused_imports, clippy::unwrap_used)]

mod events;
mod fixtures;
mod props;
mod record;
pub mod vectors;
mod wire;

pub use events::*;
pub use fixtures::*;
pub use props::*;
pub use record::record;
pub use wire::*;
