//! Procedures over jsonlink links (PROTOCOL.md §11.6): the ops `rpc.call`
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
use crate::wire::{
    CallRequest, CallResponse, Identity, ParseLimits, WireCall, code, exceeds_depth,
};
use futures_util::future::{Either, select};
use jsonlink_rt::{Handlers, Link, Request, Runtime};
use serde_json::Value;
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

/// The op of a procedure call.
pub const CALL_OP: &str = "rpc.call";
/// The op that sets the link's identity.
pub const IDENTITY_OP: &str = "rpc.identity";

/// The nesting depth a link frame may have (PROTOCOL.md §4.3: deeper is
/// refused by the link itself), as the default `max_depth` over links.
const LINK_DEPTH: usize = 128;

/// Options of [`serve`].
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | `call_timeout` | 30 s | a call not answered within it is answered 500 `deadline exceeded` and its future dropped (nested calls with it) |
/// | `parse` | [`ParseLimits::default`] with `max_depth` 128 | limits on the CallRequest (name length; nesting depth, which a link already bounds at 127 levels per frame, PROTOCOL.md §4.3, so by default no scan is added; set `max_depth` below 127 to scan each call for it) |
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
            parse: ParseLimits {
                max_depth: LINK_DEPTH,
                ..ParseLimits::default()
            },
        }
    }
}

/// Identities set with `rpc.identity`, by link id. Entries of closed links
/// are dropped whenever one is set, so the table holds at most the live
/// links plus those closed since the last set.
#[derive(Default)]
struct Identities {
    map: Mutex<HashMap<u64, (Link, Arc<Identity>)>>,
    /// Whether the map has entries: calls skip the lock while none is set.
    any: AtomicBool,
}

impl Identities {
    fn get(&self, link: &Link) -> Option<Arc<Identity>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&link.id()).map(|(_, i)| i.clone())
    }

    fn set(&self, link: &Link, identity: Option<Identity>) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, (l, _)| !l.is_closed());
        match identity {
            Some(i) => {
                map.insert(link.id(), (link.clone(), Arc::new(i)));
            }
            None => {
                map.remove(&link.id());
            }
        }
        self.any.store(!map.is_empty(), Ordering::Release);
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
    struct Served {
        registry: Registry,
        identities: Arc<Identities>,
        rt: Arc<dyn Runtime>,
        options: LinkOptions,
    }
    let served = Arc::new(Served {
        registry,
        identities,
        rt,
        options,
    });
    handlers.on_request(CALL_OP, move |req: Request| {
        let s = served.clone();
        async move {
            let Request {
                link,
                body,
                responder,
                ..
            } = req;
            let resp = match parse_call(body.get(), &s.options.parse) {
                Err(resp) => resp,
                Ok(call) => {
                    let link_identity = if call.identity.is_none() {
                        s.identities.get(&link)
                    } else {
                        None
                    };
                    let deadline = deadline_after(s.rt.now(), s.options.call_timeout);
                    let origin = Origin {
                        transport: Transport::Link,
                        remote_addr: Some(link.peer_addr()),
                        connection_id: Some(link.id()),
                        peer: peer_info(&link),
                        deadline: Some(deadline),
                    };
                    let correlation_id = call.correlation_id.clone();
                    let call = s.registry.call_as(call, link_identity, origin);
                    run_by(&*s.rt, call, deadline, correlation_id).await
                }
            };
            let _ = responder.respond(&resp);
        }
    });
}

/// The CallRequest of an `rpc.call` body, parsed in one pass: the flat
/// shape `{"op":"rpc.call","procedure":…,…}` (what [`LinkTransport`]
/// sends) or the wrapped `{"op":"rpc.call","args":{…}}` (§11.5 rule 1).
///
/// [`LinkTransport`]: crate::LinkTransport
fn parse_call(body: &str, limits: &ParseLimits) -> Result<CallRequest, CallResponse> {
    let bad = |m: String| CallResponse::error(code::BAD_REQUEST, m);
    let max = limits.max_depth.min(128);
    if max < LINK_DEPTH - 1
        && let Some(depth) = exceeds_depth(body.as_bytes(), max.saturating_add(1))
    {
        // The body object adds one level around a flat CallRequest.
        return Err(bad(format!(
            "CallRequest nested deeper than {max} levels (at least {})",
            depth - 1
        )));
    }
    let w: WireCall =
        serde_json::from_str(body).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let only_args = w.procedure.is_none()
        && w.scope.is_none()
        && w.version.is_none()
        && w.correlation_id.is_none()
        && w.identity.is_none()
        && !w.others;
    if w.op && only_args {
        // {"op":…,"args":X}: X is the CallRequest.
        let inner = w
            .args
            .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
        return CallRequest::from_value(inner, limits);
    }
    w.into_request(limits)
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
/// is dropped and the answer is 500 `deadline exceeded`. A call that is
/// ready at its first poll (a handler that does not wait) arms no timer.
pub async fn run_by(
    rt: &dyn Runtime,
    call: impl Future<Output = CallResponse> + Send + 'static,
    deadline: Instant,
    correlation_id: Option<Value>,
) -> CallResponse {
    let mut call = std::pin::pin!(call);
    if let Poll::Ready(resp) = poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
        return resp;
    }
    match select(call, rt.sleep_until(deadline)).await {
        Either::Left((resp, _)) => resp,
        Either::Right(((), _)) => {
            tracing::warn!(target: "jsonlink::rpc", "procedure call exceeded its deadline");
            CallResponse::error(code::INTERNAL, "deadline exceeded")
                .with_correlation_id(correlation_id)
        }
    }
}
