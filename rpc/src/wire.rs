//! The wire types of @therms/rpc-server 2.19: [`CallRequest`],
//! [`CallResponse`], [`Identity`] and the [`code`]s.
//!
//! A CallRequest is
//! `{"procedure": string, "scope"?: string = "global", "version"?: string = "1",
//! "args"?: any, "correlationId"?: any, "identity"?: {"authorization"?: string,
//! "deviceName"?: string, "metadata"?: object}}`; a CallResponse is
//! `{"code": number, "success": bool, "data"?: any, "message"?: string,
//! "correlationId"?: any}`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::fmt;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The codes a [`CallResponse`] carries (the therms set plus 429).
pub mod code {
    /// The call ran and succeeded.
    pub const OK: u16 = 200;
    /// The body or frame is not a valid CallRequest (empty, not an object,
    /// no `procedure`, a field of the wrong type, nested too deep).
    pub const BAD_REQUEST: u16 = 400;
    /// An internal-only procedure was called from outside (a gateway or a
    /// link), or a middleware refused the caller.
    pub const FORBIDDEN: u16 = 403;
    /// The arguments failed the procedure's schema; the message names every
    /// failing instance path.
    pub const UNPROCESSABLE: u16 = 422;
    /// A limit refused the call (rate, calls in flight). An extension to the
    /// therms codes.
    pub const TOO_MANY_REQUESTS: u16 = 429;
    /// The caller cancelled the stream (the end of a cancelled
    /// `rpc.stream`, which the caller no longer waits for). An extension
    /// to the therms codes.
    pub const CANCELLED: u16 = 499;
    /// The handler failed, panicked, or did not answer in time.
    pub const INTERNAL: u16 = 500;
    /// No procedure is registered for this scope, procedure and version.
    pub const NOT_IMPLEMENTED: u16 = 501;
}

/// The scope a CallRequest without `scope` addresses.
pub const DEFAULT_SCOPE: &str = "global";
/// The version a CallRequest without `version` addresses.
pub const DEFAULT_VERSION: &str = "1";

/// Limits applied while parsing a CallRequest.
///
/// | limit | default | meaning |
/// | --- | --- | --- |
/// | `max_depth` | 64 | deepest nesting of arrays/objects in the whole request (the request object itself is depth 1); deeper → 400. Values above 128 act as 128 (serde_json's own recursion limit). |
/// | `max_name_len` | 256 | longest `procedure`, `scope` or `version`, in bytes; longer → 400 |
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Deepest nesting of arrays and objects, counting the request object.
    pub max_depth: usize,
    /// Longest `procedure`, `scope` or `version` string, in bytes.
    pub max_name_len: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_depth: 64,
            max_name_len: 256,
        }
    }
}

/// A credential (`identity.authorization`, e.g. a JWT): zeroized on drop,
/// `Debug` prints `<redacted>`, compared in constant time, serialized as the
/// plain string it holds (it must reach the server).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Authorization(String);

impl Authorization {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The credential itself, for the code that checks it. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl PartialEq for Authorization {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}
impl Eq for Authorization {}

impl Serialize for Authorization {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Authorization {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// Who makes a call, as the client says: a credential, a device name and
/// free-form metadata. Set per connection (WebSocket, link) or per call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    /// The credential (redacted in `Debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<Authorization>,
    /// The client's device name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Free-form metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
}

impl Identity {
    /// An identity with only a credential.
    pub fn with_authorization(authorization: impl Into<String>) -> Self {
        Self {
            authorization: Some(Authorization::new(authorization)),
            ..Self::default()
        }
    }

    /// Reads an `identity` value; `Err` is the 400 message.
    pub fn from_value(v: Value) -> Result<Self, String> {
        let Value::Object(mut map) = v else {
            return Err("`identity` must be an object".into());
        };
        let authorization = match map.remove("authorization") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Authorization(s)),
            Some(_) => return Err("`identity.authorization` must be a string".into()),
        };
        let device_name = match map.remove("deviceName") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return Err("`identity.deviceName` must be a string".into()),
        };
        let metadata = match map.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            Some(_) => return Err("`identity.metadata` must be an object".into()),
        };
        Ok(Self {
            authorization,
            device_name,
            metadata,
        })
    }
}

/// A call: which procedure (exact `scope::procedure::version`), its
/// arguments, the client's correlation id and, optionally, an identity for
/// this call only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRequest {
    /// The procedure's name.
    pub procedure: String,
    /// Its scope (`"global"` when absent).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// Its version (`"1"` when absent).
    #[serde(default = "default_version")]
    pub version: String,
    /// The arguments (`null` when absent).
    #[serde(default)]
    pub args: Value,
    /// Echoed in the response, whatever it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Value>,
    /// An identity for this call, overriding the connection's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
}

fn default_scope() -> String {
    DEFAULT_SCOPE.to_owned()
}
fn default_version() -> String {
    DEFAULT_VERSION.to_owned()
}

impl CallRequest {
    /// A call of `procedure` in scope `"global"`, version `"1"`.
    pub fn new(procedure: impl Into<String>, args: Value) -> Self {
        Self {
            procedure: procedure.into(),
            scope: default_scope(),
            version: default_version(),
            args,
            correlation_id: None,
            identity: None,
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

    /// Sets the correlation id.
    pub fn correlation_id(mut self, id: Value) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the identity for this call.
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Parses a JSON body or frame. `Err` is a ready 400 [`CallResponse`]
    /// whose message says what is wrong (empty body, not JSON, not an
    /// object, no `procedure`, a field of the wrong type, nesting deeper than
    /// [`ParseLimits::max_depth`]); it echoes the `correlationId` when one
    /// could be read. The nesting is measured by one scan before parsing, so
    /// 100 000-deep arguments cost no stack; the request is then parsed in
    /// one pass (no intermediate tree for its outer object).
    pub fn from_slice(bytes: &[u8], limits: &ParseLimits) -> Result<Self, CallResponse> {
        let bad = |m: String| CallResponse::error(code::BAD_REQUEST, m);
        let Some(&first) = bytes.iter().find(|b| !b.is_ascii_whitespace()) else {
            return Err(bad("empty body: a CallRequest is a JSON object".into()));
        };
        let max_depth = limits.max_depth.min(128);
        if let Some(depth) = exceeds_depth(bytes, max_depth) {
            return Err(bad(format!(
                "CallRequest nested deeper than {max_depth} levels (at least {depth})"
            )));
        }
        if first != b'{' {
            // Not an object: say what it is (a rare path; parse it whole).
            let v: Value =
                serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
            return Self::from_value(v, limits);
        }
        let wire: WireCall =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        wire.into_request(limits)
    }

    /// Reads an already-parsed CallRequest value; `Err` as for
    /// [`from_slice`](Self::from_slice) (the depth is not measured here:
    /// serde_json's parser already bounded it).
    pub fn from_value(value: Value, limits: &ParseLimits) -> Result<Self, CallResponse> {
        let Value::Object(mut map) = value else {
            return Err(CallResponse::error(
                code::BAD_REQUEST,
                format!("a CallRequest must be a JSON object, not {}", kind(&value)),
            ));
        };
        WireCall {
            op: map.remove("op").is_some(),
            procedure: map.remove("procedure"),
            scope: map.remove("scope"),
            version: map.remove("version"),
            args: map.remove("args"),
            correlation_id: map.remove("correlationId"),
            identity: map.remove("identity"),
            others: !map.is_empty(),
        }
        .into_request(limits)
    }
}

/// A CallRequest's members as read from the wire, before their types are
/// checked. Deserializes from an object only, in one pass; unknown members
/// are skipped (and noted).
#[derive(Default)]
pub(crate) struct WireCall {
    /// Whether an `op` member was present (a jsonlink body).
    pub(crate) op: bool,
    pub(crate) procedure: Option<Value>,
    pub(crate) scope: Option<Value>,
    pub(crate) version: Option<Value>,
    pub(crate) args: Option<Value>,
    pub(crate) correlation_id: Option<Value>,
    pub(crate) identity: Option<Value>,
    /// Whether any other member was present.
    pub(crate) others: bool,
}

/// A CallRequest member name, read without allocating.
enum Field {
    Op,
    Procedure,
    Scope,
    Version,
    Args,
    CorrelationId,
    Identity,
    Other,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(match v {
                    "op" => Field::Op,
                    "procedure" => Field::Procedure,
                    "scope" => Field::Scope,
                    "version" => Field::Version,
                    "args" => Field::Args,
                    "correlationId" => Field::CorrelationId,
                    "identity" => Field::Identity,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Deserialize<'de> for WireCall {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = WireCall;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CallRequest object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<WireCall, A::Error> {
                let mut w = WireCall::default();
                while let Some(key) = m.next_key::<Field>()? {
                    let slot = match key {
                        Field::Procedure => &mut w.procedure,
                        Field::Scope => &mut w.scope,
                        Field::Version => &mut w.version,
                        Field::Args => &mut w.args,
                        Field::CorrelationId => &mut w.correlation_id,
                        Field::Identity => &mut w.identity,
                        Field::Op | Field::Other => {
                            if matches!(key, Field::Op) {
                                w.op = true;
                            } else {
                                w.others = true;
                            }
                            m.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = Some(m.next_value()?);
                }
                Ok(w)
            }
        }
        d.deserialize_map(V)
    }
}

impl WireCall {
    /// Checks the members' types: the CallRequest, or its 400.
    pub(crate) fn into_request(self, limits: &ParseLimits) -> Result<CallRequest, CallResponse> {
        let correlation_id = match self.correlation_id {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        };
        let fail = |m: String| {
            let mut r = CallResponse::error(code::BAD_REQUEST, m);
            r.correlation_id.clone_from(&correlation_id);
            r
        };
        let name = |field: &str, v: Option<Value>, default: Option<&str>| match v {
            Some(Value::String(s)) if s.len() > limits.max_name_len => Err(format!(
                "`{field}` is longer than {} bytes",
                limits.max_name_len
            )),
            Some(Value::String(s)) if s.is_empty() => {
                Err(format!("`{field}` must be a non-empty string"))
            }
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => match default {
                Some(d) => Ok(d.to_owned()),
                None => Err(format!("`{field}` is required")),
            },
            Some(other) => Err(format!("`{field}` must be a string, not {}", kind(&other))),
        };
        let procedure = name("procedure", self.procedure, None).map_err(fail)?;
        let scope = name("scope", self.scope, Some(DEFAULT_SCOPE)).map_err(fail)?;
        let version = name("version", self.version, Some(DEFAULT_VERSION)).map_err(fail)?;
        let identity = match self.identity {
            None | Some(Value::Null) => None,
            Some(v) => Some(Identity::from_value(v).map_err(fail)?),
        };
        Ok(CallRequest {
            procedure,
            scope,
            version,
            args: self.args.unwrap_or(Value::Null),
            correlation_id,
            identity,
        })
    }
}

/// The JSON kind of a value, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Scans `bytes` for `[`/`{` nesting outside strings; `Some(depth)` as soon
/// as it passes `max`. Strings are skipped with `memchr` (most of a body's
/// bytes are in its strings).
pub(crate) fn exceeds_depth(bytes: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        i += 1;
        match b {
            b'"' => {
                // To the closing quote, past escapes.
                loop {
                    let j = memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
                    i += j + 1;
                    if bytes[i - 1] == b'"' {
                        break;
                    }
                    i += 1; // the escaped byte
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

/// The answer to a call: a code, whether it succeeded, data or a message,
/// and the request's correlation id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallResponse {
    /// One of [`code`] (or any code a handler chose).
    pub code: u16,
    /// `true` for a 2xx code.
    pub success: bool,
    /// The result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// What went wrong, or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The request's correlation id, echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Value>,
}

impl CallResponse {
    /// A 200 with `data`.
    pub fn ok(data: Value) -> Self {
        Self {
            code: code::OK,
            success: true,
            data: Some(data),
            message: None,
            correlation_id: None,
        }
    }

    /// A failure with `code` and `message` (`success` is `code` in 200..300).
    pub fn error(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            success: (200..300).contains(&code),
            data: None,
            message: Some(message.into()),
            correlation_id: None,
        }
    }

    /// Sets the correlation id.
    pub fn with_correlation_id(mut self, id: Option<Value>) -> Self {
        self.correlation_id = id;
        self
    }

    /// Serializes to JSON bytes.
    pub fn to_vec(&self) -> Vec<u8> {
        // A CallResponse holds only JSON values and strings: serializing it
        // cannot fail.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"code":500,"success":false,"message":"unserializable response"}"#.to_vec()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(s: &str) -> Result<CallRequest, CallResponse> {
        CallRequest::from_slice(s.as_bytes(), &ParseLimits::default())
    }

    #[test]
    fn parses_a_full_request_with_defaults() {
        let r = parse(r#"{"procedure":"login","args":{"a":1},"correlationId":7}"#).unwrap();
        assert_eq!(r.procedure, "login");
        assert_eq!(r.scope, "global");
        assert_eq!(r.version, "1");
        assert_eq!(r.args, json!({"a":1}));
        assert_eq!(r.correlation_id, Some(json!(7)));
        assert!(r.identity.is_none());
        let r = parse(
            r#"{"procedure":"p","scope":"s","version":"2","identity":{"authorization":"jwt","deviceName":"d","metadata":{"k":1}}}"#,
        )
        .unwrap();
        assert_eq!((r.scope.as_str(), r.version.as_str()), ("s", "2"));
        let id = r.identity.unwrap();
        assert_eq!(id.authorization.unwrap().expose(), "jwt");
        assert_eq!(id.device_name.as_deref(), Some("d"));
        assert_eq!(id.metadata.unwrap()["k"], json!(1));
    }

    #[test]
    fn bad_requests_are_400_with_a_message() {
        for (body, needle) in [
            ("", "empty body"),
            ("   ", "empty body"),
            ("[1]", "JSON object"),
            ("\"procedure\"", "JSON object"),
            ("{", "not valid JSON"),
            ("{}", "`procedure` is required"),
            (r#"{"procedure":5}"#, "`procedure` must be a string"),
            (r#"{"procedure":""}"#, "non-empty"),
            (r#"{"procedure":"p","scope":1}"#, "`scope` must be a string"),
            (
                r#"{"procedure":"p","version":[]}"#,
                "`version` must be a string",
            ),
            (
                r#"{"procedure":"p","identity":3}"#,
                "`identity` must be an object",
            ),
            (
                r#"{"procedure":"p","identity":{"authorization":1}}"#,
                "`identity.authorization`",
            ),
            (
                r#"{"procedure":"p","identity":{"metadata":"x"}}"#,
                "`identity.metadata`",
            ),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e.code, code::BAD_REQUEST, "{body}");
            assert!(!e.success);
            let m = e.message.unwrap();
            assert!(m.contains(needle), "{body}: {m}");
        }
    }

    #[test]
    fn a_400_echoes_the_correlation_id_when_readable() {
        let e = parse(r#"{"procedure":1,"correlationId":"c1"}"#).unwrap_err();
        assert_eq!(e.correlation_id, Some(json!("c1")));
    }

    #[test]
    fn deep_nesting_is_400_without_stack_overflow() {
        let n = 100_000;
        let body = format!(
            r#"{{"procedure":"p","args":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        );
        let e = parse(&body).unwrap_err();
        assert_eq!(e.code, code::BAD_REQUEST);
        assert!(e.message.unwrap().contains("nested deeper than 64"));
        // Brackets inside strings do not count.
        let ok = format!(r#"{{"procedure":"p","args":"{}"}}"#, "[".repeat(n));
        assert!(parse(&ok).is_ok());
        // Escaped quotes and backslashes inside strings do not end them.
        assert_eq!(exceeds_depth(br#"{"a":"x\"[[[\\","b":[[1]]}"#, 3), None);
        assert_eq!(
            exceeds_depth(br#"{"a":"x\"[[[\\","b":[[[1]]]}"#, 3),
            Some(4)
        );
        assert_eq!(exceeds_depth(br#"{"a":"unterminated [[[[["#, 1), None);
        // The limit is configurable.
        let limits = ParseLimits {
            max_depth: 3,
            ..ParseLimits::default()
        };
        assert!(CallRequest::from_slice(br#"{"procedure":"p","args":[[1]]}"#, &limits).is_ok());
        assert!(CallRequest::from_slice(br#"{"procedure":"p","args":[[[1]]]}"#, &limits).is_err());
    }

    #[test]
    fn long_names_are_refused() {
        let body = format!(r#"{{"procedure":"{}"}}"#, "x".repeat(300));
        assert!(
            parse(&body)
                .unwrap_err()
                .message
                .unwrap()
                .contains("longer than 256")
        );
    }

    #[test]
    fn response_serializes_camel_case_and_omits_none() {
        let r = CallResponse::ok(json!(1)).with_correlation_id(Some(json!("a")));
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"code":200,"success":true,"data":1,"correlationId":"a"})
        );
        let e = CallResponse::error(501, "no");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"code":501,"success":false,"message":"no"})
        );
    }

    #[test]
    fn authorization_is_redacted_and_compared() {
        let id = Identity::with_authorization("secret-jwt");
        let dbg = format!("{id:?}");
        assert!(!dbg.contains("secret-jwt"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
        assert_eq!(Authorization::new("a"), Authorization::new("a"));
        assert_ne!(Authorization::new("a"), Authorization::new("b"));
        assert_ne!(Authorization::new("a"), Authorization::new("ab"));
        // Serialized as the plain string: it must reach the server.
        assert_eq!(
            serde_json::to_value(&id).unwrap(),
            json!({"authorization":"secret-jwt"})
        );
        let back: Identity =
            serde_json::from_value(json!({"authorization":"x","deviceName":"d"})).unwrap();
        assert_eq!(back.device_name.as_deref(), Some("d"));
    }
}
