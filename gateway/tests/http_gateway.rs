//! The HTTP gateway over real sockets on 127.0.0.1: the codes table case
//! by case, `/health`, any path and method, the body limit, CORS, the
//! trusted-proxy rule, the rate limit and the call deadline.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use serde_json::json;

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

#[tokio::test]
async fn x_real_ip_is_believed_only_from_a_trusted_proxy() {
    // The rate limit is per IP: with a burst of 1, a second call from the
    // same client IP is refused, one from another IP is not.
    let rate = Some(jsonlink_gateway::RateLimit {
        per_second: 1.try_into().unwrap(),
        burst: 1.try_into().unwrap(),
    });
    let mut trusting = config();
    trusting.limits.rate_limit = rate;
    trusting.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    let gw = http_gateway(trusting).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let body = br#"{"procedure":"echo"}"#;
    let mut codes = Vec::new();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.1"] {
        codes.push(code_of(
            &c.request("POST", "/", &[("x-real-ip", ip)], body)
                .await
                .json(),
        ));
    }
    assert_eq!(
        codes,
        [200, 200, 429],
        "behind a trusted proxy each X-Real-IP has its own limit"
    );
    gw.shutdown().await;

    let mut untrusting = config();
    untrusting.limits.rate_limit = rate;
    let gw = http_gateway(untrusting).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let mut codes = Vec::new();
    for ip in ["10.0.0.1", "10.0.0.2"] {
        codes.push(code_of(
            &c.request("POST", "/", &[("x-real-ip", ip)], body)
                .await
                .json(),
        ));
    }
    assert_eq!(
        codes,
        [200, 429],
        "from an untrusted peer the header is ignored"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn cors_is_off_by_default_and_answers_configured_origins() {
    let gw = http_gateway(config()).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let r = c
        .request(
            "POST",
            "/",
            &[("origin", "https://app.example")],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    gw.shutdown().await;

    let mut cfg = config();
    cfg.cors = Some(jsonlink_gateway::Cors::Origins(vec![
        "https://app.example".into(),
    ]));
    let gw = http_gateway(cfg).await;
    let mut c = Http1::connect(gw.local_addr()).await;
    let r = c
        .request(
            "OPTIONS",
            "/",
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            b"",
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = c
        .request(
            "POST",
            "/",
            &[("origin", "https://app.example")],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(code_of(&r.json()), 200);
    let r = c
        .request(
            "POST",
            "/",
            &[("origin", "https://evil.example")],
            br#"{"procedure":"echo"}"#,
        )
        .await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    gw.shutdown().await;
}
