//! The procedure registry: procedures keyed by exact
//! `scope::procedure::version`, each with a handler, an optional argument
//! schema, a description and an internal flag; per-call middleware; the
//! error hook; nested calls through a [`Caller`].
//!
//! One call runs in this order:
//! 1. the deadline, if it has already passed → 500 `deadline exceeded`;
//! 2. lookup → 501 when no procedure has this scope, procedure and version;
//! 3. internal flag → 403 when an internal-only procedure is called from an
//!    origin other than [`Transport::Internal`] (nested calls are internal);
//! 4. middleware, in the order added (each may answer instead of calling
//!    `next`);
//! 5. the argument schema → 422 naming every failing instance path (capped
//!    at [`Limits::max_reported_errors`]); a typed handler's deserialization
//!    → 422;
//! 6. the handler. A handler's 500, its panic (caught on the future) → the
//!    error hook, then 500 with the message `internal error` unless
//!    [`Limits::expose_internal_errors`].
//!
//! The response always echoes the request's `correlationId`.

use crate::schema::{CompiledSchema, SchemaError};
use crate::wire::{CallRequest, CallResponse, Identity, code};
use futures_util::{FutureExt, Stream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

type RawFn = dyn Fn(Context, Value) -> BoxFuture<'static, CallResponse> + Send + Sync;

/// The items of a stream procedure, boxed: each a value, or an error that
/// ends the stream.
pub type BoxItems = Pin<Box<dyn Stream<Item = Result<Value, RpcError>> + Send + 'static>>;

type StreamFn = dyn Fn(Context, Value) -> Result<BoxItems, RpcError> + Send + Sync;

/// A procedure's handler: one answer, or a stream of items.
#[derive(Clone)]
enum Handler {
    Unary(Arc<RawFn>),
    Stream(Arc<StreamFn>),
}

/// Where a stream procedure's opened stream is left for the caller of
/// [`Registry::open_stream`] (`None` for a unary call).
type StreamSlot = Arc<std::sync::Mutex<Option<ProcedureStream>>>;

/// The transport a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The HTTP gateway.
    Http,
    /// The WebSocket gateway.
    WebSocket,
    /// A jsonlink link (the `rpc.call` op).
    Link,
    /// A nested call from a handler, or in-process code: may reach
    /// internal-only procedures.
    Internal,
}

/// The authenticated handshake identity of a jsonlink peer. It says which
/// node the link's other end claims to be: anyone holding the link secret
/// can claim any node, so it is never taken as a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's node id.
    pub node: String,
    /// The peer's designation (its role).
    pub designation: String,
}

/// Where a call comes from. Build it with [`Origin::new`] and set the
/// fields that apply.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The transport.
    pub transport: Transport,
    /// The client's address (for the gateways, after trusted-proxy rules).
    pub remote_addr: Option<SocketAddr>,
    /// The connection's id (WebSocket connection, jsonlink link).
    pub connection_id: Option<u64>,
    /// The jsonlink peer, for calls over a link.
    pub peer: Option<PeerInfo>,
    /// When the call must have been answered. The registry refuses to start
    /// a call (or a nested call) past it and passes it to handlers; the
    /// transport enforces it by dropping the call's future.
    pub deadline: Option<Instant>,
}

impl Origin {
    /// An origin on `transport` with nothing else known.
    pub fn new(transport: Transport) -> Self {
        Self {
            transport,
            remote_addr: None,
            connection_id: None,
            peer: None,
            deadline: None,
        }
    }

    /// An in-process caller ([`Transport::Internal`]).
    pub fn internal() -> Self {
        Self::new(Transport::Internal)
    }

    /// Sets the deadline.
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// Sets the remote address.
    pub fn with_remote_addr(mut self, addr: Option<SocketAddr>) -> Self {
        self.remote_addr = addr;
        self
    }

    /// Sets the connection id.
    pub fn with_connection_id(mut self, id: Option<u64>) -> Self {
        self.connection_id = id;
        self
    }

    /// Sets the peer.
    pub fn with_peer(mut self, peer: Option<PeerInfo>) -> Self {
        self.peer = peer;
        self
    }
}

/// What a handler or a middleware answers instead of a result: a code and
/// a message. A 500 is a handler error (reported to the error hook, its
/// message hidden unless configured); any other code is sent as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The code (any; the therms ones are in [`code`]).
    pub code: u16,
    /// The message sent with it.
    pub message: String,
}

impl RpcError {
    /// An error with `code` and `message`.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    /// A 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(code::BAD_REQUEST, message)
    }
    /// A 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(code::FORBIDDEN, message)
    }
    /// A 422.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(code::UNPROCESSABLE, message)
    }
    /// A 500 (a handler error: hidden from the caller unless configured).
    pub fn internal(message: impl fmt::Display) -> Self {
        Self::new(code::INTERNAL, message.to_string())
    }
}

impl fmt::Display for RpcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for RpcError {}

impl From<RpcError> for CallResponse {
    fn from(e: RpcError) -> Self {
        Self::error(e.code, e.message)
    }
}

/// How a procedure is addressed and described. The handler is given
/// separately to [`RegistryBuilder::procedure`] or
/// [`RegistryBuilder::raw_procedure`].
#[derive(Debug, Clone)]
pub struct Procedure {
    name: String,
    scope: String,
    version: String,
    description: Option<String>,
    internal: bool,
    schema: Option<Value>,
    coerce: bool,
}

impl Procedure {
    /// The procedure `name` in scope `"global"`, version `"1"`, public, with
    /// no schema.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            scope: crate::wire::DEFAULT_SCOPE.into(),
            version: crate::wire::DEFAULT_VERSION.into(),
            description: None,
            internal: false,
            schema: None,
            coerce: false,
        }
    }
    /// Sets the scope.
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = scope.into();
        self
    }
    /// Sets the version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }
    /// Sets the description (listed by [`Registry::procedures`]).
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
    /// Makes the procedure internal-only: callable by nested calls and
    /// in-process code ([`Transport::Internal`]), 403 from anywhere else.
    pub fn internal(mut self, internal: bool) -> Self {
        self.internal = internal;
        self
    }
    /// Validates the arguments against this JSON Schema before the handler
    /// runs (compiled by [`RegistryBuilder::build`]).
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = Some(schema);
        self
    }
    /// Derives the schema from the argument type (feature `schemars`).
    #[cfg(feature = "schemars")]
    pub fn schema_for<T: schemars::JsonSchema>(self) -> Self {
        let schema = schemars::schema_for!(T);
        self.schema(serde_json::to_value(schema).unwrap_or(Value::Bool(true)))
    }
    /// Opts in to coercion: before validation, a string argument where the
    /// schema wants a number, integer or boolean is converted when it parses
    /// as one, and a number or boolean where it wants a string becomes its
    /// text. Off by default: arguments are validated as sent.
    pub fn coerce(mut self, coerce: bool) -> Self {
        self.coerce = coerce;
        self
    }
}

/// What [`Registry::procedures`] lists about one procedure.
#[derive(Debug, Clone, Serialize)]
pub struct ProcedureInfo {
    /// The procedure's name.
    pub procedure: String,
    /// Its scope.
    pub scope: String,
    /// Its version.
    pub version: String,
    /// Its description.
    pub description: Option<String>,
    /// Whether it is internal-only.
    pub internal: bool,
    /// Its argument schema.
    pub args: Option<Value>,
    /// Whether it is a stream procedure (see
    /// [`RegistryBuilder::stream_procedure`]).
    pub stream: bool,
}

struct Entry {
    info: ProcedureInfo,
    schema: Option<CompiledSchema>,
    coerce: bool,
    handler: Handler,
}

/// The registry's limits and switches.
///
/// | limit | default | meaning |
/// | --- | --- | --- |
/// | `max_nested_depth` | 8 | nested calls deeper than this (a handler's call is depth 1) → 500 |
/// | `max_reported_errors` | 16 | a 422 names at most this many failing instance paths, then says how many more |
/// | `expose_internal_errors` | false | send a handler error's or panic's text with its 500 instead of `internal error` |
#[derive(Debug, Clone)]
pub struct Limits {
    /// Deepest chain of nested calls.
    pub max_nested_depth: u32,
    /// Failing instance paths named in one 422.
    pub max_reported_errors: usize,
    /// Whether a 500 carries the handler's own message.
    pub expose_internal_errors: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_nested_depth: 8,
            max_reported_errors: 16,
            expose_internal_errors: false,
        }
    }
}

/// What went wrong in a handler, as the error hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerFault {
    /// The handler answered 500 with this message.
    Error(String),
    /// The handler panicked with this message.
    Panic(String),
}

/// One handler error or panic, given to the error hook.
#[derive(Debug, Clone)]
pub struct ErrorEvent {
    /// The procedure's scope.
    pub scope: String,
    /// The procedure's name.
    pub procedure: String,
    /// The procedure's version.
    pub version: String,
    /// The caller's identity with its `authorization` removed (the hook
    /// never sees the credential); [`ErrorEvent::authorized`] says whether
    /// there was one.
    pub identity: Option<Identity>,
    /// Whether the call carried an authorization.
    pub authorized: bool,
    /// Where the call came from.
    pub origin: Origin,
    /// What happened.
    pub fault: HandlerFault,
}

type ErrorHook = dyn Fn(&ErrorEvent) + Send + Sync;

/// What a middleware sees of a call.
#[derive(Debug)]
pub struct CallInfo<'a> {
    /// The procedure's name.
    pub procedure: &'a str,
    /// Its scope.
    pub scope: &'a str,
    /// Its version.
    pub version: &'a str,
    /// The procedure's registration.
    pub info: &'a ProcedureInfo,
    /// The call's identity (authorization redacted in `Debug`).
    pub identity: Option<&'a Identity>,
    /// Where it came from (its `peer` for calls over a link). (Middleware
    /// does not see the arguments: they go to validation and the handler
    /// without a copy.)
    pub origin: &'a Origin,
    /// 0 for a call from a transport, 1 and up for nested calls.
    pub depth: u32,
}

/// Per-call middleware: sees every call to a registered procedure after the
/// 501 and 403 checks and before validation. It answers by calling
/// `next.run(call)` (and may look at or replace the response) or by
/// returning a response of its own (authorization, rate limits). Metrics and
/// tracing wrap `next.run`.
pub trait Middleware: Send + Sync + 'static {
    /// Handles one call.
    fn handle<'a>(&'a self, call: &'a CallInfo<'a>, next: Next<'a>) -> BoxFuture<'a, CallResponse>;
}

/// A closure as a [`Middleware`] (see [`RegistryBuilder::middleware_fn`]).
pub struct FnMiddleware<F>(F);

impl<F> fmt::Debug for FnMiddleware<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnMiddleware")
    }
}

impl<F> Middleware for FnMiddleware<F>
where
    F: for<'a> Fn(&'a CallInfo<'a>, Next<'a>) -> BoxFuture<'a, CallResponse>
        + Send
        + Sync
        + 'static,
{
    fn handle<'a>(&'a self, call: &'a CallInfo<'a>, next: Next<'a>) -> BoxFuture<'a, CallResponse> {
        (self.0)(call, next)
    }
}

/// The rest of the chain after a middleware: the next middleware, then
/// validation and the handler.
pub struct Next<'a> {
    rest: &'a [Arc<dyn Middleware>],
    end: &'a Endpoint,
}

impl fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next")
            .field("middleware_left", &self.rest.len())
            .finish_non_exhaustive()
    }
}

impl<'a> Next<'a> {
    /// Runs the rest of the chain.
    pub fn run(self, call: &'a CallInfo<'a>) -> BoxFuture<'a, CallResponse> {
        match self.rest.split_first() {
            Some((mw, rest)) => mw.handle(
                call,
                Next {
                    rest,
                    end: self.end,
                },
            ),
            None => Box::pin(self.end.run()),
        }
    }
}

/// Validation and the handler of one call, as the end of the middleware
/// chain.
struct Endpoint {
    entry: Arc<Entry>,
    inner: Arc<Inner>,
    ctx: Context,
    args: std::sync::Mutex<Option<Value>>,
    slot: Option<StreamSlot>,
}

impl Endpoint {
    async fn run(&self) -> CallResponse {
        let args = self
            .args
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(mut args) = args else {
            return CallResponse::error(code::INTERNAL, "a middleware ran the chain twice");
        };
        if let Some(schema) = &self.entry.schema {
            if self.entry.coerce {
                schema.coerce(&mut args);
            }
            if let Err(message) = schema.validate(&args, self.inner.limits.max_reported_errors) {
                return CallResponse::error(code::UNPROCESSABLE, message);
            }
        }
        run_handler(
            &self.inner,
            &self.entry,
            self.ctx.clone(),
            args,
            self.slot.as_ref(),
        )
        .await
    }
}

async fn run_handler(
    inner: &Arc<Inner>,
    entry: &Arc<Entry>,
    ctx: Context,
    args: Value,
    slot: Option<&StreamSlot>,
) -> CallResponse {
    let handler = match &entry.handler {
        Handler::Unary(h) => h,
        Handler::Stream(h) => {
            let opened = std::panic::catch_unwind(AssertUnwindSafe(|| h(ctx.clone(), args)));
            let (resp, fault) = match opened {
                Ok(Ok(items)) => {
                    if let Some(slot) = slot {
                        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(ProcedureStream {
                            items: Some(items),
                            inner: inner.clone(),
                            entry: entry.clone(),
                            ctx,
                        });
                    }
                    return CallResponse::ok(Value::Null);
                }
                Ok(Err(e)) if e.code == code::INTERNAL => {
                    let m = e.message.clone();
                    (CallResponse::from(e), HandlerFault::Error(m))
                }
                Ok(Err(e)) => return e.into(),
                Err(panic) => {
                    let msg = panic_message(panic.as_ref());
                    (
                        CallResponse::error(code::INTERNAL, msg.clone()),
                        HandlerFault::Panic(msg),
                    )
                }
            };
            report_fault(inner, entry, &ctx, fault);
            return hide(inner, resp);
        }
    };
    let fut = handler(ctx.clone(), args);
    let (resp, fault) = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(resp) if resp.code == code::INTERNAL => {
            let msg = resp.message.clone().unwrap_or_default();
            (resp, Some(HandlerFault::Error(msg)))
        }
        Ok(resp) => (resp, None),
        Err(panic) => {
            let msg = panic_message(panic.as_ref());
            (
                CallResponse::error(code::INTERNAL, msg.clone()),
                Some(HandlerFault::Panic(msg)),
            )
        }
    };
    let Some(fault) = fault else { return resp };
    report_fault(inner, entry, &ctx, fault);
    hide(inner, resp)
}

/// A handler's 500 as sent: its text only if configured.
fn hide(inner: &Inner, resp: CallResponse) -> CallResponse {
    if inner.limits.expose_internal_errors {
        resp
    } else {
        CallResponse::error(code::INTERNAL, "internal error")
    }
}

/// Logs a handler fault and gives it to the error hook.
fn report_fault(inner: &Inner, entry: &Entry, ctx: &Context, fault: HandlerFault) {
    tracing::warn!(
        target: "jsonlink::rpc",
        scope = %entry.info.scope,
        procedure = %entry.info.procedure,
        version = %entry.info.version,
        transport = ?ctx.origin.transport,
        fault = ?fault,
        "procedure handler failed"
    );
    if let Some(hook) = &inner.error_hook {
        let identity = ctx.identity.as_deref().map(|i| Identity {
            authorization: None,
            ..i.clone()
        });
        let event = ErrorEvent {
            scope: entry.info.scope.clone(),
            procedure: entry.info.procedure.clone(),
            version: entry.info.version.clone(),
            authorized: ctx
                .identity
                .as_deref()
                .is_some_and(|i| i.authorization.is_some()),
            identity,
            origin: (*ctx.origin).clone(),
            fault,
        };
        // A panicking hook must not take the call down with it.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&event)));
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}

type Map<V> = HashMap<String, V, rustc_hash::FxBuildHasher>;
type Table = Map<Map<Map<Arc<Entry>>>>;

struct Inner {
    table: Table,
    middleware: Vec<Arc<dyn Middleware>>,
    error_hook: Option<Arc<ErrorHook>>,
    limits: Limits,
}

impl Inner {
    fn lookup(&self, scope: &str, procedure: &str, version: &str) -> Option<&Arc<Entry>> {
        self.table.get(scope)?.get(procedure)?.get(version)
    }
}

/// The procedures, middleware and error hook, shared (`Clone` is an `Arc`
/// clone). Built once with [`Registry::builder`].
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("procedures", &self.procedures().len())
            .field("middleware", &self.inner.middleware.len())
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// Why [`RegistryBuilder::build`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Two procedures have the same scope, name and version.
    #[error("procedure {0} is registered twice")]
    Duplicate(String),
    /// A procedure's argument schema does not compile.
    #[error("the argument schema of {key} is invalid: {source}")]
    Schema {
        /// `scope::procedure::version`.
        key: String,
        /// What is wrong with it.
        #[source]
        source: SchemaError,
    },
}

/// Collects procedures, middleware, the error hook and limits.
pub struct RegistryBuilder {
    procedures: Vec<(Procedure, Handler)>,
    middleware: Vec<Arc<dyn Middleware>>,
    error_hook: Option<Arc<ErrorHook>>,
    limits: Limits,
}

impl fmt::Debug for RegistryBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryBuilder")
            .field("procedures", &self.procedures.len())
            .finish_non_exhaustive()
    }
}

/// `serde_json::from_value`, but a `Value` wanted is moved, not rebuilt.
fn from_value<A: DeserializeOwned + 'static>(v: Value) -> Result<A, serde_json::Error> {
    let mut slot = Some(v);
    if let Some(a) = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<A>>()
        .and_then(Option::take)
    {
        return Ok(a);
    }
    serde_json::from_value(slot.unwrap_or_default())
}

/// `serde_json::to_value`, but a `Value` is moved, not rebuilt.
fn to_value<R: Serialize + 'static>(r: R) -> Result<Value, serde_json::Error> {
    let mut slot = Some(r);
    if let Some(v) = (&mut slot as &mut dyn std::any::Any)
        .downcast_mut::<Option<Value>>()
        .and_then(Option::take)
    {
        return Ok(v);
    }
    slot.map_or(Ok(Value::Null), serde_json::to_value)
}

impl RegistryBuilder {
    /// Adds a typed procedure: the arguments are deserialized into `A`
    /// (failure → 422), the handler's `Ok` is serialized as `data`, its
    /// `Err` is answered with its code and message.
    pub fn procedure<A, R, F, Fut>(mut self, procedure: Procedure, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let raw: Arc<RawFn> = Arc::new(move |ctx: Context, args: Value| {
            let typed = from_value::<A>(args);
            let handler = handler.clone();
            Box::pin(async move {
                let args = match typed {
                    Ok(a) => a,
                    Err(e) => {
                        return CallResponse::error(
                            code::UNPROCESSABLE,
                            format!("args do not fit the procedure: {e}"),
                        );
                    }
                };
                match handler(ctx, args).await {
                    Ok(r) => match to_value(r) {
                        Ok(v) => CallResponse::ok(v),
                        Err(e) => CallResponse::error(
                            code::INTERNAL,
                            format!("result does not serialize: {e}"),
                        ),
                    },
                    Err(e) => e.into(),
                }
            }) as BoxFuture<'static, CallResponse>
        });
        self.procedures.push((procedure, Handler::Unary(raw)));
        self
    }

    /// Adds a stream procedure: the arguments are deserialized into `A`
    /// (failure → 422) and the handler returns a stream of items, each
    /// serialized as it is taken. An `Err` item ends the stream with its
    /// code and message (a 500 is a handler error: reported to the error
    /// hook, its message hidden unless configured), as does a panic while
    /// the stream is polled. The stream is dropped — the producer stops —
    /// when the caller cancels, its link is lost, or the deadline passes.
    ///
    /// Called through a unary path ([`Registry::call`], `rpc.call`, a
    /// gateway) a stream procedure answers **400** `… is a stream
    /// procedure`; take it with [`Registry::open_stream`] (over a link:
    /// `rpc.stream`, [`LinkTransport::stream`](crate::LinkTransport::stream)).
    pub fn stream_procedure<A, R, F, S>(mut self, procedure: Procedure, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Context, A) -> S + Send + Sync + 'static,
        S: Stream<Item = Result<R, RpcError>> + Send + 'static,
    {
        use futures_util::StreamExt;
        let raw: Arc<StreamFn> = Arc::new(move |ctx: Context, args: Value| {
            let args = from_value::<A>(args).map_err(|e| {
                RpcError::unprocessable(format!("args do not fit the procedure: {e}"))
            })?;
            let items = handler(ctx, args).map(|item| {
                item.and_then(|r| {
                    to_value(r)
                        .map_err(|e| RpcError::internal(format!("item does not serialize: {e}")))
                })
            });
            Ok(Box::pin(items) as BoxItems)
        });
        self.procedures.push((procedure, Handler::Stream(raw)));
        self
    }

    /// Adds a raw procedure: the handler gets the arguments as they came and
    /// answers with a whole [`CallResponse`] (its `correlationId` is set by
    /// the registry; a 500 is a handler error).
    pub fn raw_procedure<F, Fut>(mut self, procedure: Procedure, handler: F) -> Self
    where
        F: Fn(Context, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CallResponse> + Send + 'static,
    {
        let raw: Arc<RawFn> = Arc::new(move |ctx: Context, args: Value| {
            Box::pin(handler(ctx, args)) as BoxFuture<'static, CallResponse>
        });
        self.procedures.push((procedure, Handler::Unary(raw)));
        self
    }

    /// Adds a middleware; they run in the order added, the first outermost.
    pub fn middleware(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Adds a closure as a middleware:
    /// `|call, next| Box::pin(async move { next.run(call).await })`.
    pub fn middleware_fn<F>(self, f: F) -> Self
    where
        F: for<'a> Fn(&'a CallInfo<'a>, Next<'a>) -> BoxFuture<'a, CallResponse>
            + Send
            + Sync
            + 'static,
    {
        self.middleware(FnMiddleware(f))
    }

    /// Sets the error hook, called for every handler 500 and panic (never
    /// with the authorization). A panic in the hook is caught and ignored.
    pub fn on_error(mut self, hook: impl Fn(&ErrorEvent) + Send + Sync + 'static) -> Self {
        self.error_hook = Some(Arc::new(hook));
        self
    }

    /// Sets the limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Compiles the schemas and builds the registry.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut table = Table::default();
        for (p, handler) in self.procedures {
            let key = format!("{}::{}::{}", p.scope, p.name, p.version);
            let schema =
                match &p.schema {
                    Some(s) => Some(CompiledSchema::compile(s).map_err(|source| {
                        RegistryError::Schema {
                            key: key.clone(),
                            source,
                        }
                    })?),
                    None => None,
                };
            let slot = table
                .entry(p.scope.clone())
                .or_default()
                .entry(p.name.clone())
                .or_default();
            if slot.contains_key(&p.version) {
                return Err(RegistryError::Duplicate(key));
            }
            let entry = Entry {
                info: ProcedureInfo {
                    procedure: p.name,
                    scope: p.scope,
                    version: p.version.clone(),
                    description: p.description,
                    internal: p.internal,
                    args: p.schema,
                    stream: matches!(handler, Handler::Stream(_)),
                },
                schema,
                coerce: p.coerce,
                handler,
            };
            slot.insert(p.version, Arc::new(entry));
        }
        Ok(Registry {
            inner: Arc::new(Inner {
                table,
                middleware: self.middleware,
                error_hook: self.error_hook,
                limits: self.limits,
            }),
        })
    }
}

impl Registry {
    /// Starts a registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder {
            procedures: Vec::new(),
            middleware: Vec::new(),
            error_hook: None,
            limits: Limits::default(),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Every registered procedure, sorted by scope, name and version.
    pub fn procedures(&self) -> Vec<ProcedureInfo> {
        let mut v: Vec<ProcedureInfo> = self
            .inner
            .table
            .values()
            .flat_map(|m| m.values())
            .flat_map(|m| m.values())
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| {
            (&a.scope, &a.procedure, &a.version).cmp(&(&b.scope, &b.procedure, &b.version))
        });
        v
    }

    /// Runs one call to completion (see the module docs for the order of
    /// checks). `req.identity` is the call's identity: a transport puts the
    /// connection's there when the call carries none. Never panics; echoes
    /// `correlationId`. Dropping the future cancels the call and its nested
    /// calls.
    pub fn call(
        &self,
        req: CallRequest,
        origin: Origin,
    ) -> impl Future<Output = CallResponse> + Send + 'static {
        self.call_as(req, None, origin)
    }

    /// [`call`](Self::call) with a shared connection identity, used when
    /// `req` carries none (no copy of it per call).
    pub(crate) fn call_as(
        &self,
        req: CallRequest,
        connection_identity: Option<Arc<Identity>>,
        origin: Origin,
    ) -> impl Future<Output = CallResponse> + Send + 'static {
        self.run_as(req, connection_identity, origin, None)
    }

    /// Opens a stream procedure (see
    /// [`RegistryBuilder::stream_procedure`]): the same checks as
    /// [`call`](Self::call) (501, 403, middleware — which sees the opening
    /// and may refuse it —, validation), then the handler makes the stream.
    /// `Err` is the answer when the stream was not opened: any code of
    /// [`call`](Self::call)'s, and 400 for a procedure that is not a
    /// stream procedure. The items are taken from the [`ProcedureStream`];
    /// dropping it drops the handler's stream.
    pub fn open_stream(
        &self,
        req: CallRequest,
        origin: Origin,
    ) -> impl Future<Output = Result<ProcedureStream, CallResponse>> + Send + 'static {
        self.open_stream_as(req, None, origin)
    }

    /// [`open_stream`](Self::open_stream) with a shared connection
    /// identity.
    pub(crate) fn open_stream_as(
        &self,
        req: CallRequest,
        connection_identity: Option<Arc<Identity>>,
        origin: Origin,
    ) -> impl Future<Output = Result<ProcedureStream, CallResponse>> + Send + 'static {
        let slot: StreamSlot = Arc::default();
        let run = self.run_as(req, connection_identity, origin, Some(slot.clone()));
        async move {
            let resp = run.await;
            let opened = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            match opened {
                Some(s) if resp.success => Ok(s),
                _ => Err(resp),
            }
        }
    }

    fn run_as(
        &self,
        req: CallRequest,
        connection_identity: Option<Arc<Identity>>,
        origin: Origin,
        slot: Option<StreamSlot>,
    ) -> impl Future<Output = CallResponse> + Send + 'static {
        let inner = self.inner.clone();
        async move {
            let identity = match req.identity {
                Some(i) => Some(Arc::new(i)),
                None => connection_identity,
            };
            let correlation_id = req.correlation_id;
            let call = dispatch(
                inner,
                &req.scope,
                &req.procedure,
                &req.version,
                req.args,
                identity,
                Arc::new(origin),
                0,
                slot,
            );
            // A handler's panic is caught (and reported) closer to it; this
            // catches one in a middleware, so the call still gets its 500.
            match AssertUnwindSafe(call).catch_unwind().await {
                Ok(resp) => resp,
                Err(panic) => {
                    tracing::error!(
                        target: "jsonlink::rpc",
                        scope = %req.scope,
                        procedure = %req.procedure,
                        version = %req.version,
                        panic = %panic_message(panic.as_ref()),
                        "a procedure middleware panicked"
                    );
                    CallResponse::error(code::INTERNAL, "internal error")
                }
            }
            .with_correlation_id(correlation_id)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    inner: Arc<Inner>,
    scope: &str,
    procedure: &str,
    version: &str,
    args: Value,
    identity: Option<Arc<Identity>>,
    origin: Arc<Origin>,
    depth: u32,
    slot: Option<StreamSlot>,
) -> CallResponse {
    if origin.deadline.is_some_and(|d| Instant::now() >= d) {
        return CallResponse::error(code::INTERNAL, "deadline exceeded");
    }
    let Some(entry) = inner.lookup(scope, procedure, version).cloned() else {
        return CallResponse::error(
            code::NOT_IMPLEMENTED,
            format!("no procedure {scope}::{procedure}::{version}"),
        );
    };
    if entry.info.internal && origin.transport != Transport::Internal {
        return CallResponse::error(
            code::FORBIDDEN,
            format!("{scope}::{procedure}::{version} is internal"),
        );
    }
    match (&entry.handler, &slot) {
        (Handler::Stream(_), None) => {
            return CallResponse::error(
                code::BAD_REQUEST,
                format!(
                    "{scope}::{procedure}::{version} is a stream procedure: open it as a stream (rpc.stream)"
                ),
            );
        }
        (Handler::Unary(_), Some(_)) => {
            return CallResponse::error(
                code::BAD_REQUEST,
                format!(
                    "{scope}::{procedure}::{version} is not a stream procedure: call it with rpc.call"
                ),
            );
        }
        _ => {}
    }
    let ctx = Context {
        inner: inner.clone(),
        entry: entry.clone(),
        identity,
        origin,
        depth,
    };
    if inner.middleware.is_empty() && entry.schema.is_none() {
        // The hot path: no chain to build.
        run_handler(&inner, &entry, ctx, args, slot.as_ref()).await
    } else {
        // Boxed: keeps the chain's state out of every call's future.
        Box::pin(chain(inner, entry, ctx, args, slot)).await
    }
}

/// Middleware, validation and the handler.
async fn chain(
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    ctx: Context,
    args: Value,
    slot: Option<StreamSlot>,
) -> CallResponse {
    let identity = ctx.identity.clone();
    let origin = ctx.origin.clone();
    let depth = ctx.depth;
    let end = Endpoint {
        entry: entry.clone(),
        inner: inner.clone(),
        ctx,
        args: std::sync::Mutex::new(Some(args)),
        slot,
    };
    let info = CallInfo {
        procedure: &entry.info.procedure,
        scope: &entry.info.scope,
        version: &entry.info.version,
        info: &entry.info,
        identity: identity.as_deref(),
        origin: &origin,
        depth,
    };
    Next {
        rest: &inner.middleware,
        end: &end,
    }
    .run(&info)
    .await
}

/// What a handler gets besides its arguments: the call's identity, origin,
/// deadline, and a [`Caller`] for nested calls.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    identity: Option<Arc<Identity>>,
    origin: Arc<Origin>,
    depth: u32,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("scope", &self.entry.info.scope)
            .field("procedure", &self.entry.info.procedure)
            .field("version", &self.entry.info.version)
            .field("identity", &self.identity)
            .field("origin", &self.origin)
            .field("depth", &self.depth)
            .finish()
    }
}

impl Context {
    /// The call's identity (the connection's, unless the call carried one).
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }
    /// Where the call came from. For nested calls the transport is
    /// [`Transport::Internal`] and the rest is the original call's.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    /// The procedure's registration.
    pub fn procedure(&self) -> &ProcedureInfo {
        &self.entry.info
    }
    /// 0 for a call from a transport, 1 and up for nested calls.
    pub fn depth(&self) -> u32 {
        self.depth
    }
    /// When the call must be answered.
    pub fn deadline(&self) -> Option<Instant> {
        self.origin.deadline
    }
    /// The time left before the deadline (`None` without one).
    pub fn remaining(&self) -> Option<Duration> {
        self.origin
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
    /// A caller for nested calls with this call's identity and deadline.
    pub fn caller(&self) -> Caller {
        Caller {
            inner: self.inner.clone(),
            identity: self.identity.clone(),
            origin: Arc::new(Origin {
                transport: Transport::Internal,
                ..(*self.origin).clone()
            }),
            depth: self.depth + 1,
        }
    }
    /// Calls another procedure (see [`Caller::call`]).
    pub fn call(&self, req: CallRequest) -> BoxFuture<'static, CallResponse> {
        self.caller().call(req)
    }
}

/// Makes nested calls: internal (they may reach internal-only procedures),
/// with the original call's identity and deadline, one level deeper.
#[derive(Clone)]
pub struct Caller {
    inner: Arc<Inner>,
    identity: Option<Arc<Identity>>,
    origin: Arc<Origin>,
    depth: u32,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("identity", &self.identity)
            .field("origin", &self.origin)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// Calls a procedure. The original identity applies unless `req` carries
    /// one of its own; past [`Limits::max_nested_depth`] → 500; past the
    /// deadline → 500 `deadline exceeded`. `correlationId` is echoed.
    pub fn call(&self, req: CallRequest) -> BoxFuture<'static, CallResponse> {
        let inner = self.inner.clone();
        let identity = match req.identity {
            Some(i) => Some(Arc::new(i)),
            None => self.identity.clone(),
        };
        let origin = self.origin.clone();
        let depth = self.depth;
        let correlation_id = req.correlation_id;
        Box::pin(async move {
            if depth > inner.limits.max_nested_depth {
                return CallResponse::error(
                    code::INTERNAL,
                    format!(
                        "nested calls deeper than {} levels",
                        inner.limits.max_nested_depth
                    ),
                )
                .with_correlation_id(correlation_id);
            }
            dispatch(
                inner,
                &req.scope,
                &req.procedure,
                &req.version,
                req.args,
                identity,
                origin,
                depth,
                None,
            )
            .await
            .with_correlation_id(correlation_id)
        })
    }

    /// Calls a procedure and reads its `data` as `R`; a response that is
    /// not a success becomes an [`RpcError`] with its code and message.
    pub async fn call_typed<R: DeserializeOwned>(&self, req: CallRequest) -> Result<R, RpcError> {
        let resp = self.call(req).await;
        if !resp.success {
            return Err(RpcError::new(resp.code, resp.message.unwrap_or_default()));
        }
        serde_json::from_value(resp.data.unwrap_or(Value::Null))
            .map_err(|e| RpcError::internal(format!("nested result does not fit: {e}")))
    }
}

/// The items of an opened stream procedure ([`Registry::open_stream`]).
/// Each is a value, or an error that ends the stream: the handler's own
/// error item (a 500 reported to the error hook and hidden unless
/// configured), or a 500 for a panic while polling it. It ends after an
/// error. Dropping it drops the handler's stream at once.
pub struct ProcedureStream {
    items: Option<BoxItems>,
    inner: Arc<Inner>,
    entry: Arc<Entry>,
    ctx: Context,
}

impl fmt::Debug for ProcedureStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcedureStream")
            .field("procedure", &self.entry.info.procedure)
            .field("ended", &self.items.is_none())
            .finish_non_exhaustive()
    }
}

impl ProcedureStream {
    /// The handler's context (identity, origin, deadline).
    pub fn context(&self) -> &Context {
        &self.ctx
    }
}

impl Stream for ProcedureStream {
    type Item = Result<Value, RpcError>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(items) = this.items.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| items.as_mut().poll_next(cx)));
        let fault = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Some(Ok(v)))) => return Poll::Ready(Some(Ok(v))),
            Ok(Poll::Ready(None)) => {
                this.items = None;
                return Poll::Ready(None);
            }
            Ok(Poll::Ready(Some(Err(e)))) if e.code != code::INTERNAL => {
                this.items = None;
                return Poll::Ready(Some(Err(e)));
            }
            Ok(Poll::Ready(Some(Err(e)))) => HandlerFault::Error(e.message),
            Err(panic) => HandlerFault::Panic(panic_message(panic.as_ref())),
        };
        this.items = None;
        let text = match &fault {
            HandlerFault::Error(m) | HandlerFault::Panic(m) => m.clone(),
        };
        report_fault(&this.inner, &this.entry, &this.ctx, fault);
        let message = if this.inner.limits.expose_internal_errors {
            text
        } else {
            "internal error".to_owned()
        };
        Poll::Ready(Some(Err(RpcError::new(code::INTERNAL, message))))
    }
}
