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

/// Issue 13: a typed way to send `{"op": .., <args>}` from Rust, the same
/// on a link and on a client, for messages and requests.
#[test]
fn send_op_and_call_carry_typed_arguments_to_typed_handlers() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        let (seen_tx, seen_rx) = async_channel::unbounded::<Size>();
        server
            .handlers()
            .handle_request_inline("neg", |_link, v: i64| Ok(-v))
            .handle_request("add", |_link, a: Add| async move { Ok(a.a + a.b) })
            .handle_message("resize", move |_link, r: Size| {
                let seen_tx = seen_tx.clone();
                async move {
                    let _ = seen_tx.send(r).await;
                }
            });
        let client = fx.connected_client(&server).await;
        // A primitive goes in `args`, a struct flat beside `op`.
        let n: i64 = client.call("neg", &5).await.expect("neg answered");
        assert_eq!(n, -5);
        let sum: i64 = client
            .call("add", &Add { a: 2, b: 40 })
            .await
            .expect("add answered");
        assert_eq!(sum, 42);
        let link = client.link().expect("connected");
        let n: i64 = link
            .call_with_timeout("neg", &-7, std::time::Duration::from_secs(5))
            .await
            .expect("neg answered on the link");
        assert_eq!(n, 7);
        client
            .send_op(
                "resize",
                &Size {
                    width: 3,
                    height: 4,
                },
            )
            .await
            .expect("message sent");
        link.send_op(
            "resize",
            &Size {
                width: 5,
                height: 6,
            },
        )
        .await
        .expect("message sent on the link");
        let got = [seen_rx.recv().await.unwrap(), seen_rx.recv().await.unwrap()];
        assert_eq!(
            got,
            [
                Size {
                    width: 3,
                    height: 4
                },
                Size {
                    width: 5,
                    height: 6
                }
            ],
            "the typed message handler got exactly the arguments, in order"
        );
        client.close().await;
        server.shutdown(std::time::Instant::now()).await;
    });
}

#[derive(Debug, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Size {
    width: u32,
    height: u32,
}

/// Issue 13: a handler reaches its server through its link (to broadcast),
/// and the links it holds do not keep the listener alive once the last
/// user handle is dropped.
#[test]
fn handlers_reach_the_server_without_keeping_its_listener_alive() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        let addr = server.local_addr();
        let (held_tx, held_rx) = async_channel::unbounded::<jsonlink_rt::Link>();
        server
            .handlers()
            .handle_request("announce", |link, text: String| async move {
                let server = link.server().expect("a server link reaches its server");
                let sent = server.broadcast(&json!({"op": "notice", "text": text}))?;
                Ok(sent)
            })
            .handle_request("hold", move |link, _: Value| {
                let held_tx = held_tx.clone();
                async move {
                    // The handler keeps its context (the link) after answering.
                    let _ = held_tx.send(link).await;
                    Ok(())
                }
            });
        let (notes_tx, notes_rx) = async_channel::unbounded::<String>();
        let listener_of = |tx: async_channel::Sender<String>| {
            move |_link: jsonlink_rt::Link, n: Value| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(n["text"].as_str().unwrap_or("").to_owned()).await;
                }
            }
        };
        let a = fx.client(addr).connect().await.expect("client a");
        a.handlers()
            .handle_message("notice", listener_of(notes_tx.clone()));
        let b = fx.client(addr).connect().await.expect("client b");
        b.handlers().handle_message("notice", listener_of(notes_tx));
        authenticated(&server).await;
        authenticated(&server).await;
        let sent: usize = a.call("announce", "maintenance").await.expect("announced");
        assert_eq!(sent, 2, "broadcast reached both links");
        assert_eq!(notes_rx.recv().await.unwrap(), "maintenance");
        assert_eq!(notes_rx.recv().await.unwrap(), "maintenance");
        // A client's link has no server.
        assert!(a.link().expect("connected").server().is_none());

        let () = a.call("hold", &()).await.expect("held");
        let held = held_rx.recv().await.expect("the handler's link");
        drop(server);
        let closed = jsonlink_tests::waits::eventually(std::time::Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_err()
        })
        .await;
        assert!(
            closed,
            "the listener closed after the last Server handle dropped, while a handler held its link"
        );
        assert!(
            held.server().is_none(),
            "the held link no longer reaches a server"
        );
        a.close().await;
        b.close().await;
    });
}

/// An answer nested deeper than the depth limit (which the core refuses
/// to write: the requester could not parse it) is answered `internal` at
/// once, not left to the requester's timeout.
#[test]
fn an_answer_nested_too_deep_is_answered_internal_at_once() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        server
            .handlers()
            .on_request("deep", |req: jsonlink_rt::Request| async move {
                let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
                let raw = serde_json::value::RawValue::from_string(deep).expect("valid JSON");
                let _ = req.responder.respond_raw(jsonlink_rt::RawJson::new(raw));
            });
        let client = fx
            .client(server.local_addr())
            .request_timeout(std::time::Duration::from_secs(60))
            .connect()
            .await
            .expect("connected");
        let started = std::time::Instant::now();
        let err = client
            .request::<Value, _>(&json!({"op": "deep"}))
            .await
            .expect_err("a too-deep answer is not delivered");
        let r = err.remote().expect("an error answer");
        assert_eq!(r.code, RemoteError::INTERNAL, "{err:?}");
        assert!(r.message.contains("depth limit"), "{r:?}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "answered at once, not at the 60 s timeout"
        );
        client.close().await;
        server.shutdown(std::time::Instant::now()).await;
    });
}

/// A message the core would refuse (nested deeper than `max_depth`, or a
/// body with `op` twice) is refused by `send` at once, where the caller
/// sees it, instead of being queued and dropped; the link stays up.
#[test]
fn a_message_the_core_would_refuse_fails_send_at_once() {
    on_tokio(Gauges::Shared, |rt| async move {
        let fx = Fixture::new(rt);
        let server = bind(fx.server()).await;
        server
            .handlers()
            .handle_request_inline("neg", |_link, v: i64| Ok(-v));
        let client = fx.connected_client(&server).await;
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let deep = serde_json::value::RawValue::from_string(deep).expect("valid JSON");
        let err = client
            .send_raw(Arc::from(deep))
            .await
            .expect_err("too deep");
        assert!(
            matches!(
                err,
                Error::Send(jsonlink_rt::SendError::TooDeep {
                    depth: 200,
                    limit: 127
                })
            ),
            "{err:?}"
        );
        let twice = serde_json::value::RawValue::from_string(r#"{"op":"a","op":"b"}"#.into())
            .expect("valid JSON");
        let err = client
            .send_raw(Arc::from(twice))
            .await
            .expect_err("op twice");
        assert!(
            matches!(err, Error::Send(jsonlink_rt::SendError::DuplicateOp)),
            "{err:?}"
        );
        let n: i64 = client.call("neg", &1).await.expect("the link is still up");
        assert_eq!(n, -1);
        client.close().await;
        server.shutdown(std::time::Instant::now()).await;
    });
}
