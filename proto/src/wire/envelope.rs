//! Frame envelopes: parsing with one pass over the line (payloads are kept
//! as borrowed raw JSON), and the typed reading of their members.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::B64;
use super::skim::{DuplicateOp, body_op, depth_within};
use crate::MIN_PEER_MAX_FRAME;
use crate::config::{Identity, MAX_IDENTITY_LEN, Policy};
use crate::error::{ProtocolError, RemoteError};
use crate::event::Op;

/// Envelope keys we know. Unknown keys are ignored (forward compatible);
/// known keys must appear at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Key {
    T,
    D,
    Id,
    Err,
    Code,
    Reason,
    Versions,
    Version,
    Nonce,
    Node,
    Designation,
    Conn,
    MaxFrame,
    Sign,
    Seal,
    SignAlg,
    SealAlg,
    Proof,
    Ext,
    /// Relays only (PROTOCOL.md §18.3): a client id.
    C,
    /// Relays only: a client's address in `join`.
    Addr,
}

const KEYS: [(&str, Key); 21] = [
    ("t", Key::T),
    ("d", Key::D),
    ("id", Key::Id),
    ("err", Key::Err),
    ("code", Key::Code),
    ("reason", Key::Reason),
    ("versions", Key::Versions),
    ("version", Key::Version),
    ("nonce", Key::Nonce),
    ("node", Key::Node),
    ("designation", Key::Designation),
    ("conn", Key::Conn),
    ("max_frame", Key::MaxFrame),
    ("sign", Key::Sign),
    ("seal", Key::Seal),
    ("sign_alg", Key::SignAlg),
    ("seal_alg", Key::SealAlg),
    ("proof", Key::Proof),
    ("ext", Key::Ext),
    ("c", Key::C),
    ("addr", Key::Addr),
];

/// Whether `key` is known on this connection: `c` and `addr` only where
/// the extension `relay` is on; elsewhere they are unknown members,
/// ignored as a version 1 peer ignores them (PROTOCOL.md §18.3).
fn known(key: Key, relay: bool) -> bool {
    relay || !matches!(key, Key::C | Key::Addr)
}

impl Key {
    fn name(self) -> &'static str {
        KEYS.get(self as usize).map_or("?", |(n, _)| n)
    }
}

/// A parsed envelope: each known key's raw JSON value, borrowed from the line.
#[derive(Default)]
pub(crate) struct Envelope<'a> {
    fields: [Option<&'a RawValue>; KEYS.len()],
    duplicate: Option<Key>,
    /// `t` and `id` as read by the canonical fast path (then not in
    /// `fields`).
    known_t: Option<&'static str>,
    known_id: Option<u64>,
    known_c: Option<u64>,
}

impl fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope").finish_non_exhaustive()
    }
}

/// The general envelope parser. Every member's value is taken as raw JSON
/// and its nesting depth checked ([`depth_within`]), since serde_json
/// checks no depth on values it skips or borrows.
struct EnvelopeVisitor {
    max_depth: usize,
    relay: bool,
}

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = (Envelope<'de>, bool);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut env = Envelope::default();
        let mut too_deep = false;
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            let v: &'de RawValue = map.next_value()?;
            let key = KEYS
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, key)| *key)
                .filter(|key| known(*key, self.relay));
            // `err`'s members (`code`, `message`, `data`) get the limit
            // each, as every other member does.
            let limit = match key {
                Some(Key::Err) => self.max_depth.saturating_add(1),
                _ => self.max_depth,
            };
            too_deep |= !depth_within(v.get().as_bytes(), limit);
            let Some(key) = key else {
                continue; // unknown: ignored once its depth is checked
            };
            match env.fields.get_mut(key as usize) {
                Some(s @ None) => *s = Some(v),
                _ => {
                    env.duplicate.get_or_insert(key);
                }
            }
        }
        Ok((env, too_deep))
    }
}

/// Parses one line into an envelope.
///
/// Data frames in the exact form every conforming encoder writes (PROTOCOL.md,
/// "Canonical data frames") take a fast path: the fixed prefix is matched,
/// the id read as digits, and only the body goes through serde_json (which
/// validates it as JSON and UTF-8). Any other line, or a canonical-looking
/// one whose body is not exactly one JSON value, goes through the general
/// parser, so both paths accept the same lines with the same result.
///
/// Every member value may nest at most `max_depth` arrays and objects
/// (`err` one more, so that its `data` gets `max_depth`); a deeper line is
/// [`ProtocolError::InvalidJson`] on both paths (PROTOCOL.md §4.3).
///
/// `relay` says whether the extension `relay` is on (PROTOCOL.md §18): only
/// then are `c` and `addr` known members, and the relayed data frames
/// `cmsg`, `creq` and `cres` have canonical forms too.
pub(crate) fn parse(
    line: &[u8],
    max_depth: usize,
    relay: bool,
) -> Result<Envelope<'_>, ProtocolError> {
    match parse_canonical(line, max_depth, relay) {
        Some(env) => Ok(env),
        None => parse_general(line, max_depth, relay),
    }
}

/// The error for a line nested deeper than the limit (the same text from
/// both parsing paths).
fn too_deep(max_depth: usize) -> ProtocolError {
    ProtocolError::InvalidJson {
        detail: format!("nested deeper than the {max_depth}-level depth limit"),
    }
}

/// The canonical data frames: `{"t":"msg","d":B}`, `{"t":"req","id":N,"d":B}`
/// and `{"t":"res","id":N,"d":B}`, with `N` in canonical decimal and no
/// whitespace outside `B`.
///
/// A body deeper than `max_depth` is left to the general parser, which
/// reports it.
fn parse_canonical(line: &[u8], max_depth: usize, relay: bool) -> Option<Envelope<'_>> {
    let rest = line.strip_prefix(b"{\"t\":\"")?;
    if relay && let Some(rest) = rest.strip_prefix(b"c") {
        return parse_canonical_relayed(rest, max_depth);
    }
    let (t, id, rest) = if let Some(rest) = rest.strip_prefix(b"msg\",\"d\":") {
        ("msg", None, rest)
    } else {
        let (t, rest) = if let Some(rest) = rest.strip_prefix(b"req\",\"id\":") {
            ("req", rest)
        } else {
            ("res", rest.strip_prefix(b"res\",\"id\":")?)
        };
        let (id, rest) = canonical_u64(rest)?;
        (t, Some(id), rest.strip_prefix(b",\"d\":")?)
    };
    canonical_body(rest, max_depth, t, id, None)
}

/// The canonical relayed data frames (PROTOCOL.md §18.3), after `{"t":"c`:
/// `{"t":"cmsg","c":C,"d":B}`, `{"t":"creq","c":C,"id":N,"d":B}` and
/// `{"t":"cres","c":C,"id":N,"d":B}`.
fn parse_canonical_relayed(rest: &[u8], max_depth: usize) -> Option<Envelope<'_>> {
    let (t, rest) = if let Some(rest) = rest.strip_prefix(b"msg\",\"c\":") {
        ("cmsg", rest)
    } else if let Some(rest) = rest.strip_prefix(b"req\",\"c\":") {
        ("creq", rest)
    } else {
        ("cres", rest.strip_prefix(b"res\",\"c\":")?)
    };
    let (c, rest) = canonical_u64(rest)?;
    let (id, rest) = if t == "cmsg" {
        (None, rest)
    } else {
        let (id, rest) = canonical_u64(rest.strip_prefix(b",\"id\":")?)?;
        (Some(id), rest)
    };
    canonical_body(rest.strip_prefix(b",\"d\":")?, max_depth, t, id, Some(c))
}

/// The rest of a canonical frame: its body `B` and the closing `}`.
fn canonical_body<'a>(
    rest: &'a [u8],
    max_depth: usize,
    t: &'static str,
    id: Option<u64>,
    c: Option<u64>,
) -> Option<Envelope<'a>> {
    let body = rest.strip_suffix(b"}")?;
    let d: &RawValue = serde_json::from_slice(body).ok()?;
    if !depth_within(d.get().as_bytes(), max_depth) {
        return None;
    }
    let mut env = Envelope {
        known_t: Some(t),
        known_id: id,
        known_c: c,
        ..Envelope::default()
    };
    if let Some(slot) = env.fields.get_mut(Key::D as usize) {
        *slot = Some(d);
    }
    Some(env)
}

/// A u64 in canonical decimal (no sign, no leading zero, no overflow) at
/// the start of `s`, and what follows it.
#[inline]
pub(super) fn canonical_u64(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    let (num, rest) = s.split_at(digits);
    if num.is_empty() || (num.len() > 1 && num.first() == Some(&b'0')) {
        return None;
    }
    let mut n: u64 = 0;
    for b in num {
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some((n, rest))
}

/// Parses any line into an envelope: UTF-8, then JSON object, one pass.
fn parse_general(
    line: &[u8],
    max_depth: usize,
    relay: bool,
) -> Result<Envelope<'_>, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let (env, deep) = match (&mut de).deserialize_map(EnvelopeVisitor { max_depth, relay }) {
        Ok(r) => r,
        Err(e) if e.is_data() => return Err(ProtocolError::NotAnObject),
        Err(e) => {
            return Err(ProtocolError::InvalidJson {
                detail: e.to_string(),
            });
        }
    };
    de.end().map_err(|e| ProtocolError::InvalidJson {
        detail: e.to_string(),
    })?;
    if deep {
        return Err(too_deep(max_depth));
    }
    if let Some(k) = env.duplicate {
        return Err(ProtocolError::DuplicateField { field: k.name() });
    }
    Ok(env)
}

impl<'a> Envelope<'a> {
    pub(crate) fn raw(&self, k: Key) -> Option<&'a RawValue> {
        self.fields.get(k as usize).copied().flatten()
    }

    /// A required field's raw value.
    fn required(&self, k: Key) -> Result<&'a RawValue, ProtocolError> {
        self.raw(k).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })
    }

    /// A required string field.
    pub(crate) fn str(&self, k: Key) -> Result<Cow<'a, str>, ProtocolError> {
        self.opt_str(k)?.ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })
    }

    /// An optional string field.
    pub(crate) fn opt_str(&self, k: Key) -> Result<Option<Cow<'a, str>>, ProtocolError> {
        self.raw(k)
            .map(|r| {
                let text = r.get();
                // Fast path: a plain string without escapes is borrowed as is.
                if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'))
                    && !inner.contains(['\\', '"'])
                {
                    return Ok(Cow::Borrowed(inner));
                }
                serde_json::from_str::<Cow<'a, str>>(text)
                    .map(|c| match c {
                        Cow::Borrowed(b) => Cow::Borrowed(b),
                        Cow::Owned(o) => Cow::Owned(o),
                    })
                    .map_err(|_| ProtocolError::InvalidField {
                        field: k.name(),
                        detail: "expected a string",
                    })
            })
            .transpose()
    }

    /// A required field that is a string or a list of at most `max`
    /// strings (a string is a list of one).
    pub(crate) fn str_or_list(&self, k: Key, max: usize) -> Result<Vec<String>, ProtocolError> {
        let r = self.required(k)?;
        if !r.get().starts_with('[') {
            return Ok(vec![self.str(k)?.into_owned()]);
        }
        list(k, r, max, "expected a string or a list of strings")
    }

    /// An optional field that is a list of at most `max` strings (absent:
    /// `None`).
    pub(crate) fn opt_str_list(
        &self,
        k: Key,
        max: usize,
    ) -> Result<Option<Vec<String>>, ProtocolError> {
        self.raw(k)
            .map(|r| list(k, r, max, "expected a list of strings"))
            .transpose()
    }

    /// A required non-negative integer that fits in 64 bits.
    pub(crate) fn u64(&self, k: Key) -> Result<u64, ProtocolError> {
        if let (Key::Id, Some(id)) = (k, self.known_id) {
            return Ok(id);
        }
        if let (Key::C, Some(c)) = (k, self.known_c) {
            return Ok(c);
        }
        let r = self.required(k)?;
        serde_json::from_str::<u64>(r.get()).map_err(|_| ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected an integer in 0..2^64",
        })
    }

    /// A required boolean.
    pub(crate) fn bool(&self, k: Key) -> Result<bool, ProtocolError> {
        let r = self.required(k)?;
        serde_json::from_str::<bool>(r.get()).map_err(|_| ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected a boolean",
        })
    }

    /// A required array of at most 16 u64.
    pub(crate) fn u64_list(&self, k: Key) -> Result<Vec<u64>, ProtocolError> {
        list(k, self.required(k)?, 16, "expected an array of integers")
    }

    /// A required base64 field decoding to exactly `N` bytes.
    pub(crate) fn b64<const N: usize>(&self, k: Key) -> Result<[u8; N], ProtocolError> {
        use base64::Engine as _;
        let s = self.str(k)?;
        let bad = ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected base64 of the right length",
        };
        let v = B64.decode(s.as_bytes()).map_err(|_| bad.clone())?;
        v.try_into().map_err(|_| bad)
    }

    /// A policy (`sign` or `seal` of `hello`).
    pub(crate) fn policy(&self, k: Key) -> Result<Policy, ProtocolError> {
        Policy::parse(&self.str(k)?).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected off, optional, preferred or required",
        })
    }

    /// Who the peer is: `node` and `designation`, each at most
    /// [`MAX_IDENTITY_LEN`] bytes.
    pub(crate) fn identity(&self) -> Result<Identity, ProtocolError> {
        let node = self.str(Key::Node)?;
        let designation = self.str(Key::Designation)?;
        for (field, v) in [("node", &node), ("designation", &designation)] {
            if v.len() > MAX_IDENTITY_LEN {
                return Err(ProtocolError::InvalidField {
                    field,
                    detail: "longer than 256 bytes",
                });
            }
        }
        Ok(Identity {
            node: node.into_owned(),
            designation: designation.into_owned(),
        })
    }

    /// The largest frame the peer accepts: `max_frame`, at least
    /// [`MIN_PEER_MAX_FRAME`].
    pub(crate) fn max_frame(&self) -> Result<usize, ProtocolError> {
        let v = self.u64(Key::MaxFrame)?;
        if v < MIN_PEER_MAX_FRAME {
            return Err(ProtocolError::InvalidField {
                field: "max_frame",
                detail: "below the 1024-byte minimum",
            });
        }
        Ok(usize::try_from(v).unwrap_or(usize::MAX))
    }

    /// The payload `d` that `msg` and `req` require.
    pub(crate) fn body(&self) -> Result<&'a RawValue, ProtocolError> {
        self.raw(Key::D).ok_or(ProtocolError::InvalidField {
            field: "d",
            detail: "missing",
        })
    }

    /// A response's outcome: its value `d` or its error `err`
    /// (`{"code":…,"message":…}`, `data` optional), exactly one of them.
    pub(crate) fn outcome(&self) -> Result<Result<&'a RawValue, RemoteError>, ProtocolError> {
        match (self.raw(Key::D), self.raw(Key::Err)) {
            (Some(d), None) => Ok(Ok(d)),
            (None, Some(e)) => Ok(Err(remote_error(e)?)),
            _ => Err(ProtocolError::InvalidField {
                field: "d",
                detail: "a response needs exactly one of `d` and `err`",
            }),
        }
    }

    /// The body's op (PROTOCOL.md §11.1): the value of the top-level
    /// member `op` of `d`, if `d` is an object with one whose value is a
    /// string. A body with `op` more than once is refused (dispatch and
    /// the handler's parsed body could disagree about which one counts).
    pub(crate) fn op(&self) -> Result<Option<Op>, ProtocolError> {
        match self.raw(Key::D) {
            Some(d) => {
                body_op(d).map_err(|DuplicateOp| ProtocolError::DuplicateField { field: "d.op" })
            }
            None => Ok(None),
        }
    }

    /// The `t` field, truncated for error messages.
    pub(crate) fn frame_type(&self) -> Result<Cow<'a, str>, ProtocolError> {
        if let Some(t) = self.known_t {
            return Ok(Cow::Borrowed(t));
        }
        self.str(Key::T)
    }
}

/// A list field of at most `max` entries; `detail` says what was expected
/// where the value is not such a list.
fn list<T: serde::de::DeserializeOwned>(
    k: Key,
    r: &RawValue,
    max: usize,
    detail: &'static str,
) -> Result<Vec<T>, ProtocolError> {
    let list: Vec<T> = serde_json::from_str(r.get()).map_err(|_| ProtocolError::InvalidField {
        field: k.name(),
        detail,
    })?;
    if list.len() > max {
        return Err(ProtocolError::InvalidField {
            field: k.name(),
            detail: "too many entries",
        });
    }
    Ok(list)
}

/// The error of a `res`: `{"code":string,"message":string}`, `data`
/// optional (`"data":null` is the same as none).
fn remote_error(raw: &RawValue) -> Result<RemoteError, ProtocolError> {
    #[derive(serde::Deserialize)]
    struct Wire<'a> {
        #[serde(borrow)]
        code: Cow<'a, str>,
        #[serde(borrow)]
        message: Cow<'a, str>,
        #[serde(borrow, default)]
        data: Option<&'a RawValue>,
    }
    let w: Wire<'_> = serde_json::from_str(raw.get()).map_err(|_| ProtocolError::InvalidField {
        field: "err",
        detail: "expected {\"code\":string,\"message\":string}",
    })?;
    Ok(RemoteError {
        code: w.code.into_owned(),
        message: w.message.into_owned(),
        data: w.data.map(|d| d.get().to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::skim::tests::json_value;

    const D: usize = crate::DEFAULT_MAX_DEPTH;

    #[test]
    fn parses_known_fields_and_rejects_duplicates() {
        let env = parse(br#"{"t":"req","id":5,"d":{"a":[1,2]},"x":1}"#, D, false).unwrap();
        assert_eq!(env.frame_type().unwrap(), "req");
        assert_eq!(env.u64(Key::Id).unwrap(), 5);
        assert_eq!(env.raw(Key::D).unwrap().get(), r#"{"a":[1,2]}"#);
        assert_eq!(
            parse(br#"{"t":"req","id":5,"id":6}"#, D, false).unwrap_err(),
            ProtocolError::DuplicateField { field: "id" }
        );
    }

    #[test]
    fn ids_must_be_u64() {
        for bad in ["1.5", "-1", "\"7\"", "18446744073709551616", "1e3", "null"] {
            let line = format!(r#"{{"t":"req","id":{bad},"d":1}}"#);
            let env = parse(line.as_bytes(), D, false).unwrap();
            assert!(
                matches!(
                    env.u64(Key::Id),
                    Err(ProtocolError::InvalidField { field: "id", .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn non_objects_and_garbage() {
        for (line, want) in [
            (&b"null"[..], "obj"),
            (b"5", "obj"),
            (b"\"x\"", "obj"),
            (b"[]", "obj"),
            (b"{", "json"),
            (b"{} {}", "json"),
            (b"", "json"),
            (b"\xff", "utf8"),
            (b"\"\xed\xa0\x80\"", "utf8"),
            (b"\"\xc0\xaf\"", "utf8"),
        ] {
            let got = parse(line, D, false).unwrap_err();
            let ok = match want {
                "obj" => got == ProtocolError::NotAnObject,
                "json" => matches!(got, ProtocolError::InvalidJson { .. }),
                _ => got == ProtocolError::InvalidUtf8,
            };
            assert!(ok, "{line:?} -> {got:?}");
        }
    }

    /// What a parse gave, comparable across the two paths.
    fn outcome(line: &[u8], fast: bool) -> String {
        outcome_at(line, fast, D)
    }

    /// [`outcome`] with a depth limit.
    fn outcome_at(line: &[u8], fast: bool, max_depth: usize) -> String {
        outcome_relay(line, fast, max_depth, false)
    }

    /// [`outcome_at`] on a connection with `relay` on or off.
    fn outcome_relay(line: &[u8], fast: bool, max_depth: usize, relay: bool) -> String {
        let r = if fast {
            parse(line, max_depth, relay)
        } else {
            parse_general(line, max_depth, relay)
        };
        match r {
            Ok(env) => format!(
                "t={:?} c={:?} id={:?} d={:?} err={:?} op={:?}",
                env.frame_type(),
                env.u64(Key::C),
                env.u64(Key::Id),
                env.raw(Key::D).map(RawValue::get),
                env.raw(Key::Err).map(RawValue::get),
                env.op(),
            ),
            Err(e) => format!("error {e:?}"),
        }
    }

    #[test]
    fn both_paths_bound_the_depth_of_every_member() {
        // Limit 3: each member value may nest 3 levels, `err` 4 (its
        // `data` 3).
        let ok: [&[u8]; 6] = [
            br#"{"t":"msg","d":[[[1]]]}"#,
            br#"{"t":"msg","d":{"a":{"b":{}}}}"#,
            br#"{"t":"msg","x":[[["]]]]]"]]],"d":1}"#,
            br#"{"t":"res","id":1,"err":{"code":"c","message":"m","data":[[[]]]}}"#,
            br#"{"t":"ping","d":{"a":[[]]}}"#,
            br#"{"t":"hello","versions":[1],"x":{"y":[2]}}"#,
        ];
        let deep: [&[u8]; 7] = [
            br#"{"t":"msg","d":[[[[1]]]]}"#,
            br#"{"t":"msg","d":{"a":{"b":{"c":{}}}}}"#,
            br#"{"t":"msg","d":1,"x":[[[[]]]]}"#,
            br#"{"t":"res","id":1,"err":{"code":"c","message":"m","data":[[[[]]]]}}"#,
            br#"{"t":"res","id":1,"err":{"code":"c","message":"m","x":{"a":[[{}]]}}}"#,
            br#"{"t":"ping","d":{"a":[[[]]]}}"#,
            br#"{"t":"hello","versions":[1],"x":{"y":[[[2]]]}}"#,
        ];
        for line in ok {
            let got = outcome_at(line, true, 3);
            assert!(
                !got.starts_with("error"),
                "{}: {got}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(got, outcome_at(line, false, 3));
        }
        let want = format!("error {:?}", too_deep(3));
        for line in deep {
            assert_eq!(
                outcome_at(line, true, 3),
                want,
                "{}",
                String::from_utf8_lossy(line)
            );
            assert_eq!(outcome_at(line, false, 3), want);
        }
    }

    #[test]
    fn canonical_fast_path_agrees_with_the_general_parser() {
        let cases: [&[u8]; 22] = [
            br#"{"t":"msg","d":{"op":"x","n":1}}"#,
            br#"{"t":"msg","d":1}"#,
            br#"{"t":"msg","d":1,"d":2}"#,
            br#"{"t":"msg","d":{},"x":1}"#,
            br#"{"t":"msg","d":{} }"#,
            br#"{"t":"msg","d": {} }"#,
            br#"{"t":"msg","d":}"#,
            br#"{"t":"msg","d":{"a":"}"#,
            b"{\"t\":\"msg\",\"d\":\"\xff\"}",
            br#"{"t":"msg","d":"a"}}"#,
            br#"{"t":"req","id":0,"d":null}"#,
            br#"{"t":"req","id":007,"d":null}"#,
            br#"{"t":"req","id":-1,"d":null}"#,
            br#"{"t":"req","id":1.5,"d":null}"#,
            br#"{"t":"req","id":1e3,"d":null}"#,
            br#"{"t":"req","id":18446744073709551615,"d":[]}"#,
            br#"{"t":"req","id":18446744073709551616,"d":[]}"#,
            br#"{"t":"res","id":3,"d":"ok"}"#,
            br#"{"t":"res","id":3,"err":{"code":"x","message":"y"}}"#,
            br#"{"t":"res","id":3,"d":"ok","err":{}}"#,
            br#"{"t":"req","id":2,"d":{"op":"a"},"id":3}"#,
            br#"{"t":"msg","d":[1,2]}"#,
        ];
        for c in cases {
            assert_eq!(
                outcome(c, true),
                outcome(c, false),
                "{}",
                String::from_utf8_lossy(c)
            );
        }
        // The fast path is taken for canonical frames.
        assert!(parse_canonical(br#"{"t":"req","id":9,"d":{"op":"a"}}"#, D, false).is_some());
        assert!(parse_canonical(br#"{"t":"req","id":09,"d":{}}"#, D, false).is_none());
    }

    #[test]
    fn relayed_frames_take_the_fast_path_only_where_relay_is_on() {
        let cases: [&[u8]; 14] = [
            br#"{"t":"cmsg","c":1,"d":{"op":"x"}}"#,
            br#"{"t":"creq","c":2,"id":7,"d":[1]}"#,
            br#"{"t":"cres","c":18446744073709551615,"id":0,"d":null}"#,
            br#"{"t":"cres","c":3,"id":1,"err":{"code":"x","message":"y"}}"#,
            br#"{"t":"cmsg","c":01,"d":1}"#,
            br#"{"t":"creq","c":1,"d":1}"#,
            br#"{"t":"cmsg","c":1,"c":2,"d":1}"#,
            br#"{"t":"cmsg","c":1,"d":1,"addr":"a","addr":"b"}"#,
            br#"{"t":"creq","c":1,"id":1,"d":1,"id":2}"#,
            br#"{"t":"close","code":"normal","reason":""}"#,
            br#"{"t":"cmsg","c":-1,"d":1}"#,
            br#"{"t":"join","c":1,"node":"n","designation":"d","addr":"1.2.3.4:5","max_frame":512}"#,
            br#"{"t":"cmsg","c":1,"d":{"a":"}"#,
            br#"{"t":"msg","c":1,"c":1,"d":2}"#,
        ];
        for c in cases {
            for relay in [false, true] {
                assert_eq!(
                    outcome_relay(c, true, D, relay),
                    outcome_relay(c, false, D, relay),
                    "{} relay={relay}",
                    String::from_utf8_lossy(c)
                );
            }
        }
        let fast = |l: &[u8], relay| parse_canonical(l, D, relay).is_some();
        assert!(fast(br#"{"t":"creq","c":2,"id":7,"d":[1]}"#, true));
        assert!(!fast(br#"{"t":"creq","c":2,"id":7,"d":[1]}"#, false));
        // `c` twice is a duplicate only where it is known.
        let dup = br#"{"t":"msg","c":1,"c":1,"d":2}"#;
        assert!(parse(dup, D, false).is_ok());
        assert_eq!(
            parse(dup, D, true).unwrap_err(),
            ProtocolError::DuplicateField { field: "c" }
        );
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn canonical_fast_path_agrees_on_random_frames(
            t in proptest::sample::select(vec!["msg", "req", "res", "ping", "cmsg\",\"c\":5", "creq\",\"c\":0", "cres\",\"c\":12"]),
            id in proptest::prop_oneof![
                proptest::strategy::Just(String::new()),
                proptest::num::u64::ANY.prop_map(|n| n.to_string()),
                "-?[0-9]{1,21}(\\.[0-9])?",
            ],
            v in json_value(2),
            tail in proptest::sample::select(vec!["", " ", ",\"d\":1", ",\"x\":[1]", "}", "\u{0}", "\n"]),
            cut in proptest::option::of(0usize..64),
        ) {
            let mut line = format!("{{\"t\":\"{t}\"");
            if !id.is_empty() {
                line.push_str(&format!(",\"id\":{id}"));
            }
            line.push_str(&format!(",\"d\":{}{tail}}}", serde_json::to_string(&v).unwrap()));
            let mut bytes = line.into_bytes();
            if let Some(c) = cut {
                bytes.truncate(bytes.len().saturating_sub(c));
            }
            proptest::prop_assert_eq!(outcome(&bytes, true), outcome(&bytes, false));
            proptest::prop_assert_eq!(outcome_at(&bytes, true, 1), outcome_at(&bytes, false, 1));
            proptest::prop_assert_eq!(
                outcome_relay(&bytes, true, D, true),
                outcome_relay(&bytes, false, D, true)
            );
        }
    }
}
