//! [`Trace`]: a ready middleware that puts every call in a `tracing` span
//! and logs its outcome.

use crate::registry::{BoxFuture, CallInfo, Middleware, Next};
use crate::wire::CallResponse;
use std::time::Instant;
use tracing::Instrument as _;

/// Wraps each call in a span `rpc.call` (target `jsonlink::rpc`) with the
/// scope, procedure, version, transport, peer node, connection id, nesting
/// depth and whether the call carries an authorization (never the
/// credential itself), and logs its code and duration at `debug` (`warn`
/// for a 500). Add it first to see the time of the whole chain.
#[derive(Debug, Clone, Copy, Default)]
pub struct Trace;

impl Middleware for Trace {
    fn handle<'a>(&'a self, call: &'a CallInfo<'a>, next: Next<'a>) -> BoxFuture<'a, CallResponse> {
        let span = tracing::info_span!(
            target: "jsonlink::rpc",
            "rpc.call",
            scope = call.scope,
            procedure = call.procedure,
            version = call.version,
            transport = ?call.origin.transport,
            peer = call.origin.peer.as_ref().map(|p| p.node.as_str()),
            connection = call.origin.connection_id,
            depth = call.depth,
            authorized = call.identity.is_some_and(|i| i.authorization.is_some()),
        );
        Box::pin(
            async move {
                let t0 = Instant::now();
                let resp = next.run(call).await;
                let micros = t0.elapsed().as_micros() as u64;
                if resp.code >= 500 {
                    tracing::warn!(target: "jsonlink::rpc", code = resp.code, micros, "call answered");
                } else {
                    tracing::debug!(target: "jsonlink::rpc", code = resp.code, micros, "call answered");
                }
                resp
            }
            .instrument(span),
        )
    }
}
