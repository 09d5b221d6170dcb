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
//! - `rpc.stream` opens a stream procedure: its items come as `rpc.item`
//!   messages while the caller has granted credit (`rpc.credit`), the
//!   answer `{"items": n, "end": CallResponse}` follows the last one, and
//!   `rpc.cancel` stops it (the handler's stream is dropped without another
//!   poll). See PROTOCOL.md §11.6, *Streams*.
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
use futures_util::StreamExt;
use futures_util::future::{Either, select};
use jsonlink_rt::{Handlers, Link, Message, Request, Runtime};
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
/// The op (a request) that opens a stream procedure.
pub const STREAM_OP: &str = "rpc.stream";
/// The op (a message, callee to caller) carrying one item of a stream.
pub const ITEM_OP: &str = "rpc.item";
/// The op (a message, caller to callee) granting more items.
pub const CREDIT_OP: &str = "rpc.credit";
/// The op (a message, caller to callee) cancelling a stream.
pub const CANCEL_OP: &str = "rpc.cancel";

/// The nesting depth a link frame may have (PROTOCOL.md §4.3: deeper is
/// refused by the link itself), as the default `max_depth` over links.
const LINK_DEPTH: usize = 128;

/// Options of [`serve`].
///
/// | option | default | meaning |
/// | --- | --- | --- |
/// | `call_timeout` | 30 s | a call not answered within it is answered 500 `deadline exceeded` and its future dropped (nested calls with it) |
/// | `parse` | [`ParseLimits::default`] with `max_depth` 128 | limits on the CallRequest (name length; nesting depth, which a link already bounds at 127 levels per frame, PROTOCOL.md §4.3, so by default no scan is added; set `max_depth` below 127 to scan each call for it) |
/// | `stream_timeout` | 300 s | a stream (`rpc.stream`) not ended within it is ended 500 `deadline exceeded` and the handler's stream dropped |
/// | `stream_link_check` | 1 s | how often an open stream checks that its link is still up: a stream whose link is lost is dropped within this (at once if it was sending) |
/// | `max_stream_window` | 256 | the most items a caller may have unacknowledged on one stream (its `window` is capped at this); so a stream holds at most this many items in the caller's buffer |
#[derive(Debug, Clone)]
pub struct LinkOptions {
    /// How long a call may run.
    pub call_timeout: Duration,
    /// CallRequest parse limits.
    pub parse: ParseLimits,
    /// How long a stream may run.
    pub stream_timeout: Duration,
    /// The largest window (items sent before the caller grants more).
    pub max_stream_window: u32,
    /// How often an open stream looks whether its link was lost.
    pub stream_link_check: Duration,
}

impl Default for LinkOptions {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            parse: ParseLimits {
                max_depth: LINK_DEPTH,
                ..ParseLimits::default()
            },
            stream_timeout: Duration::from_secs(300),
            max_stream_window: 256,
            stream_link_check: Duration::from_secs(1),
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

/// Registers `rpc.call`, `rpc.identity` and the stream ops (`rpc.stream`,
/// `rpc.credit`, `rpc.cancel`) in `handlers` (a server's or a
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
    let streams = Arc::new(Streams::default());
    {
        let streams = streams.clone();
        handlers.on_message(CREDIT_OP, move |msg: Message| {
            if let Ok(c) = msg.parse::<Credit>() {
                streams.credit(&msg.link, c.stream, c.n);
            }
            std::future::ready(())
        });
    }
    {
        let streams = streams.clone();
        handlers.on_message(CANCEL_OP, move |msg: Message| {
            if let Ok(c) = msg.parse::<Cancel>() {
                streams.cancel(&msg.link, c.stream);
            }
            std::future::ready(())
        });
    }
    let st = served.clone();
    handlers.on_request(STREAM_OP, move |req: Request| {
        let s = st.clone();
        let streams = streams.clone();
        async move {
            let Request {
                link,
                body,
                responder,
                ..
            } = req;
            let end = serve_stream(
                &s.registry,
                &s.identities,
                &*s.rt,
                &s.options,
                &streams,
                &link,
                body.get(),
            )
            .await;
            let _ = responder.respond(&end);
        }
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

/// The body of `rpc.stream`.
#[derive(serde::Deserialize)]
struct StreamOpen {
    stream: u64,
    #[serde(default)]
    window: Option<u32>,
    #[serde(default)]
    call: Value,
}

/// The body of `rpc.credit`.
#[derive(serde::Deserialize)]
struct Credit {
    stream: u64,
    n: u32,
}

/// The body of `rpc.cancel`.
#[derive(serde::Deserialize)]
struct Cancel {
    stream: u64,
}

/// The answer to `rpc.stream`: how many items were sent, and how the
/// stream ended.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub(crate) struct StreamEnd {
    pub(crate) items: u64,
    pub(crate) end: CallResponse,
}

/// The caller's grants and cancellation of one stream being served.
#[derive(Default)]
struct Ctl {
    state: Mutex<CtlState>,
}

#[derive(Default)]
struct CtlState {
    credit: u32,
    window: u32,
    cancelled: bool,
    waker: Option<std::task::Waker>,
}

impl Ctl {
    fn lock(&self) -> std::sync::MutexGuard<'_, CtlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ready `true` once cancelled, `false` once there is credit.
    fn poll_credit(&self, cx: &std::task::Context<'_>) -> Poll<bool> {
        let mut st = self.lock();
        if st.cancelled {
            return Poll::Ready(true);
        }
        if st.credit > 0 {
            return Poll::Ready(false);
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn poll_cancelled(&self, cx: &std::task::Context<'_>) -> Poll<()> {
        let mut st = self.lock();
        if st.cancelled {
            return Poll::Ready(());
        }
        st.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn update(&self, f: impl FnOnce(&mut CtlState)) {
        let waker = {
            let mut st = self.lock();
            f(&mut st);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// How many cancellations of streams not (yet) open are remembered: a
/// cancel may overtake its `rpc.stream` (messages and requests are
/// dispatched apart).
pub const EARLY_CANCELS: usize = 64;

/// The streams being served, by link id and stream id.
#[derive(Default)]
struct Streams {
    map: Mutex<StreamTable>,
}

#[derive(Default)]
struct StreamTable {
    open: HashMap<(u64, u64), Arc<Ctl>>,
    early_cancels: std::collections::VecDeque<(u64, u64)>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamTable> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stream; `None` if the id is in use on this link.
    fn open(&self, link: &Link, stream: u64, window: u32) -> Option<Arc<Ctl>> {
        let key = (link.id(), stream);
        let mut t = self.lock();
        if t.open.contains_key(&key) {
            return None;
        }
        let cancelled = match t.early_cancels.iter().position(|k| *k == key) {
            Some(i) => {
                t.early_cancels.remove(i);
                true
            }
            None => false,
        };
        let ctl = Arc::new(Ctl::default());
        {
            let mut st = ctl.lock();
            st.credit = window;
            st.window = window;
            st.cancelled = cancelled;
        }
        t.open.insert(key, ctl.clone());
        Some(ctl)
    }

    fn close(&self, link: &Link, stream: u64) {
        self.lock().open.remove(&(link.id(), stream));
    }

    fn credit(&self, link: &Link, stream: u64, n: u32) {
        let ctl = self.lock().open.get(&(link.id(), stream)).cloned();
        if let Some(ctl) = ctl {
            // Never more than the window outstanding, whatever is sent.
            ctl.update(|st| st.credit = st.credit.saturating_add(n).min(st.window));
        }
    }

    fn cancel(&self, link: &Link, stream: u64) {
        let key = (link.id(), stream);
        let ctl = {
            let mut t = self.lock();
            match t.open.get(&key) {
                Some(c) => Some(c.clone()),
                None => {
                    if t.early_cancels.len() >= EARLY_CANCELS {
                        t.early_cancels.pop_front();
                    }
                    t.early_cancels.push_back(key);
                    None
                }
            }
        };
        if let Some(ctl) = ctl {
            ctl.update(|st| st.cancelled = true);
        }
    }
}

/// Unregisters a stream when its serving ends, however it ends.
struct Unregister<'a> {
    streams: &'a Streams,
    link: &'a Link,
    stream: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.streams.close(self.link, self.stream);
    }
}

/// `{"op":"rpc.item","stream":…,"data":…}`.
fn item_body(
    stream: u64,
    data: &Value,
) -> Result<Arc<serde_json::value::RawValue>, serde_json::Error> {
    #[derive(serde::Serialize)]
    struct Item<'a> {
        op: &'a str,
        stream: u64,
        data: &'a Value,
    }
    serde_json::value::to_raw_value(&Item {
        op: ITEM_OP,
        stream,
        data,
    })
    .map(Arc::from)
}

/// Serves one `rpc.stream` request: opens the procedure, sends its items
/// as `rpc.item` messages while the caller has granted credit, and returns
/// how it ended. Dropping the handler's stream (cancel, deadline, lost
/// link) is what stops the producer.
async fn serve_stream(
    registry: &Registry,
    identities: &Identities,
    rt: &dyn Runtime,
    options: &LinkOptions,
    streams: &Streams,
    link: &Link,
    body: &str,
) -> StreamEnd {
    let bad = |m: String| StreamEnd {
        items: 0,
        end: CallResponse::error(code::BAD_REQUEST, m),
    };
    let open: StreamOpen = match serde_json::from_str(body) {
        Ok(o) => o,
        Err(e) => return bad(format!("not an rpc.stream request: {e}")),
    };
    let call = match CallRequest::from_value(open.call, &options.parse) {
        Ok(c) => c,
        Err(resp) => {
            return StreamEnd {
                items: 0,
                end: resp,
            };
        }
    };
    let window = open
        .window
        .unwrap_or(DEFAULT_WINDOW)
        .clamp(1, options.max_stream_window.max(1));
    let Some(ctl) = streams.open(link, open.stream, window) else {
        return bad(format!("stream id {} is in use on this link", open.stream));
    };
    let _unregister = Unregister {
        streams,
        link,
        stream: open.stream,
    };
    let correlation_id = call.correlation_id.clone();
    let link_identity = if call.identity.is_none() {
        identities.get(link)
    } else {
        None
    };
    let deadline = deadline_after(rt.now(), options.stream_timeout);
    let origin = Origin {
        transport: Transport::Link,
        remote_addr: Some(link.peer_addr()),
        connection_id: Some(link.id()),
        peer: peer_info(link),
        deadline: Some(deadline),
    };
    let sent = std::sync::atomic::AtomicU64::new(0);
    let cancelled = || CallResponse::error(code::CANCELLED, "cancelled by the caller");
    let work = async {
        let mut items = match registry.open_stream_as(call, link_identity, origin).await {
            Ok(s) => s,
            Err(resp) => return resp,
        };
        loop {
            if poll_fn(|cx| ctl.poll_credit(cx)).await {
                return cancelled();
            }
            let next = select(items.next(), poll_fn(|cx| ctl.poll_cancelled(cx))).await;
            let item = match next {
                Either::Right(((), _)) => return cancelled(),
                Either::Left((item, _)) => item,
            };
            match item {
                None => return CallResponse::ok(Value::Null),
                Some(Err(e)) => return e.into(),
                Some(Ok(v)) => {
                    let body = match item_body(open.stream, &v) {
                        Ok(b) => b,
                        Err(e) => {
                            return CallResponse::error(
                                code::INTERNAL,
                                format!("item does not serialize: {e}"),
                            );
                        }
                    };
                    if let Err(e) = link.send_raw(body).await {
                        return CallResponse::error(code::INTERNAL, format!("item not sent: {e}"));
                    }
                    ctl.update(|st| st.credit = st.credit.saturating_sub(1));
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    // The link's loss is seen at the next send, or by this watch while the
    // producer or the caller's credit is awaited.
    let check = options.stream_link_check.max(Duration::from_millis(10));
    let lost = async {
        loop {
            let next = deadline_after(rt.now(), check).min(deadline);
            rt.sleep_until(next).await;
            if link.is_closed() || rt.now() >= deadline {
                return link.is_closed();
            }
        }
    };
    let end = match select(std::pin::pin!(work), std::pin::pin!(lost)).await {
        Either::Left((resp, _)) => resp,
        Either::Right((true, _)) => {
            tracing::debug!(target: "jsonlink::rpc", "procedure stream's link lost");
            CallResponse::error(code::INTERNAL, "link lost")
        }
        Either::Right((false, _)) => {
            tracing::warn!(target: "jsonlink::rpc", "procedure stream exceeded its deadline");
            CallResponse::error(code::INTERNAL, "deadline exceeded")
        }
    };
    StreamEnd {
        items: sent.load(Ordering::Relaxed),
        end: end.with_correlation_id(correlation_id),
    }
}

/// The window a caller gets when its `rpc.stream` names none.
pub const DEFAULT_WINDOW: u32 = 16;
