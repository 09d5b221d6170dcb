//! The registry in process: every code, the order of checks, nested calls,
//! middleware, the error hook.

use futures_lite::future::block_on;
use jsonlink_rpc::{
    BoxFuture, CallInfo, CallRequest, CallResponse, ErrorEvent, HandlerFault, Identity, Limits,
    Middleware, Next, Origin, Procedure, Registry, RpcError, Transport, code,
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

fn http() -> Origin {
    Origin::new(Transport::Http)
}

fn call(r: &Registry, req: CallRequest, origin: Origin) -> CallResponse {
    block_on(r.call(req, origin))
}

fn basic() -> Registry {
    Registry::builder()
        .procedure(Procedure::new("add"), |_cx, a: Add| async move {
            Ok::<_, RpcError>(a.a + a.b)
        })
        .procedure(
            Procedure::new("secret").scope("internal").internal(true),
            |cx, _: Value| async move {
                let who = cx
                    .identity()
                    .and_then(|i| i.authorization.as_ref())
                    .map(|a| a.expose().to_owned());
                Ok::<_, RpcError>(json!({"who": who, "depth": cx.depth(), "transport": format!("{:?}", cx.origin().transport)}))
            },
        )
        .procedure(Procedure::new("public").scope("public"), |cx, _: Value| async move {
            cx.caller()
                .call_typed::<Value>(CallRequest::new("secret", Value::Null).scope("internal"))
                .await
        })
        .build()
        .unwrap()
}

#[test]
fn ok_echoes_the_correlation_id() {
    let r = basic();
    let resp = call(
        &r,
        CallRequest::new("add", json!({"a": 2, "b": 3})).correlation_id(json!("c-1")),
        http(),
    );
    assert_eq!(
        resp,
        CallResponse::ok(json!(5)).with_correlation_id(Some(json!("c-1")))
    );
}

#[test]
fn unknown_scope_procedure_or_version_is_501() {
    let r = basic();
    for req in [
        CallRequest::new("nope", Value::Null),
        CallRequest::new("add", Value::Null).scope("other"),
        CallRequest::new("add", Value::Null).version("2"),
    ] {
        let resp = call(&r, req.correlation_id(json!(9)), http());
        assert_eq!(resp.code, code::NOT_IMPLEMENTED);
        assert!(!resp.success);
        assert_eq!(resp.correlation_id, Some(json!(9)));
    }
}

#[test]
fn internal_only_is_403_from_outside_and_works_nested_with_the_identity() {
    let r = basic();
    for t in [Transport::Http, Transport::WebSocket, Transport::Link] {
        let resp = call(
            &r,
            CallRequest::new("secret", Value::Null).scope("internal"),
            Origin::new(t),
        );
        assert_eq!(resp.code, code::FORBIDDEN, "{t:?}");
    }
    let resp = call(
        &r,
        CallRequest::new("public", Value::Null)
            .scope("public")
            .identity(Identity::with_authorization("jwt-1")),
        http(),
    );
    assert_eq!(resp.code, code::OK, "{resp:?}");
    assert_eq!(
        resp.data,
        Some(json!({"who": "jwt-1", "depth": 1, "transport": "Internal"}))
    );
    // In-process code may call it directly.
    let resp = call(
        &r,
        CallRequest::new("secret", Value::Null).scope("internal"),
        Origin::internal(),
    );
    assert_eq!(resp.code, code::OK);
}

#[test]
fn typed_args_that_do_not_fit_are_422() {
    let r = basic();
    let resp = call(&r, CallRequest::new("add", json!({"a": "x"})), http());
    assert_eq!(resp.code, code::UNPROCESSABLE);
    assert!(resp.message.unwrap().contains("args do not fit"));
}

#[test]
fn schema_failure_is_422_naming_every_path_and_the_handler_is_not_called() {
    let ran = Arc::new(AtomicUsize::new(0));
    let ran2 = ran.clone();
    let r = Registry::builder()
        .raw_procedure(
            Procedure::new("p").schema(json!({
                "type": "object",
                "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                "required": ["a", "b", "c"]
            })),
            move |_cx, _args| {
                ran2.fetch_add(1, Ordering::SeqCst);
                async { CallResponse::ok(Value::Null) }
            },
        )
        .build()
        .unwrap();
    let resp = call(&r, CallRequest::new("p", json!({"a": "1", "b": 2})), http());
    assert_eq!(resp.code, code::UNPROCESSABLE);
    let m = resp.message.unwrap();
    assert!(
        m.contains("at /a:") && m.contains("at /b:") && m.contains("at /:"),
        "{m}"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    // No coercion by default: "1" stays a string and fails.
    let resp = call(
        &r,
        CallRequest::new("p", json!({"a": "1", "b": "x", "c": 0})),
        http(),
    );
    assert_eq!(resp.code, code::UNPROCESSABLE);
    let resp = call(
        &r,
        CallRequest::new("p", json!({"a": 1, "b": "x", "c": 0})),
        http(),
    );
    assert_eq!(resp.code, code::OK);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn coercion_is_opt_in() {
    let r = Registry::builder()
        .procedure(
            Procedure::new("n")
                .schema(json!({"type": "object", "properties": {"n": {"type": "integer"}}}))
                .coerce(true),
            |_cx, v: Value| async move { Ok::<_, RpcError>(v) },
        )
        .build()
        .unwrap();
    let resp = call(&r, CallRequest::new("n", json!({"n": "7"})), http());
    assert_eq!(resp.data, Some(json!({"n": 7})));
}

fn faulty(expose: bool, events: Arc<Mutex<Vec<ErrorEvent>>>) -> Registry {
    Registry::builder()
        .procedure(Procedure::new("fail"), |_cx, _: Value| async {
            Err::<(), _>(RpcError::internal("db password is hunter2"))
        })
        .procedure(Procedure::new("panic"), |_cx, _: Value| async {
            if true {
                panic!("boom at line 7");
            }
            Ok::<(), RpcError>(())
        })
        .procedure(Procedure::new("deny"), |_cx, _: Value| async {
            Err::<(), _>(RpcError::new(401, "unauthorized"))
        })
        .on_error(move |e| events.lock().unwrap().push(e.clone()))
        .limits(Limits {
            expose_internal_errors: expose,
            ..Limits::default()
        })
        .build()
        .unwrap()
}

#[test]
fn handler_errors_and_panics_are_500_without_detail_and_reach_the_hook() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let r = faulty(false, events.clone());
    let id = || Identity::with_authorization("tok-abc");
    let resp = call(
        &r,
        CallRequest::new("fail", Value::Null).identity(id()),
        http(),
    );
    assert_eq!(resp, CallResponse::error(500, "internal error"));
    let resp = call(
        &r,
        CallRequest::new("panic", Value::Null)
            .identity(id())
            .correlation_id(json!(1)),
        http(),
    );
    assert_eq!(
        resp,
        CallResponse::error(500, "internal error").with_correlation_id(Some(json!(1)))
    );
    // A deliberate non-500 answer passes as it is and is not a fault.
    let resp = call(&r, CallRequest::new("deny", Value::Null), http());
    assert_eq!(resp, CallResponse::error(401, "unauthorized"));
    let ev = events.lock().unwrap();
    assert_eq!(ev.len(), 2);
    assert_eq!(
        ev[0].fault,
        HandlerFault::Error("db password is hunter2".into())
    );
    assert!(matches!(&ev[1].fault, HandlerFault::Panic(m) if m.contains("boom at line 7")));
    for e in ev.iter() {
        assert!(e.authorized);
        assert!(e.identity.as_ref().unwrap().authorization.is_none());
        assert!(!format!("{e:?}").contains("tok-abc"));
    }
}

#[test]
fn detail_is_sent_when_configured() {
    let r = faulty(true, Arc::default());
    let resp = call(&r, CallRequest::new("fail", Value::Null), http());
    assert_eq!(resp.message.as_deref(), Some("db password is hunter2"));
    let resp = call(&r, CallRequest::new("panic", Value::Null), http());
    assert!(resp.message.unwrap().contains("boom at line 7"));
}

struct Tag(Arc<Mutex<Vec<String>>>, &'static str);

impl Middleware for Tag {
    fn handle<'a>(&'a self, call: &'a CallInfo<'a>, next: Next<'a>) -> BoxFuture<'a, CallResponse> {
        Box::pin(async move {
            self.0
                .lock()
                .unwrap()
                .push(format!("{}>{}", self.1, call.procedure));
            let resp = next.run(call).await;
            self.0
                .lock()
                .unwrap()
                .push(format!("{}<{}", self.1, resp.code));
            resp
        })
    }
}

#[test]
fn middleware_runs_in_order_around_validation_and_may_refuse() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let r = Registry::builder()
        .procedure(
            Procedure::new("add").schema(json!({"type": "object", "required": ["a", "b"]})),
            |_cx, a: Add| async move { Ok::<_, RpcError>(a.a + a.b) },
        )
        .procedure(
            Procedure::new("x").scope("internal").internal(true),
            |_cx, _: Value| async { Ok::<_, RpcError>(()) },
        )
        .middleware(Tag(log.clone(), "outer"))
        .middleware(Tag(log.clone(), "inner"))
        .middleware_fn(|call, next| {
            let allowed = call
                .identity
                .and_then(|i| i.authorization.as_ref())
                .is_some_and(|a| a.expose() == "good");
            Box::pin(async move {
                if allowed {
                    next.run(call).await
                } else {
                    CallResponse::error(code::FORBIDDEN, "bad token")
                }
            })
        })
        .build()
        .unwrap();
    let good = || Identity::with_authorization("good");
    let resp = call(
        &r,
        CallRequest::new("add", json!({"a": 1, "b": 2})).identity(good()),
        http(),
    );
    assert_eq!(resp.data, Some(json!(3)));
    let resp = call(
        &r,
        CallRequest::new("add", json!({"a": 1})).identity(good()),
        http(),
    );
    assert_eq!(resp.code, 422);
    let resp = call(&r, CallRequest::new("add", json!({"a": 1, "b": 2})), http());
    assert_eq!(resp.code, 403);
    // 501 and the internal 403 come before middleware.
    let resp = call(&r, CallRequest::new("none", Value::Null), http());
    assert_eq!(resp.code, 501);
    let resp = call(
        &r,
        CallRequest::new("x", Value::Null).scope("internal"),
        http(),
    );
    assert_eq!(resp.code, 403);
    assert_eq!(
        *log.lock().unwrap(),
        [
            "outer>add",
            "inner>add",
            "inner<200",
            "outer<200",
            "outer>add",
            "inner>add",
            "inner<422",
            "outer<422",
            "outer>add",
            "inner>add",
            "inner<403",
            "outer<403"
        ]
    );
}

#[test]
fn nested_depth_is_limited() {
    let r = Registry::builder()
        .procedure(Procedure::new("rec"), |cx, n: u32| async move {
            let r = cx.call(CallRequest::new("rec", json!(n + 1))).await;
            if r.success {
                Ok(r.data.unwrap_or_default())
            } else {
                Ok(json!({"stopped_at": n, "code": r.code, "message": r.message}))
            }
        })
        .limits(Limits {
            max_nested_depth: 3,
            ..Limits::default()
        })
        .build()
        .unwrap();
    let resp = call(&r, CallRequest::new("rec", json!(0)), http());
    let d = resp.data.unwrap();
    assert_eq!(d["stopped_at"], json!(3), "{d}");
    assert_eq!(d["code"], json!(500));
    assert!(d["message"].as_str().unwrap().contains("deeper than 3"));
}

#[test]
fn a_passed_deadline_refuses_to_start_and_nested_calls_see_it() {
    let r = Registry::builder()
        .procedure(Procedure::new("left"), |cx, _: Value| async move {
            Ok::<_, RpcError>(cx.remaining().map(|d| d.as_millis() > 0))
        })
        .build()
        .unwrap();
    let past = Instant::now() - Duration::from_millis(1);
    let resp = call(
        &r,
        CallRequest::new("left", Value::Null),
        http().with_deadline(Some(past)),
    );
    assert_eq!(resp, CallResponse::error(500, "deadline exceeded"));
    let soon = Instant::now() + Duration::from_secs(30);
    let resp = call(
        &r,
        CallRequest::new("left", Value::Null),
        http().with_deadline(Some(soon)),
    );
    assert_eq!(resp.data, Some(json!(true)));
}

#[test]
fn duplicates_and_bad_schemas_fail_the_build() {
    let e = Registry::builder()
        .procedure(Procedure::new("a"), |_cx, _: Value| async {
            Ok::<_, RpcError>(())
        })
        .procedure(Procedure::new("a"), |_cx, _: Value| async {
            Ok::<_, RpcError>(())
        })
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("global::a::1"));
    let e = Registry::builder()
        .procedure(
            Procedure::new("a").schema(json!({"type": 5})),
            |_cx, _: Value| async { Ok::<_, RpcError>(()) },
        )
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("schema"));
    // Same name in another version is fine, and listed.
    let r = Registry::builder()
        .procedure(
            Procedure::new("a").description("one"),
            |_cx, _: Value| async { Ok::<_, RpcError>(1) },
        )
        .procedure(Procedure::new("a").version("2"), |_cx, _: Value| async {
            Ok::<_, RpcError>(2)
        })
        .build()
        .unwrap();
    let list = r.procedures();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].description.as_deref(), Some("one"));
    let resp = call(&r, CallRequest::new("a", Value::Null).version("2"), http());
    assert_eq!(resp.data, Some(json!(2)));
}

#[derive(Deserialize, schemars::JsonSchema)]
#[allow(dead_code)]
struct Move {
    x: i32,
    y: i32,
    label: Option<String>,
}

#[test]
fn a_schema_derived_from_the_argument_type_is_enforced() {
    let r = Registry::builder()
        .procedure(
            Procedure::new("move").schema_for::<Move>(),
            |_cx, m: Move| async move { Ok::<_, RpcError>(m.x + m.y) },
        )
        .build()
        .unwrap();
    let ok = call(
        &r,
        CallRequest::new("move", json!({"x": 1, "y": 2})),
        http(),
    );
    assert_eq!(ok.data, Some(json!(3)));
    let bad = call(
        &r,
        CallRequest::new("move", json!({"x": "1", "label": 5})),
        http(),
    );
    assert_eq!(bad.code, code::UNPROCESSABLE);
    let m = bad.message.unwrap();
    for path in ["at /x:", "at /label:", "at /:"] {
        assert!(m.contains(path), "{path} in {m}");
    }
    // The derived schema is listed with the procedure.
    assert!(r.procedures()[0].args.as_ref().unwrap()["properties"]["x"].is_object());
}

#[test]
fn a_panicking_middleware_is_a_500_not_a_panic() {
    let r = Registry::builder()
        .procedure(Procedure::new("p"), |_cx, _: Value| async {
            Ok::<_, RpcError>(1)
        })
        .middleware_fn(|_call, _next| Box::pin(async { panic!("middleware bug") }))
        .build()
        .unwrap();
    let resp = call(
        &r,
        CallRequest::new("p", Value::Null).correlation_id(json!(4)),
        http(),
    );
    assert_eq!(
        resp,
        CallResponse::error(500, "internal error").with_correlation_id(Some(json!(4)))
    );
}

#[test]
fn stream_procedures_in_process_checks_middleware_and_the_unary_path() {
    use futures_lite::StreamExt;
    let opened = Arc::new(Mutex::new(Vec::<String>::new()));
    let opened2 = opened.clone();
    let r = Registry::builder()
        .stream_procedure(
            Procedure::new("evens").schema(json!({
                "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]
            })),
            |cx, a: Value| {
                let who = cx.identity().and_then(|i| i.device_name.clone());
                let n = a["n"].as_u64().unwrap_or(0);
                futures_lite::stream::iter(
                    (0..n).map(move |i| Ok::<_, RpcError>(json!([i * 2, who]))),
                )
            },
        )
        .stream_procedure(Procedure::new("hidden").internal(true), |_cx, _: Value| {
            futures_lite::stream::iter([Ok::<_, RpcError>(1)])
        })
        .procedure(Procedure::new("nested"), |cx, _: Value| async move {
            Ok::<_, RpcError>(
                cx.call(CallRequest::new("evens", json!({"n": 1})))
                    .await
                    .code,
            )
        })
        .middleware_fn(move |call, next| {
            opened2.lock().unwrap().push(call.procedure.to_owned());
            let refuse = call
                .identity
                .is_some_and(|i| i.device_name.as_deref() == Some("banned"));
            Box::pin(async move {
                if refuse {
                    CallResponse::error(401, "banned")
                } else {
                    next.run(call).await
                }
            })
        })
        .build()
        .unwrap();
    let infos = r.procedures();
    assert!(
        infos
            .iter()
            .find(|p| p.procedure == "evens")
            .unwrap()
            .stream
    );
    assert!(
        !infos
            .iter()
            .find(|p| p.procedure == "nested")
            .unwrap()
            .stream
    );
    let device = |d: &str| Identity {
        device_name: Some(d.into()),
        ..Identity::default()
    };
    // Opened: the items, in order, with the caller's identity.
    let s = block_on(r.open_stream(
        CallRequest::new("evens", json!({"n": 3})).identity(device("phone")),
        http(),
    ))
    .unwrap();
    assert_eq!(
        s.context().identity().unwrap().device_name.as_deref(),
        Some("phone")
    );
    let items: Vec<_> = block_on(s.collect::<Vec<_>>());
    assert_eq!(
        items,
        vec![
            Ok(json!([0, "phone"])),
            Ok(json!([2, "phone"])),
            Ok(json!([4, "phone"]))
        ]
    );
    // The middleware saw the opening and may refuse it.
    let refused = block_on(r.open_stream(
        CallRequest::new("evens", json!({"n": 3})).identity(device("banned")),
        http(),
    ))
    .unwrap_err();
    assert_eq!(refused.code, 401);
    assert_eq!(opened.lock().unwrap().as_slice(), ["evens", "evens"]);
    // The schema runs before the handler: 422.
    let bad =
        block_on(r.open_stream(CallRequest::new("evens", json!({"n": "x"})), http())).unwrap_err();
    assert_eq!(bad.code, code::UNPROCESSABLE);
    // 403 and 501 as for calls.
    let e = block_on(r.open_stream(CallRequest::new("hidden", Value::Null), http())).unwrap_err();
    assert_eq!(e.code, code::FORBIDDEN);
    let e = block_on(r.open_stream(CallRequest::new("none", Value::Null), http())).unwrap_err();
    assert_eq!(e.code, code::NOT_IMPLEMENTED);
    // A unary procedure opened as a stream, and a stream called as unary
    // (from a gateway and nested): 400.
    let e = block_on(r.open_stream(CallRequest::new("nested", Value::Null), http())).unwrap_err();
    assert_eq!(e.code, code::BAD_REQUEST);
    assert!(e.message.unwrap().contains("not a stream procedure"));
    let resp = call(
        &r,
        CallRequest::new("evens", json!({"n": 1})).correlation_id(json!(5)),
        http(),
    );
    assert_eq!(resp.code, code::BAD_REQUEST);
    assert_eq!(resp.correlation_id, Some(json!(5)));
    assert_eq!(
        resp.message.as_deref(),
        Some("global::evens::1 is a stream procedure: open it as a stream (rpc.stream)")
    );
    let nested = call(&r, CallRequest::new("nested", Value::Null), http());
    assert_eq!(nested.data, Some(json!(400)));
}
