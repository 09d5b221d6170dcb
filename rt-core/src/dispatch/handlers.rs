//! [`Handlers`]: the op → handler table shared by every link of a server
//! or client, and how handlers are registered.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use jsonlink_proto::{RawJson, RemoteError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::dispatch::responder::not_serialized;
use crate::dispatch::{Message, Request};
use crate::handler_error::HandlerError;
use crate::link::Link;
use crate::runtime::BoxFuture;

/// The answer to a typed handler's request whose body does not fit its
/// argument type.
fn bad_arguments(e: serde_json::Error) -> RemoteError {
    RemoteError::new(RemoteError::BAD_REQUEST, format!("invalid arguments: {e}"))
}

pub(crate) type MessageFn = dyn Fn(Message) -> BoxFuture<'static, ()> + Send + Sync;
type RequestFn = dyn Fn(Request) -> BoxFuture<'static, ()> + Send + Sync;
pub(crate) type InlineFn = dyn Fn(&Link, RawJson) -> Result<RawJson, RemoteError> + Send + Sync;

#[derive(Default)]
struct HandlerTable {
    messages: HashMap<String, MessageRoute>,
    requests: HashMap<String, Arc<RequestFn>>,
    inline: HashMap<String, Arc<InlineFn>>,
}

/// A message handler, boxed.
fn message_fn<F, Fut>(handler: F) -> Arc<MessageFn>
where
    F: Fn(Message) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move |m| Box::pin(handler(m)))
}

/// How a message with a handled `op` is served.
#[derive(Clone)]
pub(crate) enum MessageRoute {
    /// In the link's ordered lane: one call at a time, in arrival order
    /// ([`Handlers::on_message`]).
    Ordered(Arc<MessageFn>),
    /// In a task of its own, concurrently with the link's other handlers
    /// ([`Handlers::on_message_concurrent`]).
    Concurrent(Arc<MessageFn>),
}

/// How a request with a handled `op` is served.
pub(crate) enum RequestRoute {
    /// In a task of its own ([`Handlers::on_request`], [`Handlers::handle_request`]).
    Task(Arc<RequestFn>),
    /// In the link's own task, at once ([`Handlers::on_request_inline`],
    /// [`Handlers::handle_request_inline`]).
    Inline(Arc<InlineFn>),
}

/// Handlers by `op`, shared by every link of a server or client. Cheap to
/// clone (clones share the table); handlers can be added or removed while
/// running.
///
/// A message or request whose body is an object with a string `op` goes to
/// the handler registered for that op.
///
/// # Registering
///
/// The names follow one pattern: `on_*` handlers take the raw
/// [`Message`] or [`Request`] (body as raw JSON, answered through the
/// request); `handle_*` handlers take the typed **arguments**
/// (PROTOCOL.md §11.5) and return the answer; `_inline` runs in the link's
/// own task, `_concurrent` gives up per-link order.
///
/// | | raw | typed |
/// |---|---|---|
/// | message, in order | [`on_message`](Self::on_message) | [`handle_message`](Self::handle_message) |
/// | message, no order | [`on_message_concurrent`](Self::on_message_concurrent) | — |
/// | request, a task each | [`on_request`](Self::on_request) | [`handle_request`](Self::handle_request) |
/// | request, inline | [`on_request_inline`](Self::on_request_inline) | [`handle_request_inline`](Self::handle_request_inline) |
///
/// # Order and concurrency
///
/// - **Message handlers** ([`on_message`](Self::on_message)) of one link
///   run **one at a time, in the order the messages arrived** on that
///   link, whatever their op: each call (and the future it returns)
///   finishes before the next starts, as Node's listeners run. They run
///   in the link's *ordered lane*: a task spawned when a message arrives
///   and none is running for that link, which calls the handlers of the
///   messages waiting in turn and ends when none is left.
/// - **Across links there is no order**: each link has its own lane, and
///   lanes run in parallel on a multi-threaded executor.
/// - **Head-of-line cost**: a slow message handler delays the messages
///   that arrive after it *on its link* (not other links, and not
///   requests, which do not go through the lane). Calls waiting in the
///   lane count against the link's handler budget
///   ([`max_handler_tasks`](crate::LinkOptions::max_handler_tasks),
///   [`max_handler_bytes`](crate::LinkOptions::max_handler_bytes)); once
///   it is used up the link stops reading (and so delays everything on
///   it) until calls finish, rather than queueing without bound. A
///   handler that needs no order can opt out with
///   [`on_message_concurrent`](Self::on_message_concurrent).
/// - **Request handlers** ([`on_request`](Self::on_request),
///   [`handle_request`](Self::handle_request)) run as a task each, concurrently: a slow
///   one delays no other request. Inline request handlers
///   ([`on_request_inline`](Self::on_request_inline),
///   [`handle_request_inline`](Self::handle_request_inline)) are called by the link's own
///   task and answered at once.
///
/// A request to an op with no handler is answered
/// [`no_handler`](RemoteError::NO_HANDLER) at once (unless
/// [`LinkOptions::unhandled_ops_to_events`](crate::LinkOptions::unhandled_ops_to_events)
/// with a consumer declared). Messages no handler takes, and requests
/// without an `op`, go to the event stream only if the application
/// declared that it reads it
/// ([`LinkOptions::consume_events`](crate::LinkOptions::consume_events));
/// otherwise such a message is dropped (counted in
/// [`Stats::dropped_messages`](crate::Stats::dropped_messages)) and such
/// a request answered `no_handler` at once.
#[derive(Clone, Default)]
pub struct Handlers {
    inner: Arc<HandlersInner>,
}

#[derive(Default)]
struct HandlersInner {
    handlers: RwLock<HandlerTable>,
    /// Whether any handler is registered: a table without handlers (every
    /// event to the stream) then costs a link no lock per frame.
    any: AtomicBool,
    /// Whether typed handlers' internal failures are answered with their
    /// error's text (see [`Handlers::expose_internal_errors`]).
    /// Shared with the typed handlers' closures (which must not hold the
    /// table itself: it holds them).
    expose_internal: Arc<AtomicBool>,
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.read();
        let mut m: Vec<&String> = h.messages.keys().collect();
        let mut r: Vec<&String> = h.requests.keys().chain(h.inline.keys()).collect();
        m.sort();
        r.sort();
        f.debug_struct("Handlers")
            .field("messages", &m)
            .field("requests", &r)
            .finish()
    }
}

impl Handlers {
    /// An empty handlers.
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HandlerTable> {
        self.inner
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Edits the handlers, then publishes whether any remain.
    fn edit<R>(&self, f: impl FnOnce(&mut HandlerTable) -> R) -> R {
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

    /// Makes `route` the message handler for `op`.
    fn set_message(&self, op: String, route: MessageRoute) -> &Self {
        self.edit(|h| h.messages.insert(op, route));
        self
    }

    fn any(&self) -> bool {
        self.inner.any.load(Ordering::Acquire)
    }

    /// Whether a typed handler's internal failure (an error converted into
    /// a [`HandlerError`] with `?`) is answered with that error's text
    /// instead of the generic `"internal error"`. Default `false`: the
    /// text may describe this side's internals (paths, queries, hosts), so
    /// it is only logged here (`warn`, target `jsonlink::handler`). Turn
    /// it on for development, or between services that trust each other.
    pub fn expose_internal_errors(&self, on: bool) -> &Self {
        self.inner.expose_internal.store(on, Ordering::Relaxed);
        self
    }

    /// Handles messages with this `op` (replacing any previous handler for
    /// it), in the link's ordered lane: the message handlers of one link
    /// run one at a time, in arrival order, across all ops registered
    /// this way (see [Order and concurrency](Self#order-and-concurrency)
    /// for the guarantee and its head-of-line cost). A handler that panics
    /// is logged and the lane carries on with the next message.
    pub fn on_message<F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.set_message(op.into(), MessageRoute::Ordered(message_fn(handler)))
    }

    /// Handles messages with this `op` (replacing any previous handler for
    /// it) **without ordering**: each call runs as a task of its own, at
    /// once, concurrently with the link's other handlers, so calls for one
    /// link may run in parallel and finish in any order. For handlers that
    /// need no order and may be slow (a slow one then delays no other
    /// message). Calls count against the same handler budget
    /// ([`max_handler_tasks`](crate::LinkOptions::max_handler_tasks),
    /// [`max_handler_bytes`](crate::LinkOptions::max_handler_bytes)).
    pub fn on_message_concurrent<F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        F: Fn(Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.set_message(op.into(), MessageRoute::Concurrent(message_fn(handler)))
    }

    /// [`on_message`](Self::on_message) through a typed function: it gets
    /// the message's **arguments** (PROTOCOL.md §11.5: the `args` member
    /// beside `op`, or the body without `op`) deserialized into `A`, in the
    /// link's ordered lane. A message whose arguments do not fit `A` is
    /// dropped with a warning (target `jsonlink::handler`) naming the op;
    /// messages have no answer to carry the error.
    pub fn handle_message<A, F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(Link, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.on_message(op, move |m: Message| {
            let handler = handler.clone();
            async move {
                match m.body.args::<A>() {
                    Ok(args) => handler(m.link, args).await,
                    Err(e) => tracing::warn!(
                        target: "jsonlink::handler",
                        op = m.op.as_ref().map_or("", |o| o.as_str()),
                        error = %e,
                        "message arguments did not fit the handler's type; dropped"
                    ),
                }
            }
        })
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
        F: Fn(&Link, RawJson) -> Result<RawJson, RemoteError> + Send + Sync + 'static,
    {
        let f: Arc<InlineFn> = Arc::new(handler);
        let op = op.into();
        self.edit(|h| {
            h.requests.remove(&op);
            h.inline.insert(op, f)
        });
        self
    }

    /// [`handle_request`](Self::handle_request) run inline (see
    /// [`on_request_inline`](Self::on_request_inline) for what that means
    /// and when not to): the request's arguments are deserialized into `A`,
    /// and the function's `Ok(R)` or `Err(E)` is the answer, as for
    /// [`handle_request`](Self::handle_request).
    pub fn handle_request_inline<A, R, F>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        A: DeserializeOwned,
        R: Serialize,
        F: Fn(&Link, A) -> Result<R, HandlerError> + Send + Sync + 'static,
    {
        let op = op.into();
        let expose = self.inner.expose_internal.clone();
        let name = op.clone();
        self.on_request_inline(op, move |link, body| {
            let args: A = body.args().map_err(bad_arguments)?;
            let value = handler(link, args)
                .map_err(|e| e.into_answer(&name, expose.load(Ordering::Relaxed)))?;
            serde_json::value::to_raw_value(&value)
                .map(RawJson::new)
                .map_err(|_| not_serialized())
        })
    }

    /// Handles requests with this `op` through a typed function.
    ///
    /// - The function gets the request's **arguments** (PROTOCOL.md §11.5):
    ///   the `args` member of an `{"op":…,"args":…}` body, otherwise the
    ///   body without `op` — so `A` may be an `i64`, a
    ///   `#[serde(deny_unknown_fields)]` struct, or the flat body of a
    ///   zetta-rpc / iris-rpc peer. Arguments that do not fit `A` are
    ///   answered [`bad_request`](RemoteError::BAD_REQUEST).
    /// - Its `Ok(R)` is the answer; its `Err(`[`HandlerError`]`)` the error
    ///   answer. `?` converts into `HandlerError` from a [`RemoteError`]
    ///   (answered as it is) and from any `std::error::Error` (answered
    ///   [`internal`](RemoteError::INTERNAL), its text logged here and not
    ///   sent unless [`expose_internal_errors`](Self::expose_internal_errors));
    ///   `HandlerError::bad_request(..)`, `not_found(..)` and friends build
    ///   the common answers.
    pub fn handle_request<A, R, F, Fut>(&self, op: impl Into<String>, handler: F) -> &Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Link, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let expose = self.inner.expose_internal.clone();
        self.on_request(op, move |req: Request| {
            let handler = handler.clone();
            let expose = expose.clone();
            async move {
                let args: A = match req.body.args() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = req.respond_error(bad_arguments(e));
                        return;
                    }
                };
                let Request {
                    link,
                    op,
                    responder,
                    ..
                } = req;
                let _ = match handler(link, args).await {
                    Ok(v) => responder.respond(&v),
                    Err(e) => {
                        let op = op.as_ref().map_or("", |o| o.as_str());
                        responder.respond_error(e.into_answer(op, expose.load(Ordering::Relaxed)))
                    }
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

    pub(crate) fn message_handler(&self, op: &str) -> Option<MessageRoute> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_follow_registration_and_removal() {
        let r = Handlers::new();
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
        let r = Handlers::new();
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
        r.handle_request_inline("q", |_l, v: i64| Ok(v));
        assert!(matches!(
            r.request_handler("q"),
            Some(RequestRoute::Inline(_))
        ));
        assert_eq!(
            format!("{r:?}"),
            r#"Handlers { messages: [], requests: ["q"] }"#
        );
        assert!(r.remove_request("q"));
        assert!(r.request_handler("q").is_none());
        assert!(!r.any());
    }
}
