//! A Rust client of the procedure layer: an [`RpcClient`] over one or more
//! [`RpcTransport`]s tried in a configured order. This crate has the
//! jsonlink-link transport ([`LinkTransport`]); `jsonlink-gateway` adds the
//! HTTP and WebSocket ones behind its `client` feature.
//!
//! # Fallback
//!
//! A call goes to the first transport in the order given. It moves to the
//! next **only** when the transport reports [`TransportError::Unavailable`]:
//! it could not connect, or has no connection now, and **did not send the
//! call**. Every other failure ([`TransportError::Failed`]: the connection
//! was lost after the call was sent, a timeout, a refused or malformed
//! answer) ends the call with that error and is never retried on another
//! transport, because the call may have run. A transport answering with
//! any `code` (400, 500, …) is an answer, not a failure.
//!
//! # Identity
//!
//! [`RpcClient::set_identity`] gives the identity to every transport once;
//! each sends it the way its connection needs: with every call (HTTP), or
//! once per connection and again after each reconnect (WebSocket, jsonlink
//! link). A call's own `identity` still wins for that call.

use crate::link::{CALL_OP, CANCEL_OP, CREDIT_OP, IDENTITY_OP, ITEM_OP, STREAM_OP, StreamEnd};
use crate::registry::BoxFuture;
use crate::wire::{CallRequest, CallResponse, Identity};
use futures_util::Stream;
use jsonlink_rt::{Client, Error as LinkError, Link};
use jsonlink_rt::{Message, RawJson, Runtime};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Duration;

/// Why a transport did not deliver an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// The transport could not connect, or has no connection now; the call
    /// was not sent. The client falls back to the next transport.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call was (or may have been) sent and no answer came, or the
    /// answer could not be read. Never retried.
    #[error("failed: {0}")]
    Failed(String),
}

/// One way to reach a procedure server.
pub trait RpcTransport: Send + Sync + 'static {
    /// A short name for errors and logs (`"link"`, `"http"`, `"ws"`).
    fn name(&self) -> &str;
    /// Stores the identity to send with later calls (see the module docs).
    fn set_identity(&self, identity: Option<Identity>);
    /// Sends one call and waits for its answer.
    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>>;
    /// Opens a stream procedure (see [`LinkTransport::stream`]). The
    /// default answers [`TransportError::Unavailable`]: this transport
    /// carries no streams, so the client tries the next one.
    fn stream(&self, req: CallRequest) -> BoxFuture<'_, Result<RpcStream, TransportError>> {
        let _ = req;
        let name = self.name().to_owned();
        Box::pin(async move {
            Err(TransportError::Unavailable(format!(
                "transport {name} carries no streams"
            )))
        })
    }
}

/// The items of a stream procedure as a caller sees them. Dropping it
/// cancels the stream.
pub type RpcStream = Pin<Box<dyn Stream<Item = Result<Value, StreamError>> + Send + 'static>>;

/// Why a stream ended with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The stream was not opened, or ended, with this code: 400 (not a
    /// stream procedure, bad request), 403, 422, 501 as for a call; 500 a
    /// handler error or panic, or `deadline exceeded`; any code of an
    /// error item.
    #[error("stream answered {code}: {message}")]
    Answer {
        /// The code.
        code: u16,
        /// The message.
        message: String,
    },
    /// The link was lost, or the peer broke the stream's rules (more
    /// items than the window, an answer that does not parse).
    #[error("stream failed: {0}")]
    Failed(String),
}

/// Why an [`RpcClient`] call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Every transport was unavailable; the call was sent nowhere.
    #[error("no transport could connect: {}", .0.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "))]
    NoTransport(Vec<(String, String)>),
    /// A transport failed after (possibly) sending the call.
    #[error("transport {transport} failed: {reason}")]
    Failed {
        /// The transport's name.
        transport: String,
        /// What went wrong.
        reason: String,
    },
    /// The call was answered with a code other than 2xx (only from
    /// [`RpcClient::call_typed`]).
    #[error("call answered {code}: {message}")]
    Answer {
        /// The code.
        code: u16,
        /// The message.
        message: String,
    },
    /// The answer's `data` does not fit the requested type (only from
    /// [`RpcClient::call_typed`]).
    #[error("answer does not decode: {0}")]
    Decode(String),
}

/// Calls procedures through transports tried in order (see the module
/// docs for when it falls back).
#[derive(Clone)]
pub struct RpcClient {
    transports: Arc<[Arc<dyn RpcTransport>]>,
}

impl fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RpcClient")
            .field(
                "transports",
                &self.transports.iter().map(|t| t.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl RpcClient {
    /// A client over `transports`, tried in this order.
    pub fn new(transports: Vec<Arc<dyn RpcTransport>>) -> Self {
        Self {
            transports: transports.into(),
        }
    }

    /// Sets the identity of every later call (each transport re-sends it
    /// after its reconnects). `None` clears it.
    pub fn set_identity(&self, identity: Option<Identity>) {
        for t in self.transports.iter() {
            t.set_identity(identity.clone());
        }
    }

    /// Calls a procedure; `Ok` is whatever CallResponse came back.
    pub async fn call(&self, req: CallRequest) -> Result<CallResponse, ClientError> {
        let mut unavailable = Vec::new();
        let mut req = Some(req);
        let last = self.transports.len().saturating_sub(1);
        for (i, t) in self.transports.iter().enumerate() {
            // The last transport takes the request itself: no copy of the
            // arguments on the common one-transport path.
            let this = if i == last { req.take() } else { req.clone() };
            let Some(this) = this else { break };
            match t.call(this).await {
                Ok(resp) => return Ok(resp),
                Err(TransportError::Unavailable(why)) => {
                    tracing::debug!(target: "jsonlink::rpc", transport = t.name(), %why, "transport unavailable; trying the next");
                    unavailable.push((t.name().to_owned(), why));
                }
                Err(TransportError::Failed(reason)) => {
                    return Err(ClientError::Failed {
                        transport: t.name().to_owned(),
                        reason,
                    });
                }
            }
        }
        Err(ClientError::NoTransport(unavailable))
    }

    /// Opens a stream procedure through the first transport that carries
    /// streams and is available (the same fallback rule as
    /// [`call`](Self::call): only [`TransportError::Unavailable`] moves
    /// on). Dropping the stream cancels it.
    pub async fn stream(&self, req: CallRequest) -> Result<RpcStream, ClientError> {
        let mut unavailable = Vec::new();
        for t in self.transports.iter() {
            match t.stream(req.clone()).await {
                Ok(s) => return Ok(s),
                Err(TransportError::Unavailable(why)) => {
                    unavailable.push((t.name().to_owned(), why))
                }
                Err(TransportError::Failed(reason)) => {
                    return Err(ClientError::Failed {
                        transport: t.name().to_owned(),
                        reason,
                    });
                }
            }
        }
        Err(ClientError::NoTransport(unavailable))
    }

    /// Calls a procedure and decodes a 2xx answer's `data` as `R`.
    pub async fn call_typed<R: serde::de::DeserializeOwned>(
        &self,
        req: CallRequest,
    ) -> Result<R, ClientError> {
        let resp = self.call(req).await?;
        if !resp.success {
            return Err(ClientError::Answer {
                code: resp.code,
                message: resp.message.unwrap_or_default(),
            });
        }
        serde_json::from_value(resp.data.unwrap_or_default())
            .map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// Where a [`LinkTransport`] sends: a client's current link, or one link
/// of a server (the server calling one of its clients).
#[derive(Clone, Debug)]
enum Target {
    Client(Client),
    Link(Link),
}

/// The jsonlink transport: `rpc.call` requests over a link (PROTOCOL.md
/// §11.6). Unavailable (so the next transport is tried) when there is no
/// authenticated link now, the link is closing and refuses new requests,
/// or setting the identity on a new link failed (the call was not sent); a call lost with its link, timed out, refused as busy or
/// answered with anything but a CallResponse has failed.
///
/// The identity is sent with `rpc.identity` before the first call on each
/// new link (so again after every reconnect), not with every call.
pub struct LinkTransport {
    target: Target,
    timeout: Option<Duration>,
    identity: Mutex<IdentityState>,
    rt: Option<Arc<dyn Runtime>>,
    window: u32,
    stream_timeout: Duration,
    installed: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct IdentityState {
    identity: Option<Identity>,
    /// The link whose server-side identity is `identity` (`None`: none yet).
    sent_on: Option<u64>,
    /// The link on which an identity (not `None`) was last set.
    set_on: Option<u64>,
}

impl fmt::Debug for LinkTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTransport")
            .field("target", &self.target)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl LinkTransport {
    /// Calls over `client`'s current link (the client reconnects by its
    /// own policy).
    pub fn client(client: Client) -> Self {
        Self::new(Target::Client(client))
    }

    /// Calls over one link (a server calling a client's procedures).
    pub fn link(link: Link) -> Self {
        Self::new(Target::Link(link))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            timeout: None,
            identity: Mutex::new(IdentityState::default()),
            rt: None,
            window: crate::link::DEFAULT_WINDOW,
            stream_timeout: Duration::from_secs(3600),
            installed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The runtime on which a dropped stream's `rpc.cancel` is sent (a
    /// drop cannot wait). Needed for [`stream`](Self::stream).
    pub fn runtime(mut self, rt: Arc<dyn Runtime>) -> Self {
        self.rt = Some(rt);
        self
    }

    /// How many items a stream may have in flight before this caller
    /// grants more (default 16; the callee caps it at its
    /// `max_stream_window`). At most this many items wait in the stream's
    /// buffer while it is not read.
    pub fn window(mut self, window: u32) -> Self {
        self.window = window.max(1);
        self
    }

    /// How long this side waits for a stream's end (default 1 h; the
    /// callee's own `stream_timeout` normally ends it first).
    pub fn stream_timeout(mut self, timeout: Duration) -> Self {
        self.stream_timeout = timeout;
        self
    }

    /// The handlers table on which this side takes `rpc.item` messages.
    fn handlers(&self) -> Option<jsonlink_rt::Handlers> {
        match &self.target {
            Target::Client(c) => Some(c.handlers().clone()),
            Target::Link(l) => l.server().map(|s| s.handlers().clone()),
        }
    }

    /// Opens a stream procedure over the current link (`rpc.stream`,
    /// PROTOCOL.md §11.6): the items come as the callee produces them, at
    /// most [`window`](Self::window) ahead of what has been read
    /// (backpressure: the callee waits for credit). The stream ends with
    /// `None` after the last item, or with one [`StreamError`]. Dropping it
    /// sends `rpc.cancel`: the callee drops the handler's stream without
    /// polling it again. The identity is set on the link first (as for a
    /// call); `rpc.stream` itself is sent when the stream is first polled.
    ///
    /// # Errors
    ///
    /// [`TransportError::Unavailable`] without a [`runtime`](Self::runtime)
    /// or a link now, or when setting the identity failed; nothing was
    /// sent.
    pub async fn stream(&self, req: CallRequest) -> Result<RpcStream, TransportError> {
        let Some(rt) = self.rt.clone() else {
            return Err(TransportError::Unavailable(
                "streams need LinkTransport::runtime".into(),
            ));
        };
        let link = self.current()?;
        self.ensure_identity(&link).await?;
        if !self
            .installed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let Some(handlers) = self.handlers() else {
                self.installed
                    .store(false, std::sync::atomic::Ordering::Release);
                return Err(TransportError::Unavailable(
                    "the link has no handlers table for stream items".into(),
                ));
            };
            install_items(&handlers);
        }
        let sid = NEXT_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState::default()),
            link: link.id(),
            window: self.window as usize,
        });
        inboxes().insert(sid, inbox.clone());
        let body = open_body(sid, self.window, &req).inspect_err(|_| {
            inboxes().remove(&sid);
        })?;
        let l = link.clone();
        let timeout = self.stream_timeout;
        let end = Box::pin(async move { l.request_raw(body, Some(timeout)).await });
        Ok(Box::pin(CallStream {
            sid,
            link,
            inbox,
            end: Some(end),
            ended: None,
            received: 0,
            unacked: 0,
            window: self.window,
            credit: None,
            rt,
            done: false,
        }))
    }

    /// Sets the identity on `link` first if it does not hold it.
    async fn ensure_identity(&self, link: &Link) -> Result<(), TransportError> {
        match self.identity_due(link) {
            Some(identity) => self.set_identity_on(link, identity).await,
            None => Ok(()),
        }
    }

    /// Sets `identity` on `link` (the link does not hold it yet).
    async fn set_identity_on(
        &self,
        link: &Link,
        identity: Option<Identity>,
    ) -> Result<(), TransportError> {
        let body = raw_call(IDENTITY_OP, &identity)?;
        let resp = link
            .request_raw(body, self.timeout)
            .await
            .map_err(|e| TransportError::Unavailable(format!("setting the identity: {e}")))?;
        let resp: CallResponse = resp
            .parse()
            .map_err(|e| TransportError::Failed(format!("identity answer: {e}")))?;
        if !resp.success {
            return Err(TransportError::Failed(format!(
                "identity refused: {}",
                resp.message.unwrap_or_default()
            )));
        }
        let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        if st.identity == identity {
            st.sent_on = Some(link.id());
            st.set_on = identity.is_some().then(|| link.id());
        }
        Ok(())
    }

    /// The request timeout of each call (default: the link's configured
    /// request timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    fn current(&self) -> Result<Link, TransportError> {
        let link = match &self.target {
            Target::Client(c) => c.link(),
            Target::Link(l) => (!l.is_closed()).then(|| l.clone()),
        };
        link.ok_or_else(|| TransportError::Unavailable("no authenticated link".into()))
    }

    /// The identity to set on `link` first, if the link does not hold it:
    /// the identity on a link that has not had it; `None` (a clear) only on
    /// the link that had one (a new link starts with none).
    fn identity_due(&self, link: &Link) -> Option<Option<Identity>> {
        let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        let id = link.id();
        if st.sent_on == Some(id) {
            return None;
        }
        if st.identity.is_none() && st.set_on != Some(id) {
            st.sent_on = Some(id);
            return None;
        }
        Some(st.identity.clone())
    }

    async fn send(&self, req: CallRequest) -> Result<CallResponse, TransportError> {
        let link = self.current()?;
        // The call is not sent before the identity is set: a link lost
        // meanwhile is a link we could not use (so the next transport may
        // take the call).
        if let Some(identity) = self.identity_due(&link) {
            // Boxed: the rare exchange keeps its state out of every call's
            // future.
            Box::pin(self.set_identity_on(&link, identity)).await?;
        }
        let body = flat_call(&req)?;
        let answer = link
            .request_raw(body, self.timeout)
            .await
            .map_err(map_link_error)?;
        answer
            .parse::<CallResponse>()
            .map_err(|e| TransportError::Failed(format!("not a CallResponse: {e}")))
    }
}

impl RpcTransport for LinkTransport {
    fn name(&self) -> &str {
        "link"
    }

    fn set_identity(&self, identity: Option<Identity>) {
        let mut st = self.identity.lock().unwrap_or_else(|e| e.into_inner());
        st.identity = identity;
        st.sent_on = None;
    }

    fn call(&self, req: CallRequest) -> BoxFuture<'_, Result<CallResponse, TransportError>> {
        Box::pin(self.send(req))
    }

    fn stream(&self, req: CallRequest) -> BoxFuture<'_, Result<RpcStream, TransportError>> {
        Box::pin(Self::stream(self, req))
    }
}

/// `{"op": op, "args": <args>}` (PROTOCOL.md §11.5, rule 1), serialized
/// once, never re-parsed.
pub(crate) fn raw_call<T: serde::Serialize + ?Sized>(
    op: &str,
    args: &T,
) -> Result<Box<serde_json::value::RawValue>, TransportError> {
    #[derive(serde::Serialize)]
    struct Body<'a, T: ?Sized> {
        op: &'a str,
        args: &'a T,
    }
    serde_json::value::to_raw_value(&Body { op, args })
        .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))
}

fn is_default_scope(s: &&str) -> bool {
    *s == crate::wire::DEFAULT_SCOPE
}

fn is_default_version(s: &&str) -> bool {
    *s == crate::wire::DEFAULT_VERSION
}

/// `{"op":"rpc.call","procedure":…,…}`: the CallRequest's members beside
/// `op` (PROTOCOL.md §11.5, the flat shape), serialized once; the default
/// scope and version are left out (the receiver applies them).
fn flat_call(req: &CallRequest) -> Result<Box<serde_json::value::RawValue>, TransportError> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Flat<'a> {
        op: &'a str,
        procedure: &'a str,
        #[serde(skip_serializing_if = "is_default_scope")]
        scope: &'a str,
        #[serde(skip_serializing_if = "is_default_version")]
        version: &'a str,
        args: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        correlation_id: &'a Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: &'a Option<Identity>,
    }
    serde_json::value::to_raw_value(&Flat {
        op: CALL_OP,
        procedure: &req.procedure,
        scope: &req.scope,
        version: &req.version,
        args: &req.args,
        correlation_id: &req.correlation_id,
        identity: &req.identity,
    })
    .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))
}

/// Whether a link error means the request was not sent.
fn map_link_error(e: LinkError) -> TransportError {
    match e {
        LinkError::NotConnected | LinkError::Closed => TransportError::Unavailable(e.to_string()),
        other => TransportError::Failed(other.to_string()),
    }
}

/// Stream ids, unique in the process (so one table serves every link).
static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// The open streams of this process, by stream id.
fn inboxes() -> std::sync::MutexGuard<'static, HashMap<u64, Arc<Inbox>>> {
    static TABLE: std::sync::OnceLock<Mutex<HashMap<u64, Arc<Inbox>>>> = std::sync::OnceLock::new();
    TABLE
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The items of one open stream that arrived and were not read yet.
struct Inbox {
    state: Mutex<InboxState>,
    /// The link the stream was opened on (items from another are refused).
    link: u64,
    window: usize,
}

#[derive(Default)]
struct InboxState {
    items: VecDeque<Value>,
    /// The peer sent more than the window.
    overflow: bool,
    waker: Option<Waker>,
}

/// Takes `rpc.item` messages into the open streams' inboxes. An item for
/// no open stream (one dropped meanwhile) is answered with `rpc.cancel`.
fn install_items(handlers: &jsonlink_rt::Handlers) {
    #[derive(serde::Deserialize)]
    struct Item {
        stream: u64,
        #[serde(default)]
        data: Value,
    }
    handlers.on_message(ITEM_OP, |msg: Message| async move {
        let Ok(item) = msg.parse::<Item>() else {
            tracing::debug!(target: "jsonlink::rpc", "an rpc.item that does not parse, dropped");
            return;
        };
        let inbox = inboxes().get(&item.stream).cloned();
        match inbox {
            Some(inbox) if inbox.link == msg.link.id() => {
                let waker = {
                    let mut st = inbox.state.lock().unwrap_or_else(|e| e.into_inner());
                    if st.items.len() >= inbox.window {
                        st.overflow = true;
                    } else {
                        st.items.push_back(item.data);
                    }
                    st.waker.take()
                };
                if let Some(w) = waker {
                    w.wake();
                }
            }
            _ => {
                let _ = msg.link.send_raw(cancel_body(item.stream)).await;
            }
        }
    });
}

fn cancel_body(stream: u64) -> Arc<serde_json::value::RawValue> {
    let v = serde_json::json!({"op": CANCEL_OP, "stream": stream});
    Arc::from(serde_json::value::to_raw_value(&v).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("{}".into()).unwrap_or_default()
    }))
}

fn credit_body(stream: u64, n: u32) -> Arc<serde_json::value::RawValue> {
    let v = serde_json::json!({"op": CREDIT_OP, "stream": stream, "n": n});
    Arc::from(serde_json::value::to_raw_value(&v).unwrap_or_else(|_| {
        serde_json::value::RawValue::from_string("{}".into()).unwrap_or_default()
    }))
}

/// `{"op":"rpc.stream","stream":…,"window":…,"call":{CallRequest}}`.
fn open_body(
    stream: u64,
    window: u32,
    req: &CallRequest,
) -> Result<Box<serde_json::value::RawValue>, TransportError> {
    #[derive(serde::Serialize)]
    struct Open<'a> {
        op: &'a str,
        stream: u64,
        window: u32,
        call: &'a CallRequest,
    }
    serde_json::value::to_raw_value(&Open {
        op: STREAM_OP,
        stream,
        window,
        call: req,
    })
    .map_err(|e| TransportError::Failed(format!("does not serialize: {e}")))
}

type EndFuture = Pin<Box<dyn Future<Output = Result<RawJson, LinkError>> + Send>>;

/// The caller's side of one stream over a link.
struct CallStream {
    sid: u64,
    link: Link,
    inbox: Arc<Inbox>,
    end: Option<EndFuture>,
    ended: Option<Result<StreamEnd, String>>,
    received: u64,
    /// Items read since the last grant.
    unacked: u32,
    window: u32,
    credit: Option<BoxFuture<'static, ()>>,
    rt: Arc<dyn Runtime>,
    done: bool,
}

impl CallStream {
    fn finish(&mut self) {
        self.done = true;
        self.end = None;
        self.credit = None;
        inboxes().remove(&self.sid);
    }

    /// Grants what was read once half the window is read (and no grant is
    /// on its way).
    fn grant(&mut self, cx: &mut TaskContext<'_>) {
        if let Some(f) = self.credit.as_mut() {
            if f.as_mut().poll(cx).is_pending() {
                return;
            }
            self.credit = None;
        }
        if self.unacked >= (self.window / 2).max(1) {
            let link = self.link.clone();
            let body = credit_body(self.sid, self.unacked);
            self.unacked = 0;
            let mut f: BoxFuture<'static, ()> = Box::pin(async move {
                let _ = link.send_raw(body).await;
            });
            if f.as_mut().poll(cx).is_pending() {
                self.credit = Some(f);
            }
        }
    }
}

impl Stream for CallStream {
    type Item = Result<Value, StreamError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        this.grant(cx);
        if this.ended.is_none()
            && let Some(end) = this.end.as_mut()
            && let Poll::Ready(r) = end.as_mut().poll(cx)
        {
            this.end = None;
            this.ended = Some(match r {
                Ok(raw) => raw
                    .parse::<StreamEnd>()
                    .map_err(|e| format!("not a stream end: {e}")),
                Err(e) => Err(e.to_string()),
            });
        }
        let (item, overflow) = {
            let mut st = this.inbox.state.lock().unwrap_or_else(|e| e.into_inner());
            let item = st.items.pop_front();
            if item.is_none() {
                st.waker = Some(cx.waker().clone());
            }
            (item, st.overflow)
        };
        if overflow {
            this.finish();
            return Poll::Ready(Some(Err(StreamError::Failed(
                "the peer sent more items than the window".into(),
            ))));
        }
        if let Some(v) = item {
            this.received += 1;
            this.unacked += 1;
            this.grant(cx);
            return Poll::Ready(Some(Ok(v)));
        }
        match this.ended.take() {
            None => Poll::Pending,
            Some(Err(e)) => {
                this.finish();
                Poll::Ready(Some(Err(StreamError::Failed(e))))
            }
            Some(Ok(end)) if this.received < end.items && !this.link.is_closed() => {
                // Items sent before the end are still being dispatched.
                this.ended = Some(Ok(end));
                Poll::Pending
            }
            Some(Ok(end)) => {
                this.finish();
                if end.items > this.received {
                    return Poll::Ready(Some(Err(StreamError::Failed(format!(
                        "link lost with {} items not delivered",
                        end.items - this.received
                    )))));
                }
                if end.end.success {
                    Poll::Ready(None)
                } else {
                    Poll::Ready(Some(Err(StreamError::Answer {
                        code: end.end.code,
                        message: end.end.message.unwrap_or_default(),
                    })))
                }
            }
        }
    }
}

impl Drop for CallStream {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        inboxes().remove(&self.sid);
        if self.ended.is_some() {
            return;
        }
        let link = self.link.clone();
        let body = cancel_body(self.sid);
        self.rt.spawn(Box::pin(async move {
            let _ = link.send_raw(body).await;
        }));
    }
}
