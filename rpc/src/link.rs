//! Procedures over jsonlink links (PROTOCOL.md §15): the ops `rpc.call`
//! and `rpc.identity` in a [`Handlers`] table, on a [`Server`] (its clients
//! call it) or on a [`Client`] (its server calls it) alike.
//!
//! - `rpc.call` is a request whose arguments (§11.5) are a CallRequest; the
//!   answer is always a success carrying the CallResponse (the outcome is in
//!   its `code`, as through the HTTP gateway).
//! - `rpc.identity` is a request whose arguments are an Identity (or
//!   `null`): it becomes the link's identity, used by every later call on
//!   that link that carries none; answered `{"code":200,"success":true}`.
//!
//! The link's handshake identity (node, designation) reaches handlers as
//! [`Origin::peer`], never as the call's authorization: anyone holding the
//! link secret can claim any node id.
//!
//! [`Server`]: jsonlink_rt::Server
//! [`Client`]: jsonlink_rt::Client

use crate::registry::{Origin, PeerInfo, Registry, Transport};
use crate::wire::{CallRequest, CallResponse, Identity, ParseLimits, code};
use futures_util::future::{Either, select};
use jsonlink_rt::{Handlers, Link, Request, Runtime};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The op of a procedure call.
pub const CALL_OP: &str = "rpc.call";
/// The op that sets the link's identity.
pub const IDENTITY_OP: &str = "rpc.identity";

/// Options of [`serve`].
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | `call_timeout` | 30 s | a call not answered within it is answered 500 `deadline exceeded` and its future dropped (nested calls with it) |
/// | `parse` | [`ParseLimits::default`] | limits on the CallRequest (nesting depth, name length); the frame itself is bounded by the link's own frame size and nesting limits |
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// How long a call may run.
    pub call_timeout: Duration,
    /// CallRequest parse limits.
    pub parse: ParseLimits,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            parse: ParseLimits::default(),
        }
    }
}

/// Identities set with `rpc.identity`, by link id. Entries of closed links
/// are dropped whenever one is set, so the table holds at most the live
/// links plus those closed since the last set.
#[derive(Default)]
struct Identities(Mutex<HashMap<u64, (Link, Arc<Identity>)>>);

impl Identities {
    fn get(&self, link: &Link) -> Option<Arc<Identity>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&link.id()).map(|(_, i)| i.clone())
    }

    fn set(&self, link: &Link, identity: Option<Identity>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (l, _)| !l.is_closed());
        match identity {
            Some(i) => {
                map.insert(link.id(), (link.clone(), Arc::new(i)));
            }
            None => {
                map.remove(&link.id());
            }
        }
    }
}

/// The jsonlink peer of `link` as a [`PeerInfo`].
pub fn peer_info(link: &Link) -> Option<PeerInfo> {
    link.peer().map(|p| PeerInfo {
        node: p.node.clone(),
        designation: p.designation.clone(),
    })
}

/// Registers `rpc.call` and `rpc.identity` in `handlers` (a server's or a
/// client's), serving `registry`. `rt` is the runtime whose timer enforces
/// [`LinkOptions::call_timeout`].
pub fn serve(handlers: &Handlers, registry: Registry, rt: Arc<dyn Runtime>, options: LinkOptions) {
    let identities = Arc::new(Identities::default());
    let ids = identities.clone();
    handlers.on_request(IDENTITY_OP, move |req: Request| {
        let ids = ids.clone();
        async move {
            let resp = match args_value(req.body.get()) {
                Ok(Value::Null) => {
                    ids.set(&req.link, None);
                    ok_identity()
                }
                Ok(v) => match Identity::from_value(v) {
                    Ok(i) => {
                        ids.set(&req.link, Some(i));
                        ok_identity()
                    }
                    Err(m) => CallResponse::error(code::BAD_REQUEST, m),
                },
                Err(e) => CallResponse::error(code::BAD_REQUEST, format!("not valid JSON: {e}")),
            };
            let _ = req.respond(&resp);
        }
    });
    let options = Arc::new(options);
    handlers.on_request(CALL_OP, move |req: Request| {
        let registry = registry.clone();
        let identities = identities.clone();
        let rt = rt.clone();
        let options = options.clone();
        async move {
            let Request {
                link,
                body,
                responder,
                ..
            } = req;
            let parsed = args_value(body.get())
                .map_err(|e| CallResponse::error(code::BAD_REQUEST, format!("not valid JSON: {e}")))
                .and_then(|v| CallRequest::from_value(v, &options.parse));
            let resp = match parsed {
                Err(resp) => resp,
                Ok(mut call) => {
                    if call.identity.is_none() {
                        call.identity = identities.get(&link).map(|i| (*i).clone());
                    }
                    let deadline = deadline_after(rt.now(), options.call_timeout);
                    let origin = Origin {
                        transport: Transport::Link,
                        remote_addr: Some(link.peer_addr()),
                        connection_id: Some(link.id()),
                        peer: peer_info(&link),
                        deadline: Some(deadline),
                    };
                    let correlation_id = call.correlation_id.clone();
                    run_by(&*rt, registry.call(call, origin), deadline, correlation_id).await
                }
            };
            let _ = responder.respond(&resp);
        }
    });
}

/// The arguments (PROTOCOL.md §11.5) of a body, parsed once: `args` of
/// `{"op":…,"args":…}`, else the object without `op`. (Member order is not
/// kept in the flat shape; a CallRequest or Identity does not need it.)
fn args_value(body: &str) -> Result<Value, serde_json::Error> {
    let v: Value = serde_json::from_str(body)?;
    Ok(match v {
        Value::Object(mut map) if map.contains_key("op") => {
            if map.len() == 2 && map.contains_key("args") {
                map.remove("args").unwrap_or(Value::Null)
            } else {
                map.remove("op");
                Value::Object(map)
            }
        }
        other => other,
    })
}

fn ok_identity() -> CallResponse {
    CallResponse {
        code: code::OK,
        success: true,
        data: None,
        message: None,
        correlation_id: None,
    }
}

fn deadline_after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365))
}

/// Runs `call` until `deadline` on `rt`'s timer; past it the call's future
/// is dropped and the answer is 500 `deadline exceeded`.
pub async fn run_by(
    rt: &dyn Runtime,
    call: impl Future<Output = CallResponse> + Send + 'static,
    deadline: Instant,
    correlation_id: Option<Value>,
) -> CallResponse {
    let call = Box::pin(call);
    match select(call, rt.sleep_until(deadline)).await {
        Either::Left((resp, _)) => resp,
        Either::Right(((), _)) => {
            tracing::warn!(target: "jsonlink::rpc", "procedure call exceeded its deadline");
            CallResponse::error(code::INTERNAL, "deadline exceeded")
                .with_correlation_id(correlation_id)
        }
    }
}
