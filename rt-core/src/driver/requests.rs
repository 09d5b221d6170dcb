//! Our requests the core has taken, each waiting for its one outcome.

use futures_channel::oneshot;
use jsonlink_proto::{RawJson, RequestId};
use rustc_hash::FxHashMap;

use crate::context::LinkCtx;
use crate::error::Error;
use crate::stats::{bump, drop_one};

/// Where a request's caller waits for its outcome.
pub(crate) type Reply = oneshot::Sender<Result<RawJson, Error>>;

/// The callers of our requests in flight, by the core's request id, each
/// counted in [`Stats::requests_in_flight`](crate::Stats::requests_in_flight)
/// until its outcome.
#[derive(Default)]
pub(super) struct Requests {
    /// Keyed by the core's own sequential request ids, never the peer's:
    /// an unkeyed fast hash is safe.
    table: FxHashMap<RequestId, Reply>,
}

impl Requests {
    /// A request the core took as `id`.
    pub(super) fn insert(&mut self, ctx: &LinkCtx, id: RequestId, reply: Reply) {
        bump(&ctx.counters.requests_out, 1);
        bump(&ctx.counters.requests_in_flight, 1);
        self.table.insert(id, reply);
    }

    /// The outcome of request `id` (the core gives each exactly one).
    pub(super) fn complete(
        &mut self,
        ctx: &LinkCtx,
        id: RequestId,
        outcome: Result<RawJson, Error>,
    ) {
        if let Some(reply) = self.table.remove(&id) {
            drop_one(&ctx.counters.requests_in_flight);
            let _ = reply.send(outcome);
        }
    }

    /// The link ended: every request still in flight fails with
    /// [`Error::ConnectionLost`].
    pub(super) fn fail_all(&mut self, ctx: &LinkCtx) {
        for (_, reply) in self.table.drain() {
            drop_one(&ctx.counters.requests_in_flight);
            let _ = reply.send(Err(Error::ConnectionLost));
        }
    }
}
