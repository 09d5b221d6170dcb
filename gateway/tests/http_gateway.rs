//! The HTTP gateway over real sockets on 127.0.0.1: the codes table case
//! by case, `/health`, any path and method, the body limit, CORS, the
//! trusted-proxy rule, the rate limit and the call deadline.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn health_answers_ok_on_any_method() {
    let gw = http_gateway(config()).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    for method in ["GET", "POST", "PUT"] {
        let r = c.request(method, "/health", &[], b"").await;
        assert_eq!(r.status, 200, "{method}");
        assert_eq!(r.body, b"ok", "{method}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn code_200_any_path_and_method_with_the_correlation_id_echoed() {
    let gw = http_gateway(config()).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    for (method, path) in [
        ("POST", "/"),
        ("PUT", "/x/y"),
        ("GET", "/rpc?z=1"),
        ("PATCH", "/"),
    ] {
        let body =
            json!({"procedure": "echo", "args": {"a": [1, 2]}, "correlationId": {"k": path}})
                .to_string();
        let r = c
            .request(
                method,
                path,
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            r.json(),
            json!({"code": 200, "success": true, "data": {"a": [1, 2]}, "correlationId": {"k": path}}),
            "{method} {path}"
        );
    }
    // Defaults spelled out address the same handler.
    let v = c
        .post(r#"{"procedure":"echo","scope":"global","version":"1","args":3}"#)
        .await;
    assert_eq!(v, json!({"code": 200, "success": true, "data": 3}));
    gw.shutdown().await;
}

#[tokio::test]
async fn code_400_for_each_malformed_form() {
    let gw = http_gateway(config()).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let deep = format!(
        "{{\"procedure\":\"echo\",\"args\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for body in [
        "",
        "not json",
        "[1,2,3]",
        "\"procedure\"",
        r#"{"args":{}}"#,
        r#"{"procedure":5}"#,
        r#"{"procedure":"echo","scope":7}"#,
        r#"{"procedure":"echo","identity":"tok"}"#,
        r#"{"procedure":"echo","identity":{"authorization":5}}"#,
        deep.as_str(),
    ] {
        let v = c.post(body).await;
        assert_eq!(code_of(&v), 400, "{}: {v}", &body[..body.len().min(40)]);
        assert_eq!(v["success"], false);
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // The connection and the gateway are still up.
    assert_eq!(code_of(&c.post(r#"{"procedure":"echo"}"#).await), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn code_403_for_an_internal_procedure_and_the_nested_call_works() {
    let gw = http_gateway(config()).await;
    let addr = gw.local_addr();
    let v = post(
        addr,
        r#"{"procedure":"secret-data","scope":"internal","correlationId":1}"#,
    )
    .await;
    assert_eq!(code_of(&v), 403, "{v}");
    assert_eq!(v["correlationId"], 1);
    let v = post(
        addr,
        r#"{"procedure":"public-data","identity":{"authorization":"t"}}"#,
    )
    .await;
    assert_eq!(
        v,
        json!({"code": 200, "success": true, "data": {"secret": 42, "hasAuthorization": true}})
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn code_422_names_every_failing_instance_path_and_the_handler_does_not_run() {
    let gw = http_gateway(config()).await;
    let before = TYPED_RUNS.load(Ordering::SeqCst);
    let v = post(
        gw.local_addr(),
        r#"{"procedure":"typed","args":{"name":5,"age":-1,"extra":true}}"#,
    )
    .await;
    assert_eq!(code_of(&v), 422, "{v}");
    let m = v["message"].as_str().expect("a message");
    for path in ["/name", "/age"] {
        assert!(m.contains(path), "{path} in {m}");
    }
    assert!(m.contains("extra"), "the additional property in {m}");
    assert_eq!(
        TYPED_RUNS.load(Ordering::SeqCst),
        before,
        "the handler did not run"
    );
    let v = post(
        gw.local_addr(),
        r#"{"procedure":"typed","args":{"name":"ok","age":3}}"#,
    )
    .await;
    assert_eq!(code_of(&v), 200, "{v}");
    gw.shutdown().await;
}

#[tokio::test]
async fn code_500_hides_the_detail_of_errors_panics_and_the_deadline() {
    let mut cfg = config();
    cfg.limits.call_deadline = Duration::from_millis(300);
    let gw = http_gateway(cfg).await;
    let addr = gw.local_addr();
    for (procedure, hidden) in [("fail", "hunter2"), ("panic", "secret detail")] {
        let v = post(
            addr,
            &json!({"procedure": procedure, "correlationId": procedure}).to_string(),
        )
        .await;
        assert_eq!(code_of(&v), 500, "{v}");
        assert_eq!(v["correlationId"], procedure);
        assert!(!v.to_string().contains(hidden), "{v}");
    }
    let started = std::time::Instant::now();
    let v = post(addr, r#"{"procedure":"never","correlationId":"n"}"#).await;
    assert_eq!(
        v,
        json!({"code": 500, "success": false, "message": "deadline exceeded", "correlationId": "n"})
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered at the deadline"
    );
    // The gateway still answers.
    assert_eq!(code_of(&post(addr, r#"{"procedure":"echo"}"#).await), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn code_501_for_an_unknown_procedure_scope_or_version() {
    let gw = http_gateway(config()).await;
    for body in [
        r#"{"procedure":"nope"}"#,
        r#"{"procedure":"echo","scope":"other"}"#,
        r#"{"procedure":"echo","version":"2"}"#,
    ] {
        let v = post(gw.local_addr(), body).await;
        assert_eq!(code_of(&v), 501, "{body}: {v}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn code_429_past_the_per_ip_rate_limit() {
    let mut cfg = config();
    cfg.limits.rate_limit = Some(jsonlink_gateway::RateLimit {
        per_second: 1.try_into().unwrap(),
        burst: 5.try_into().unwrap(),
    });
    let gw = http_gateway(cfg).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let mut codes = Vec::new();
    for i in 0..8 {
        codes.push(code_of(
            &c.post(&json!({"procedure": "echo", "correlationId": i}).to_string())
                .await,
        ));
    }
    assert_eq!(codes, [200, 200, 200, 200, 200, 429, 429, 429]);
    gw.shutdown().await;
}

/// The codes of calls claiming each of `ips` in `X-Real-IP`, with a rate
/// limit of one call per IP, through a gateway trusting `proxies`.
async fn codes_claiming(proxies: Vec<std::net::IpAddr>, ips: &[&str]) -> Vec<u64> {
    let mut cfg = config();
    cfg.limits.rate_limit = Some(jsonlink_gateway::RateLimit {
        per_second: 1.try_into().unwrap(),
        burst: 1.try_into().unwrap(),
    });
    cfg.trusted_proxies = proxies;
    let gw = http_gateway(cfg).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let mut codes = Vec::new();
    for ip in ips {
        let r = c
            .request(
                "POST",
                "/",
                &[("x-real-ip", ip)],
                br#"{"procedure":"echo"}"#,
            )
            .await;
        codes.push(code_of(&r.json()));
    }
    gw.shutdown().await;
    codes
}

#[tokio::test]
async fn x_real_ip_is_believed_only_from_a_trusted_proxy() {
    // The rate limit is per IP: with a burst of 1, a second call from the
    // same client IP is refused, one from another IP is not.
    let ips = ["10.0.0.1", "10.0.0.2", "10.0.0.1"];
    assert_eq!(
        codes_claiming(vec!["127.0.0.1".parse().unwrap()], &ips).await,
        [200, 200, 429],
        "behind a trusted proxy each X-Real-IP has its own limit"
    );
    assert_eq!(
        codes_claiming(Vec::new(), &ips).await,
        [200, 429, 429],
        "from an untrusted peer the header is ignored"
    );
}

/// The `Access-Control-Allow-Origin` of a call from `origin`.
async fn allowed_origin(c: &mut Http1, origin: &str) -> Option<String> {
    let r = c
        .request(
            "POST",
            "/",
            &[("origin", origin)],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(code_of(&r.json()), 200);
    r.header("access-control-allow-origin").map(str::to_owned)
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_configured_origins() {
    let gw = http_gateway(config()).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    assert_eq!(allowed_origin(&mut c, "https://app.example").await, None);
    gw.shutdown().await;

    let mut cfg = config();
    cfg.cors = Some(jsonlink_gateway::Cors::Origins(vec![
        "https://app.example".into(),
    ]));
    let gw = http_gateway(cfg).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let preflight = [
        ("origin", "https://app.example"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let r = c.request("OPTIONS", "/", &preflight, b"").await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        allowed_origin(&mut c, "https://app.example")
            .await
            .as_deref(),
        Some("https://app.example")
    );
    assert_eq!(allowed_origin(&mut c, "https://evil.example").await, None);
    gw.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_answers_the_call_in_flight_then_stops_listening() {
    let gw = http_gateway(config()).await;
    let addr = gw.local_addr();
    let mut c = Http1::connect(addr).await;
    let mut idle = Http1::connect(addr).await;
    assert_eq!(code_of(&idle.post(r#"{"procedure":"echo"}"#).await), 200);
    let body = br#"{"procedure":"sleep-started","args":{"ms":300},"correlationId":"late"}"#;
    let head = format!(
        "POST / HTTP/1.1\r\nhost: t\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    c.stream
        .write_all(&[head.as_bytes(), body].concat())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), STARTED.notified())
        .await
        .expect("the call started");
    let shutdown = tokio::spawn(gw.shutdown());
    let r = c
        .read_response()
        .await
        .expect("the call in flight is answered");
    assert_eq!(r.json()["correlationId"], "late");
    assert!(
        idle.closed_within(Duration::from_secs(20)).await,
        "the idle keep-alive connection is closed"
    );
    tokio::time::timeout(Duration::from_secs(20), shutdown)
        .await
        .expect("shutdown returns")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_header_timeout() {
    let mut cfg = config();
    cfg.limits.header_timeout = Duration::from_millis(300);
    let gw = http_gateway(cfg).await;
    let mut silent = Http1::connect(gw.local_addr()).await;
    let started = std::time::Instant::now();
    assert!(silent.closed_within(Duration::from_secs(20)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_max_header_bytes_gets_431() {
    let mut cfg = config();
    cfg.limits.max_header_bytes = 16 << 10;
    let gw = http_gateway(cfg).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let big = "a".repeat(20 << 10);
    let r = c
        .request(
            "POST",
            "/",
            &[("x-big", big.as_str())],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(r.status, 431);
    assert!(c.closed_within(Duration::from_secs(20)).await);
    // Below it: served.
    let ok = "a".repeat(8 << 10);
    let mut c = Http1::connect(gw.local_addr()).await;
    let r = c
        .request(
            "POST",
            "/",
            &[("x-big", ok.as_str())],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(code_of(&r.json()), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_tls_handshake_not_started_is_closed_at_tls_handshake_timeout() {
    let pki = jsonlink_rt::DevPki::generate().expect("dev certs");
    let mut cfg = config();
    cfg.tls = Some(std::sync::Arc::new(
        pki.server_config().expect("server config"),
    ));
    cfg.limits.tls_handshake_timeout = Duration::from_millis(300);
    let gw = http_gateway(cfg).await;
    let mut silent = Http1::connect(gw.local_addr()).await;
    let started = std::time::Instant::now();
    assert!(silent.closed_within(Duration::from_secs(20)).await);
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Plain HTTP to the TLS port: no answer but a close.
    let mut plain = Http1::connect(gw.local_addr()).await;
    plain
        .stream
        .write_all(b"POST / HTTP/1.1\r\nhost: t\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    assert!(plain.read_response().await.is_none());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_at_header_timeout() {
    use http_body_util::{BodyExt, Full};
    let mut cfg = config();
    cfg.limits.header_timeout = Duration::from_millis(400);
    let gw = http_gateway(cfg).await;
    let tcp = TcpStream::connect(gw.local_addr()).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .expect("h2 handshake (prior knowledge)");
    let conn = tokio::spawn(conn);
    let req = http::Request::post(format!("http://{}/", gw.local_addr()))
        .body(Full::new(bytes::Bytes::from_static(
            br#"{"procedure":"sleep","args":{"ms":600}}"#,
        )))
        .unwrap();
    let started = std::time::Instant::now();
    let resp = send.send_request(req).await.expect("answered over HTTP/2");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["data"],
        600
    );
    // A call longer than the idle timeout was not cut; once idle, the
    // server ends the connection (GOAWAY) by itself.
    assert!(started.elapsed() >= Duration::from_millis(600));
    tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the idle HTTP/2 connection is closed by the server")
        .unwrap()
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "not before it was idle"
    );
    gw.shutdown().await;
}
