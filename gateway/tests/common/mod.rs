//! What the gateway tests share: the procedures they call, gateways on
//! 127.0.0.1, a raw HTTP client and a WebSocket client.
#![allow(dead_code, unreachable_pub)]

/// The fault table's recorder (`tests/faults/expected.md`), the
/// workspace harness's.
pub mod record {
    #[allow(unused_imports)]
    pub use jsonlink_tests::faults::record;
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use jsonlink_gateway::{GatewayConfig, HttpGateway, WsGateway, WsHooks};
use jsonlink_rpc::{CallRequest, CallResponse, Procedure, Registry, RpcError, code};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// Counts how often the schema-validated handler ran (it must not run for
/// a 422).
pub static TYPED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Notified by the `sleep-started` procedure as it starts.
pub static STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The procedures the tests (and the Node.js peer) call.
pub fn registry() -> Registry {
    Registry::builder()
        .raw_procedure(Procedure::new("echo"), |_ctx, args| async move {
            CallResponse::ok(args)
        })
        .raw_procedure(Procedure::new("whoami"), |ctx, _args| async move {
            let id = ctx.identity();
            CallResponse::ok(json!({
                "deviceName": id.and_then(|i| i.device_name.clone()),
                "hasAuthorization": id.is_some_and(|i| i.authorization.is_some()),
            }))
        })
        .procedure(Procedure::new("sleep"), |_ctx, args: Value| async move {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, RpcError>(ms)
        })
        .procedure(
            Procedure::new("sleep-started"),
            |_ctx, args: Value| async move {
                STARTED.notify_one();
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, RpcError>(ms)
            },
        )
        .procedure(
            Procedure::new("typed").schema(json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "age": {"type": "integer", "minimum": 0}
                },
                "required": ["name"],
                "additionalProperties": false
            })),
            |_ctx, args: Value| async move {
                TYPED_RUNS.fetch_add(1, Ordering::SeqCst);
                Ok::<_, RpcError>(args)
            },
        )
        .raw_procedure(
            Procedure::new("secret-data")
                .scope("internal")
                .internal(true),
            |ctx, _args| async move {
                CallResponse::ok(json!({
                    "secret": 42,
                    "hasAuthorization": ctx.identity().is_some_and(|i| i.authorization.is_some()),
                }))
            },
        )
        .raw_procedure(Procedure::new("public-data"), |ctx, _args| async move {
            let mut r = ctx
                .call(CallRequest::new("secret-data", Value::Null).scope("internal"))
                .await;
            r.correlation_id = None;
            r
        })
        .raw_procedure(Procedure::new("fail"), |_ctx, _args| async move {
            CallResponse::from(RpcError::internal("db password is hunter2"))
        })
        .raw_procedure(Procedure::new("panic"), |_ctx, _args| async move {
            panic!("the handler's secret detail")
        })
        .raw_procedure(Procedure::new("never"), |_ctx, _args| {
            std::future::pending::<CallResponse>()
        })
        .raw_procedure(Procedure::new("big"), |_ctx, args| async move {
            let n = args.as_u64().unwrap_or(0) as usize;
            CallResponse::ok(Value::String("x".repeat(n)))
        })
        .build()
        .expect("the test registry builds")
}

/// A config for tests: the defaults with no rate limit, and a short
/// close linger (tests that leave a client unread at shutdown wait it out).
pub fn config() -> GatewayConfig {
    let mut c = GatewayConfig::default();
    c.limits.rate_limit = None;
    c.limits.close_linger = Duration::from_millis(300);
    c
}

pub async fn http_gateway(config: GatewayConfig) -> HttpGateway {
    HttpGateway::bind("127.0.0.1:0", registry(), config)
        .await
        .expect("HTTP gateway binds")
}

pub async fn ws_gateway(config: GatewayConfig, hooks: WsHooks) -> WsGateway {
    WsGateway::bind("127.0.0.1:0", registry(), config, hooks)
        .await
        .expect("WebSocket gateway binds")
}

/// An HTTP/1.1 response as read off the socket.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection written by hand, so the tests see the
/// exact bytes the gateway sends.
pub struct Http1 {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Http1 {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        extra: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.write_all(&bytes).await.expect("write request");
        self.read_response().await.expect("a response")
    }

    pub async fn post(&mut self, body: &str) -> Value {
        let r = self
            .request(
                "POST",
                "/",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        assert_eq!(r.status, 200, "HTTP status for {body}");
        r.json()
    }

    /// Reads one response (Content-Length framed); `None` on EOF.
    pub async fn read_response(&mut self) -> Option<HttpResponse> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let mut lines = head.split("\r\n");
                let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    if !self.fill().await {
                        return None;
                    }
                }
                let body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return Some(HttpResponse {
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within `d`.
    pub async fn closed_within(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, async {
            loop {
                if !self.fill().await {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One HTTP call on a fresh connection.
pub async fn post(addr: SocketAddr, body: &str) -> Value {
    Http1::connect(addr).await.post(body).await
}

pub type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

pub async fn ws_connect(addr: SocketAddr) -> Ws {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
        .await
        .expect("WebSocket handshake");
    ws
}

pub async fn ws_send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// The next text frame as JSON, within 20 s; `None` when the connection
/// ended (close frame, EOF, reset).
pub async fn ws_next(ws: &mut Ws) -> Option<Value> {
    let next = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("JSON frame"));
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await;
    next.expect("a frame or the end within 20 s")
}

/// The close code the server sent, reading past any frames; `None` if the
/// connection ended without a close frame.
pub async fn ws_close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => {
                    // Read on so the client's close reply is sent.
                    while let Some(Ok(_)) = ws.next().await {}
                    return f.map(|f| u16::from(f.code));
                }
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    })
    .await
    .expect("closed within 20 s")
}

/// A call frame.
pub fn call(procedure: &str, args: Value, cid: Value) -> Value {
    json!({"procedure": procedure, "args": args, "correlationId": cid})
}

/// The code of a response.
pub fn code_of(v: &Value) -> u64 {
    v["code"]
        .as_u64()
        .unwrap_or_else(|| panic!("a code in {v}"))
}

pub const OK: u64 = code::OK as u64;

/// The events the recording hooks saw, in order.
pub type HookLog = tokio::sync::watch::Receiver<Vec<String>>;

/// Hooks that record every event (with the identity's `Debug`) into a log
/// the test can wait on.
pub fn recording_hooks() -> (WsHooks, HookLog) {
    let (tx, rx) = tokio::sync::watch::channel(Vec::new());
    let tx = Arc::new(tx);
    let push = move |line: String| tx.send_modify(|v| v.push(line));
    let (a, b, c, d) = (push.clone(), push.clone(), push.clone(), push);
    let hooks = WsHooks::new()
        .on_client_connect(move |i| a(format!("connect {} {:?}", i.connection_id, i.identity)))
        .on_client_disconnect(move |i| {
            b(format!("disconnect {} {:?}", i.connection_id, i.identity))
        })
        .on_identity_changed(move |i| c(format!("identity {} {:?}", i.connection_id, i.identity)))
        .on_client_message(move |i, m| d(format!("message {} {m}", i.connection_id)));
    (hooks, rx)
}

/// Waits (at most 5 s) until the log has a line starting with `prefix`.
pub async fn wait_for_hook(log: &mut HookLog, prefix: &str) -> Vec<String> {
    let seen = tokio::time::timeout(
        Duration::from_secs(20),
        log.wait_for(|v| v.iter().any(|l| l.starts_with(prefix))),
    )
    .await
    .map(|r| r.expect("hooks alive").clone());
    match seen {
        Ok(v) => v,
        Err(_) => panic!("a {prefix:?} hook within 20 s: {:?}", *log.borrow()),
    }
}
