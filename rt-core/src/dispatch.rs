//! Dispatch by `op`: the [`Router`] of handlers, and the [`Message`],
//! [`Request`] and [`Responder`] values handlers and the event stream get.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use jsonlink_proto::{Op, Payload, PeerRequestId, RemoteError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::Error;
use crate::link::Link;
use crate::queue::Queue;
use crate::runtime::BoxFuture;

/// A fire-and-forget message from the peer.
#[derive(Debug, Clone)]
pub struct Message {
    /// The link it came on.
    pub link: Link,
    /// The body's top-level `op`, if any.
    pub op: Option<Op>,
    /// The body.
    pub body: Payload,
}

impl Message {
    /// Deserializes the body.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.body.parse().map_err(Error::Decode)
    }
}

/// A request from the peer. It must be answered exactly once, through
/// [`respond`](Self::respond), [`respond_error`](Self::respond_error) or
/// its [`Responder`]; dropping it unanswered sends
/// [`handler_dropped`](RemoteError::HANDLER_DROPPED) at once.
#[derive(Debug)]
pub struct Request {
    /// The link it came on.
    pub link: Link,
    /// The body's top-level `op`, if any.
    pub op: Option<Op>,
    /// The body.
    pub body: Payload,
    /// Answers the request.
    pub responder: Responder,
}

impl Request {
    /// Deserializes the body.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        self.body.parse().map_err(Error::Decode)
    }

    /// Answers with a value.
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        self.responder.respond(value)
    }

    /// Answers with an error object.
    pub fn respond_error(self, error: RemoteError) -> Result<(), Error> {
        self.responder.respond_error(error)
    }
}

/// One answer from a responder to the link's driver.
pub(crate) struct Answer {
    pub(crate) id: PeerRequestId,
    pub(crate) result: Result<Box<RawValue>, RemoteError>,
    /// The request's op, for the log.
    pub(crate) op: Option<Op>,
    /// Set (to the answer's size bound) when the answer is too large for
    /// the peer: `result` is then not sent, the core answers with its own
    /// error ([`Connection::respond_too_large`](jsonlink_proto::Connection::respond_too_large)).
    pub(crate) too_large: Option<usize>,
}

/// The size bound of `result` as the answer to `id` on `link` and the
/// peer's limit, when the bound exceeds the limit (the core would refuse
/// the answer: PROTOCOL.md §14.2).
pub(crate) fn too_large(
    link: &Link,
    id: PeerRequestId,
    result: &Result<Box<RawValue>, RemoteError>,
) -> Option<(usize, usize)> {
    let auth = link.auth()?;
    let size = auth.response_frame_bound(id, result.as_ref().map(|b| &**b));
    (size > auth.peer_max_frame).then_some((size, auth.peer_max_frame))
}

/// Answers one peer request, exactly once. Dropping it unanswered answers
/// [`handler_dropped`](RemoteError::HANDLER_DROPPED) at once (never a
/// timeout on the peer's side).
///
/// Answering never waits: the link's answer queue has room for every
/// request the core lets be in flight.
///
/// An answer too large for the requester's `max_frame` is refused at once
/// with [`Error::ResponseTooLarge`] (checked against the peer's announced
/// limit, as [`Link::send`] checks messages); the requester then gets an
/// error answer at once instead (`response_too_large` where it accepted
/// that extension, else `internal`), and the link logs a warning.
pub struct Responder {
    id: PeerRequestId,
    tx: Option<Arc<Queue<Answer>>>,
    link: Link,
    op: Option<Op>,
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder").field("id", &self.id).finish()
    }
}

impl Responder {
    pub(crate) fn new(
        id: PeerRequestId,
        tx: Arc<Queue<Answer>>,
        link: Link,
        op: Option<Op>,
    ) -> Self {
        Self {
            id,
            tx: Some(tx),
            link,
            op,
        }
    }

    /// The peer's request id.
    pub fn id(&self) -> PeerRequestId {
        self.id
    }

    /// Answers with a value. If it does not serialize, the peer gets an
    /// [`internal`](RemoteError::INTERNAL) error and this returns
    /// [`Error::Encode`]; if it is too large for the peer, see
    /// [`Error::ResponseTooLarge`].
    pub fn respond<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => self.answer(Ok(raw)),
            Err(e) => {
                let _ = self.answer(Err(not_serialized()));
                Err(Error::Encode(e))
            }
        }
    }

    /// Answers with raw JSON.
    pub fn respond_raw(self, value: Payload) -> Result<(), Error> {
        self.answer(Ok(value.into_raw()))
    }

    /// Answers with an error object.
    pub fn respond_error(self, error: RemoteError) -> Result<(), Error> {
        self.answer(Err(error))
    }

    fn answer(mut self, result: Result<Box<RawValue>, RemoteError>) -> Result<(), Error> {
        let Some(tx) = self.tx.take() else {
            return Err(Error::Closed);
        };
        let over = too_large(&self.link, self.id, &result);
        tx.try_push(
            Answer {
                id: self.id,
                result,
                op: self.op.take(),
                too_large: over.map(|(size, _)| size),
            },
            0,
        )
        .map_err(|_| Error::Closed)?;
        match over {
            Some((size, limit)) => Err(Error::ResponseTooLarge { size, limit }),
            None => Ok(()),
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let answer = Answer {
                id: self.id,
                result: Err(RemoteError::new(
                    RemoteError::HANDLER_DROPPED,
                    "the handler dropped the request without answering",
                )),
                op: self.op.take(),
                too_large: None,
            };
            let _ = tx.try_push(answer, 0);
        }
    }
}

/// The answer to a typed handler's request whose body does not fit its
/// argument type.
fn bad_arguments(e: serde_json::Error) -> RemoteError {
    RemoteError::new(RemoteError::BAD_REQUEST, format!("invalid arguments: {e}"))
}

/// The answer when a handler's value does not serialize.
fn not_serialized() -> RemoteError {
    RemoteError::new(RemoteError::INTERNAL, "the response did not serialize")
}

type MessageFn = dyn Fn(Message) -> BoxFuture<'static, ()> + Send + Sync;
type RequestFn = dyn Fn(Request) -> BoxFuture<'static, ()> + Send + Sync;
pub(crate) type InlineFn = dyn Fn(&Link, Payload) -> Result<Payload, RemoteError> + Send + Sync;

#[derive(Default)]
struct Handlers {
    messages: HashMap<String, Arc<MessageFn>>,
    requests: HashMap<String, Arc<RequestFn>>,
    inline: HashMap<String, Arc<InlineFn>>,
}

/// How a request with a handled `op` is served.
pub(crate) enum RequestRoute {
    /// In a task of its own ([`Router::on_request`], [`Router::handle`]).
    Task(Arc<RequestFn>),
    /// In the link's own task, at once ([`Router::on_request_inline`],
    /// [`Router::handle_inline`]).
    Inline(Arc<InlineFn>),
}

/// Handlers by `op`, shared by every link of a server or client. Cheap to
/// clone (clones share the table); handlers can be added or removed while
/// running.
///
/// A message or request whose body is an object with a string `op` goes to
/// the handler registered for that op; each handler call runs as its own
/// task, except for inline request handlers
/// ([`on_request_inline`](Self::on_request_inline),
/// [`handle_inline`](Self::handle_inline)), which the link's own task calls
/// and answers at once. A request to an op with no handler is answered
/// [`no_handler`](RemoteError::NO_HANDLER) (unless
/// [`LinkOptions::unhandled_ops_to_events`](crate::LinkOptions::unhandled_ops_to_events));
/// everything else goes to the event stream.
#[derive(Clone, Default)]
pub struct Router {
    inner: Arc<RouterInner>,
}

#[derive(Default)]
struct RouterInner {
    handlers: RwLock<Handlers>,
    /// Whether any handler is registered: a router without handlers (every
    /// event to the stream) then costs a link no lock per frame.
    any: AtomicBool,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.read();
        let mut m: Vec<&String> = h.messages.keys().collect();
        let mut r: Vec<&String> = h.requests.keys().chain(h.inline.keys()).collect();
        m.sort();
        r.sort();
        f.debug_struct("Router")
            .field("messages", &m)
            .field("requests", &r)
            .finish()
    }
}

impl Router {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Handlers> {
        self.inner
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Edits the handlers, then publishes whether any remain.
    fn edit<R>(&self, f: impl FnOnce(&mut Handlers) -> R) -> R {
        let mut h = self
            .inner
            .handlers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let r = f(&mut h);
        let any = !h.messages.is_empty() || !h.requests.is_empty() || !h.inline.is_empty();
        self.inner.any.store(any, Ordering::Release);
        r
    }

    fn any(&self) -> bool {
        self.inner.any.load(Ordering::Acquire)
    }

    /// Handles messages with this `op` (replacing any previous handler).
    pub fn on_message<F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: Arc<MessageFn> = Arc::new(move |m| Box::pin(handler(m)));
        self.edit(|h| h.messages.insert(op.into(), f));
        self
    }

    /// Handles requests with this `op`; the handler answers through the
    /// [`Request`] (dropping it answers `handler_dropped`).
    pub fn on_request<F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: Arc<RequestFn> = Arc::new(move |r| Box::pin(handler(r)));
        let op = op.into();
        self.edit(|h| {
            h.inline.remove(&op);
            h.requests.insert(op, f)
        });
        self
    }

    /// Handles requests with this `op` *inline*: the link's own task calls
    /// `handler` with the link and the request's body as soon as the
    /// request is decoded, and sends its answer,
    /// with no task spawned and no hand-off to another task — the cheapest
    /// way to serve a request (a request/response round trip then crosses
    /// no task boundary on the server). Replaces any handler for `op`.
    ///
    /// For handlers that compute an answer at once, without waiting: the
    /// link reads and sends nothing else while the handler runs, so one
    /// that blocks (on I/O, a lock held elsewhere, a long computation)
    /// stalls that link; use [`on_request`](Self::on_request) for those. A
    /// handler that panics is answered [`internal`](RemoteError::INTERNAL)
    /// and the link carries on. Handler-task limits
    /// ([`max_handler_tasks`](crate::LinkOptions::max_handler_tasks),
    /// [`max_handler_bytes`](crate::LinkOptions::max_handler_bytes)) do not
    /// apply: nothing is held past the call.
    pub fn on_request_inline<F>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(&Link, Payload) -> Result<Payload, RemoteError> + Send + Sync + 'static,
    {
        let f: Arc<InlineFn> = Arc::new(handler);
        let op = op.into();
        self.edit(|h| {
            h.requests.remove(&op);
            h.inline.insert(op, f)
        });
        self
    }

    /// [`handle`](Self::handle) run inline (see
    /// [`on_request_inline`](Self::on_request_inline) for what that means
    /// and when not to): the body is deserialized into `A` (a body that
    /// does not fit is answered [`bad_request`](RemoteError::BAD_REQUEST)),
    /// and the function's `Ok(R)` or `Err(RemoteError)` is the answer.
    pub fn handle_inline<A, R, F>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&Link, A) -> Result<R, RemoteError> + Send + Sync + 'static,
    {
        self.on_request_inline(op, move |link, body| {
            let args: A = body.parse().map_err(bad_arguments)?;
            let value = handler(link, args)?;
            serde_json::value::to_raw_value(&value)
                .map(Payload::new)
                .map_err(|_| not_serialized())
        })
    }

    /// Handles requests with this `op` through a typed function: the body
    /// is deserialized into `A` (a body that does not fit is answered
    /// [`bad_request`](RemoteError::BAD_REQUEST)), and the function's
    /// `Ok(R)` or `Err(RemoteError)` is the answer.
    pub fn handle<A, R, F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Link, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RemoteError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.on_request(op, move |req: Request| {
            let handler = handler.clone();
            async move {
                let args: A = match req.body.parse() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = req.respond_error(bad_arguments(e));
                        return;
                    }
                };
                let Request {
                    link, responder, ..
                } = req;
                let _ = match handler(link, args).await {
                    Ok(v) => responder.respond(&v),
                    Err(e) => responder.respond_error(e),
                };
            }
        })
    }

    /// Removes the message handler for `op`; whether there was one.
    pub fn remove_message(&self, op: &str) -> bool {
        self.edit(|h| h.messages.remove(op).is_some())
    }

    /// Removes the request handler for `op` (inline or not); whether there
    /// was one.
    pub fn remove_request(&self, op: &str) -> bool {
        self.edit(|h| h.requests.remove(op).is_some() | h.inline.remove(op).is_some())
    }

    pub(crate) fn message_handler(&self, op: &str) -> Option<Arc<MessageFn>> {
        if !self.any() {
            return None;
        }
        self.read().messages.get(op).cloned()
    }

    pub(crate) fn request_handler(&self, op: &str) -> Option<RequestRoute> {
        if !self.any() {
            return None;
        }
        let h = self.read();
        if let Some(f) = h.inline.get(op) {
            return Some(RequestRoute::Inline(f.clone()));
        }
        h.requests.get(op).cloned().map(RequestRoute::Task)
    }
}

/// Counts handler tasks of one link and the body bytes they hold, so a
/// flood of messages cannot spawn tasks or hold bodies without bound.
#[derive(Default)]
pub(crate) struct Gauge {
    held: Mutex<Held>,
    freed: event_listener::Event,
}

#[derive(Default)]
struct Held {
    tasks: usize,
    bytes: usize,
}

/// The limits a [`Gauge`] admits handler tasks under.
#[derive(Clone, Copy)]
pub(crate) struct GaugeLimits {
    pub(crate) tasks: usize,
    pub(crate) bytes: usize,
}

/// One running handler task; frees its slot and bytes on drop.
pub(crate) struct GaugeGuard {
    gauge: Arc<Gauge>,
    bytes: usize,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        {
            let mut held = self.gauge.lock();
            held.tasks = held.tasks.saturating_sub(1);
            held.bytes = held.bytes.saturating_sub(self.bytes);
        }
        self.gauge.freed.notify(usize::MAX);
    }
}

impl Gauge {
    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a task holding `bytes` if the link is under both limits; a
    /// task is always admitted when none runs, whatever its size.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        limits: GaugeLimits,
        bytes: usize,
    ) -> Option<GaugeGuard> {
        let mut held = self.lock();
        let fits = held.tasks == 0
            || (held.tasks < limits.tasks.max(1)
                && held.bytes.saturating_add(bytes) <= limits.bytes);
        if !fits {
            return None;
        }
        held.tasks += 1;
        held.bytes = held.bytes.saturating_add(bytes);
        Some(GaugeGuard {
            gauge: self.clone(),
            bytes,
        })
    }

    pub(crate) async fn acquire(self: Arc<Self>, limits: GaugeLimits, bytes: usize) -> GaugeGuard {
        loop {
            if let Some(g) = self.try_acquire(limits, bytes) {
                return g;
            }
            let listener = self.freed.listen();
            if let Some(g) = self.try_acquire(limits, bytes) {
                return g;
            }
            listener.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_registration_and_removal() {
        let r = Router::new();
        assert!(r.message_handler("a").is_none() && r.request_handler("a").is_none());
        let shared = r.clone();
        shared.on_message("a", |_m| async {});
        // Clones share the table (and its "any handler" flag).
        assert!(r.message_handler("a").is_some());
        assert!(r.message_handler("b").is_none() && r.request_handler("a").is_none());
        r.on_request("q", |_r| async {});
        assert!(r.remove_message("a"));
        assert!(!r.remove_message("a"));
        assert!(r.message_handler("a").is_none());
        assert!(r.request_handler("q").is_some());
        assert!(r.remove_request("q"));
        assert!(r.request_handler("q").is_none());
        assert!(!r.any());
    }

    #[test]
    fn inline_and_task_handlers_replace_each_other() {
        let r = Router::new();
        r.on_request_inline("q", |_l, b| Ok(b));
        assert!(r.any());
        assert!(matches!(
            r.request_handler("q"),
            Some(RequestRoute::Inline(_))
        ));
        r.on_request("q", |_r| async {});
        assert!(matches!(
            r.request_handler("q"),
            Some(RequestRoute::Task(_))
        ));
        r.handle_inline("q", |_l, v: i64| Ok(v));
        assert!(matches!(
            r.request_handler("q"),
            Some(RequestRoute::Inline(_))
        ));
        assert_eq!(
            format!("{r:?}"),
            r#"Router { messages: [], requests: ["q"] }"#
        );
        assert!(r.remove_request("q"));
        assert!(r.request_handler("q").is_none());
        assert!(!r.any());
    }
}
