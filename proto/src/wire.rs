//! Frame envelopes: parsing with one pass over the line (payloads are kept
//! as borrowed raw JSON), and encoding straight into the output buffer.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::error::ProtocolError;
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
}

const KEYS: [(&str, Key); 19] = [
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
];

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
}

impl fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope").finish_non_exhaustive()
    }
}

struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut env = Envelope::default();
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            match KEYS.iter().find(|(n, _)| *n == k) {
                Some((_, key)) => {
                    let v: &'de RawValue = map.next_value()?;
                    let slot = env.fields.get_mut(*key as usize);
                    match slot {
                        Some(s @ None) => *s = Some(v),
                        _ => {
                            env.duplicate.get_or_insert(*key);
                        }
                    }
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(env)
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
pub(crate) fn parse(line: &[u8]) -> Result<Envelope<'_>, ProtocolError> {
    match parse_canonical(line) {
        Some(env) => Ok(env),
        None => parse_general(line),
    }
}

/// The canonical data frames: `{"t":"msg","d":B}`, `{"t":"req","id":N,"d":B}`
/// and `{"t":"res","id":N,"d":B}`, with `N` in canonical decimal and no
/// whitespace outside `B`.
fn parse_canonical(line: &[u8]) -> Option<Envelope<'_>> {
    let rest = line.strip_prefix(b"{\"t\":\"")?;
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
    let body = rest.strip_suffix(b"}")?;
    let d: &RawValue = serde_json::from_slice(body).ok()?;
    let mut env = Envelope {
        known_t: Some(t),
        known_id: id,
        ..Envelope::default()
    };
    if let Some(slot) = env.fields.get_mut(Key::D as usize) {
        *slot = Some(d);
    }
    Some(env)
}

/// A u64 in canonical decimal (no sign, no leading zero, no overflow) at
/// the start of `s`, and what follows it.
fn canonical_u64(s: &[u8]) -> Option<(u64, &[u8])> {
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
fn parse_general(line: &[u8]) -> Result<Envelope<'_>, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let env = match (&mut de).deserialize_map(EnvelopeVisitor) {
        Ok(env) => env,
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
    if let Some(k) = env.duplicate {
        return Err(ProtocolError::DuplicateField { field: k.name() });
    }
    Ok(env)
}

impl<'a> Envelope<'a> {
    pub(crate) fn raw(&self, k: Key) -> Option<&'a RawValue> {
        self.fields.get(k as usize).copied().flatten()
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
        let r = self.raw(k).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })?;
        if !r.get().starts_with('[') {
            return Ok(vec![self.str(k)?.into_owned()]);
        }
        let list: Vec<String> =
            serde_json::from_str(r.get()).map_err(|_| ProtocolError::InvalidField {
                field: k.name(),
                detail: "expected a string or a list of strings",
            })?;
        if list.len() > max {
            return Err(ProtocolError::InvalidField {
                field: k.name(),
                detail: "too many entries",
            });
        }
        Ok(list)
    }

    /// An optional field that is a list of at most `max` strings (absent:
    /// `None`).
    pub(crate) fn opt_str_list(
        &self,
        k: Key,
        max: usize,
    ) -> Result<Option<Vec<String>>, ProtocolError> {
        let Some(r) = self.raw(k) else {
            return Ok(None);
        };
        let list: Vec<String> =
            serde_json::from_str(r.get()).map_err(|_| ProtocolError::InvalidField {
                field: k.name(),
                detail: "expected a list of strings",
            })?;
        if list.len() > max {
            return Err(ProtocolError::InvalidField {
                field: k.name(),
                detail: "too many entries",
            });
        }
        Ok(Some(list))
    }

    /// A required non-negative integer that fits in 64 bits.
    pub(crate) fn u64(&self, k: Key) -> Result<u64, ProtocolError> {
        if let (Key::Id, Some(id)) = (k, self.known_id) {
            return Ok(id);
        }
        let r = self.raw(k).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })?;
        serde_json::from_str::<u64>(r.get()).map_err(|_| ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected an integer in 0..2^64",
        })
    }

    /// A required boolean.
    pub(crate) fn bool(&self, k: Key) -> Result<bool, ProtocolError> {
        let r = self.raw(k).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })?;
        serde_json::from_str::<bool>(r.get()).map_err(|_| ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected a boolean",
        })
    }

    /// A required array of u64.
    pub(crate) fn u64_list(&self, k: Key) -> Result<Vec<u64>, ProtocolError> {
        let r = self.raw(k).ok_or(ProtocolError::InvalidField {
            field: k.name(),
            detail: "missing",
        })?;
        let v: Vec<u64> =
            serde_json::from_str(r.get()).map_err(|_| ProtocolError::InvalidField {
                field: k.name(),
                detail: "expected an array of integers",
            })?;
        if v.len() > 16 {
            return Err(ProtocolError::InvalidField {
                field: k.name(),
                detail: "too many entries",
            });
        }
        Ok(v)
    }

    /// A required base64 field decoding to exactly `N` bytes.
    pub(crate) fn b64<const N: usize>(&self, k: Key) -> Result<[u8; N], ProtocolError> {
        use base64::Engine as _;
        let s = self.str(k)?;
        let bad = ProtocolError::InvalidField {
            field: k.name(),
            detail: "expected base64 of the right length",
        };
        let v = crate::crypto::B64
            .decode(s.as_bytes())
            .map_err(|_| bad.clone())?;
        v.try_into().map_err(|_| bad)
    }

    /// The `t` field, truncated for error messages.
    pub(crate) fn frame_type(&self) -> Result<Cow<'a, str>, ProtocolError> {
        if let Some(t) = self.known_t {
            return Ok(Cow::Borrowed(t));
        }
        self.str(Key::T)
    }
}

/// Truncates a peer-supplied string for inclusion in an error.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

/// Finds the payload's top-level `"op"` string: the value of the first
/// top-level `op` key, if it is a string. `None` for non-objects, objects
/// without `op`, and an `op` that is not a string.
///
/// `body` is already validated JSON (a `RawValue`), so this is a skimmer,
/// not a parser: it walks the top-level keys and skips values by bracket
/// depth, with memchr over string contents. Escaped keys and values are
/// decoded by serde_json. A serde-based probe in the tests is the reference
/// it is property-tested against.
pub(crate) fn probe_op(body: &RawValue) -> Option<Op> {
    let s = body.get().as_bytes();
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    loop {
        i = skip_ws(s, i);
        if s.get(i) != Some(&b'"') {
            return None; // `}`: no op
        }
        let key_end = string_end(s, i)?;
        let key = s.get(i..key_end)?;
        i = skip_ws(s, key_end);
        i = skip_ws(s, i + 1); // past ':'
        let is_op = key == b"\"op\""
            || (key.contains(&b'\\')
                && serde_json::from_slice::<Cow<'_, str>>(key).is_ok_and(|k| k == "op"));
        if is_op {
            if s.get(i) != Some(&b'"') {
                return None;
            }
            let end = string_end(s, i)?;
            let v = s.get(i..end)?;
            return match v.contains(&b'\\') {
                // `body` is a `str` and the quotes are ASCII, so this slice
                // is on char boundaries: no second UTF-8 check.
                false => body.get().get(i + 1..end - 1).map(Op::new),
                true => serde_json::from_slice::<String>(v).ok().map(Op::from),
            };
        }
        i = skip_value(s, i)?;
        i = skip_ws(s, i);
        if s.get(i) != Some(&b',') {
            return None;
        }
        i += 1;
    }
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `s[i]` is the opening quote of a valid string; returns the index just
/// past its closing quote.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', s.get(j..)?)?;
        if s.get(k) == Some(&b'"') {
            return Some(k + 1);
        }
        j = k + 2; // skip the escaped character
    }
}

/// Skips one valid JSON value starting at `s[i]`; returns the index after it.
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            // Linear: one pass over structural bytes, memchr inside strings.
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s.get(j)? {
                    b'"' => j = string_end(s, j)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j += 1;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                    _ => j += 1,
                }
            }
        }
        _ => {
            // number, true, false, null: up to the next delimiter
            let mut j = i;
            while !matches!(
                s.get(j),
                None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            ) {
                j += 1;
            }
            Some(j)
        }
    }
}

/// The serde-based op probe: the reference for [`probe_op`].
#[cfg(test)]
fn probe_op_serde(body: &RawValue) -> Option<String> {
    use serde::de;
    if !body.get().starts_with('{') {
        return None;
    }
    struct OpVisitor;
    impl<'de> Visitor<'de> for OpVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut op = None;
            let mut seen = false;
            while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                if k == "op" && !seen {
                    seen = true;
                    op = map.next_value::<OpValue>()?.0;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(op)
        }
    }
    struct OpValue(Option<String>);
    impl<'de> de::Deserialize<'de> for OpValue {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = OpValue;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("any value")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<OpValue, E> {
                    Ok(OpValue(Some(v.to_owned())))
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<OpValue, E> {
                    Ok(OpValue(Some(v.to_owned())))
                }
                fn visit_string<E: de::Error>(self, v: String) -> Result<OpValue, E> {
                    Ok(OpValue(Some(v)))
                }
                fn visit_bool<E: de::Error>(self, _: bool) -> Result<OpValue, E> {
                    Ok(OpValue(None))
                }
                fn visit_i64<E: de::Error>(self, _: i64) -> Result<OpValue, E> {
                    Ok(OpValue(None))
                }
                fn visit_u64<E: de::Error>(self, _: u64) -> Result<OpValue, E> {
                    Ok(OpValue(None))
                }
                fn visit_f64<E: de::Error>(self, _: f64) -> Result<OpValue, E> {
                    Ok(OpValue(None))
                }
                fn visit_unit<E: de::Error>(self) -> Result<OpValue, E> {
                    Ok(OpValue(None))
                }
                fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OpValue, A::Error> {
                    while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(OpValue(None))
                }
                fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<OpValue, A::Error> {
                    while s.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(OpValue(None))
                }
            }
            d.deserialize_any(V)
        }
    }
    let mut de = serde_json::Deserializer::from_str(body.get());
    de.deserialize_map(OpVisitor).ok().flatten()
}

/// Appends a JSON string literal (with escapes) to `out`.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_fields_and_rejects_duplicates() {
        let env = parse(br#"{"t":"req","id":5,"d":{"a":[1,2]},"x":1}"#).unwrap();
        assert_eq!(env.frame_type().unwrap(), "req");
        assert_eq!(env.u64(Key::Id).unwrap(), 5);
        assert_eq!(env.raw(Key::D).unwrap().get(), r#"{"a":[1,2]}"#);
        assert_eq!(
            parse(br#"{"t":"req","id":5,"id":6}"#).unwrap_err(),
            ProtocolError::DuplicateField { field: "id" }
        );
    }

    #[test]
    fn ids_must_be_u64() {
        for bad in ["1.5", "-1", "\"7\"", "18446744073709551616", "1e3", "null"] {
            let line = format!(r#"{{"t":"req","id":{bad},"d":1}}"#);
            let env = parse(line.as_bytes()).unwrap();
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
            let got = parse(line).unwrap_err();
            let ok = match want {
                "obj" => got == ProtocolError::NotAnObject,
                "json" => matches!(got, ProtocolError::InvalidJson { .. }),
                _ => got == ProtocolError::InvalidUtf8,
            };
            assert!(ok, "{line:?} -> {got:?}");
        }
    }

    #[test]
    fn fast_op_probe_agrees_with_serde() {
        let cases = [
            r#"{"op":"a"}"#,
            r#"{ "op" : "a b" , "x":1}"#,
            r#"{"a":{"op":"no","b":[1,{"op":"x"}]},"op":"yes"}"#,
            r#"{"a":"}\"{[","op":"q\"uote"}"#,
            r#"{"\u006fp":"escaped-key"}"#,
            r#"{"op":5,"op":"second"}"#,
            r#"{"op":null}"#,
            r#"{"x":[[[]]],"y":-1.5e3,"z":true,"w":null,"op":"late"}"#,
            r#"{}"#,
            r#"[{"op":"x"}]"#,
            r#""op""#,
            r#"{"op":"\ud83d\ude00"}"#,
            "{\n\t\"op\"\r\n:\n\"ws\"}",
        ];
        for c in cases {
            let r = RawValue::from_string(c.to_owned()).unwrap();
            assert_eq!(probe_op(&r).map(String::from), probe_op_serde(&r), "{c}");
        }
    }

    proptest::proptest! {
        #[test]
        fn fast_op_probe_agrees_with_serde_on_random_json(v in json_value(3)) {
            let text = serde_json::to_string(&v).unwrap();
            let r = RawValue::from_string(text.clone()).unwrap();
            proptest::prop_assert_eq!(probe_op(&r).map(String::from), probe_op_serde(&r), "{}", text);
            let pretty = RawValue::from_string(serde_json::to_string_pretty(&v).unwrap()).unwrap();
            proptest::prop_assert_eq!(probe_op(&pretty).map(String::from), probe_op_serde(&pretty));
        }
    }

    fn json_value(depth: u32) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[a-z\"\\{}\\[\\] ]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(depth, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
                proptest::collection::vec((prop_oneof!["op", "[a-z]{1,3}"], inner), 0..5)
                    .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn op_probe() {
        let r = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        assert_eq!(
            probe_op(&r(r#"{"x":{"op":"no"},"op":"yes"}"#)).as_deref(),
            Some("yes")
        );
        assert_eq!(probe_op(&r(r#"{"op":5}"#)), None);
        assert_eq!(probe_op(&r(r#"{"op":"a\nb"}"#)).as_deref(), Some("a\nb"));
        assert_eq!(probe_op(&r(r#"[1]"#)), None);
    }

    /// What a parse gave, comparable across the two paths.
    fn outcome(line: &[u8], fast: bool) -> String {
        let r = if fast {
            parse(line)
        } else {
            parse_general(line)
        };
        match r {
            Ok(env) => format!(
                "t={:?} id={:?} d={:?} err={:?}",
                env.frame_type(),
                env.u64(Key::Id),
                env.raw(Key::D).map(RawValue::get),
                env.raw(Key::Err).map(RawValue::get)
            ),
            Err(e) => format!("error {e:?}"),
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
        assert!(parse_canonical(br#"{"t":"req","id":9,"d":{"op":"a"}}"#).is_some());
        assert!(parse_canonical(br#"{"t":"req","id":09,"d":{}}"#).is_none());
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn canonical_fast_path_agrees_on_random_frames(
            t in proptest::sample::select(vec!["msg", "req", "res", "ping"]),
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
        }
    }
}
