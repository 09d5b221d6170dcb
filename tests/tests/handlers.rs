//! Request handlers over real TLS on 127.0.0.1: typed handlers get
//! exactly their arguments (PROTOCOL.md §11.5) — a primitive, a strict
//! struct, a flat zetta-style body —, `?` on any error answers `internal`
//! without sending its text (unless the table is told to expose it), and
//! inline handlers answer from the link's own task.

use std::sync::Arc;

use jsonlink_rt::{Error, HandlerError, RemoteError, Runtime};
use jsonlink_tests::fixtures::{Add, Fixture, bind};
use jsonlink_tests::runtimes::{Gauges, on_tokio};
use jsonlink_tests::tests_on_tokio_and_smol;
use jsonlink_tests::waits::authenticated;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    width: u32,
    height: u32,
}

#[test]
fn typed_handlers_get_exactly_their_arguments() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        server
            .handlers()
            .handle_request_inline("neg", |_link, v: i64| Ok(-v))
            .handle_request("area", |_link, r: Resize| async move {
                Ok(u64::from(r.width) * u64::from(r.height))
            })
            .handle_request(
                "names",
                |_link, v: Vec<String>| async move { Ok(v.join(",")) },
            )
            .handle_request("echo", |_link, v: Value| async move { Ok(v) });
        let client = fx.connected_client(&server).await;
        authenticated(&server).await;

        // A primitive travels in `args`.
        let n: i64 = client
            .request(&json!({"op": "neg", "args": 5}))
            .await
            .expect("neg is answered");
        assert_eq!(n, -5, "a primitive in `args`");
        // A strict struct from a flat (zetta / iris) body: `op` is not an
        // unknown field.
        let a: u64 = client
            .request(&json!({"op": "area", "width": 3, "height": 4}))
            .await
            .expect("area, flat is answered");
        assert_eq!(a, 12, "a strict struct from a flat body");
        // The same struct in `args`.
        let a: u64 = client
            .request(&json!({"op": "area", "args": {"width": 5, "height": 6}}))
            .await
            .expect("area in args is answered");
        assert_eq!(a, 30, "a strict struct in `args`");
        // An unknown field is still refused, as bad_request.
        let err = client
            .request::<u64, _>(&json!({"op": "area", "width": 3, "height": 4, "depth": 5}))
            .await
            .expect_err("the handler fails");
        assert!(
            matches!(&err, Error::Remote(r) if r.code == RemoteError::BAD_REQUEST && r.message.contains("depth")),
            "{err:?}"
        );
        let s: String = client
            .request(&json!({"op": "names", "args": ["a", "b"]}))
            .await
            .expect("names is answered");
        assert_eq!(s, "a,b", "a list in `args`");
        // A flat body's arguments are the body without `op`.
        let v: Value = client
            .request(&json!({"op": "echo", "job": 7, "tags": ["x"]}))
            .await
            .expect("echo is answered");
        assert_eq!(
            v,
            json!({"job": 7, "tags": ["x"]}),
            "a flat body's arguments are the body without `op`"
        );
        client.close().await;
        server.shutdown(std::time::Instant::now()).await;
    });
}

/// The error `client`'s request of `body` fails with.
async fn failure_of(client: &jsonlink_rt::Client, body: Value) -> Error {
    client
        .request::<Value, _>(&body)
        .await
        .expect_err("the handler fails")
}

/// The code and message of a remote error.
fn code_and_message(err: &Error) -> (String, String) {
    let r = err.remote().expect("a remote error");
    (r.code.to_string(), r.message.to_string())
}

/// A handler body that fails with an `io::Error` through `?`.
fn read_job(id: u64) -> Result<String, HandlerError> {
    if id == 0 {
        return Err(HandlerError::not_found("no job 0"));
    }
    let text = std::fs::read_to_string(format!("/nonexistent/jsonlink/secret-path/job-{id}"))?;
    Ok(text)
}

#[test]
fn question_mark_answers_internal_without_leaking_the_error_text() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        server
            .handlers()
            .handle_request("job", |_link, id: u64| async move { read_job(id) })
            .handle_request_inline("job_inline", |_link, id: u64| read_job(id))
            .handle_request("quota", |_link, _: Value| async move {
                Err::<(), _>(RemoteError::new("quota", "over quota"))?;
                Ok(())
            });
        let client = fx.connected_client(&server).await;
        authenticated(&server).await;

        for op in ["job", "job_inline"] {
            let err = failure_of(&client, json!({"op": op, "args": 7})).await;
            assert_eq!(
                code_and_message(&err),
                ("internal".into(), "internal error".into()),
                "{op}: an io::Error through `?` answers internal"
            );
            assert!(
                !format!("{err:?}").contains("secret-path"),
                "{op}: the error's text is not sent: {err:?}"
            );
            assert_eq!(
                code_and_message(&failure_of(&client, json!({"op": op, "args": 0})).await),
                ("not_found".into(), "no job 0".into()),
                "{op}: a constructor's answer is sent as it is"
            );
        }
        // A RemoteError through `?` keeps its code and message.
        let err = client
            .request::<(), _>(&json!({"op": "quota"}))
            .await
            .expect_err("the handler fails");
        assert_eq!(
            err.remote(),
            Some(&RemoteError::new("quota", "over quota")),
            "a RemoteError through `?` keeps its code and message"
        );

        // Exposed on request: the text is the io::Error's.
        server.handlers().expose_internal_errors(true);
        let err = client
            .request::<String, _>(&json!({"op": "job", "args": 7}))
            .await
            .expect_err("the handler fails");
        let r = err.remote().expect("a remote error");
        assert_eq!(
            r.code, "internal",
            "an exposed error keeps the internal code"
        );
        assert_ne!(r.message, "internal error", "{r:?}");
        client.close().await;
        server.shutdown(std::time::Instant::now()).await;
    });
}

/// Inline handlers answer from the link's own task: typed and raw, a bad
/// argument is `bad_request`, a panic is `internal` and the link carries on,
/// and `on_request` for the same op replaces the inline handler.
async fn inline_handlers_answer_in_the_links_task(rt: Arc<dyn Runtime>) {
    let fx = Fixture::new(rt);
    let server = bind(fx.server()).await;
    server
        .handlers()
        .handle_request_inline("add", |_link, args: Add| Ok(args.a + args.b))
        .on_request_inline("echo", |link, body| {
            assert!(link.peer().is_some(), "the link is authenticated");
            Ok(body)
        })
        .handle_request_inline("boom", |_link, _: Value| -> Result<Value, HandlerError> {
            panic!("handler bug")
        });
    let client = fx.connected_client(&server).await;
    let remote_code = |r: Result<Value, Error>| match r {
        Err(Error::Remote(e)) => e.code,
        other => panic!("expected a remote error, got {other:?}"),
    };

    let sum: i64 = client
        .request(&json!({"op": "add", "a": 2, "b": 40}))
        .await
        .expect("inline add");
    assert_eq!(sum, 42, "a typed inline handler answers");
    let body = json!({"op": "echo", "data": [1, "two", null]});
    let back: Value = client.request(&body).await.expect("raw inline echo");
    assert_eq!(back, body, "a raw inline handler gets the whole body");
    assert_eq!(
        remote_code(client.request(&json!({"op": "add", "a": "x"})).await),
        RemoteError::BAD_REQUEST,
        "a bad argument"
    );
    assert_eq!(
        remote_code(client.request(&json!({"op": "boom"})).await),
        RemoteError::INTERNAL,
        "a panicking handler"
    );
    // The link survived the panic, and many answers in a row arrive whole.
    for i in 0..200i64 {
        let v: i64 = client
            .request(&json!({"op": "add", "a": i, "b": 1}))
            .await
            .expect("add after a panic");
        assert_eq!(v, i + 1, "answer {i} arrives whole");
    }
    // A task handler for the same op replaces the inline one.
    server
        .handlers()
        .handle_request("add", |_l, v: Add| async move { Ok(v.a * v.b) });
    let product: i64 = client
        .request(&json!({"op": "add", "a": 6, "b": 7}))
        .await
        .expect("the replacing handler");
    assert_eq!(product, 42, "the task handler replaced the inline one");
    assert!(
        server.handlers().remove_request("echo"),
        "echo was registered"
    );
    assert!(
        matches!(
            client.request::<Value, _>(&json!({"op": "echo"})).await,
            Err(Error::NoHandler(_))
        ),
        "a removed handler answers no_handler"
    );
    assert_eq!(server.stats().requests_in, 206, "every request was counted");
}

tests_on_tokio_and_smol!(inline_handlers_answer_in_the_links_task =>
    inline_handlers_answer_in_the_links_task_on_tokio,
    inline_handlers_answer_in_the_links_task_on_smol);
