//! Frame envelopes: parsing with one pass over the line (payloads are kept
//! as borrowed raw JSON), and encoding straight into the output buffer.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
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

/// The general envelope parser. Every member's value is taken as raw JSON
/// and its nesting depth checked ([`depth_within`]), since serde_json
/// checks no depth on values it skips or borrows.
struct EnvelopeVisitor {
    max_depth: usize,
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
            let key = KEYS.iter().find(|(n, _)| *n == k).map(|(_, key)| *key);
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
pub(crate) fn parse(line: &[u8], max_depth: usize) -> Result<Envelope<'_>, ProtocolError> {
    match parse_canonical(line, max_depth) {
        Some(env) => Ok(env),
        None => parse_general(line, max_depth),
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
fn parse_canonical(line: &[u8], max_depth: usize) -> Option<Envelope<'_>> {
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
    if !depth_within(d.get().as_bytes(), max_depth) {
        return None;
    }
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
fn parse_general(line: &[u8], max_depth: usize) -> Result<Envelope<'_>, ProtocolError> {
    let text = std::str::from_utf8(line).map_err(|_| ProtocolError::InvalidUtf8)?;
    let mut de = serde_json::Deserializer::from_str(text);
    let (env, deep) = match (&mut de).deserialize_map(EnvelopeVisitor { max_depth }) {
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

/// The nesting depth of one valid JSON value: 0 for a scalar, 1 for `[]`,
/// `[1]` or `{"a":1}`, 2 for `[[]]`; it stops as soon as the depth passes
/// `limit` and then gives `limit + 1`.
///
/// `s` must be valid JSON (serde_json validated it, or we hold it as a
/// `RawValue`), so this is a skimmer, not a parser: it counts brackets
/// outside strings and skips string contents a word at a time (an escaped
/// quote never ends one). It never recurses, so no depth can overflow its
/// stack. The slow path of [`depth_within`], which answers most values
/// without it.
pub(crate) fn depth(s: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'"' => {
                let Some((end, _)) = string_end(s, i) else {
                    break; // not valid JSON: not ours to judge here
                };
                i = end;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    max = depth;
                    if depth > limit {
                        return max;
                    }
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

/// Whether a valid JSON value nests at most `limit` arrays and objects
/// (PROTOCOL.md §4.3), in the cheapest way that answers: a value of `2d`
/// bytes or fewer cannot be deeper than `d` (each level takes two
/// brackets), nor one with at most `limit` opening brackets in all (a
/// memchr count); only other values are measured by [`depth`].
pub(crate) fn depth_within(s: &[u8], limit: usize) -> bool {
    s.len() / 2 <= limit
        || memchr::memchr2_iter(b'[', b'{', s).nth(limit).is_none()
        || depth(s, limit) <= limit
}

/// A body with `op` more than once at its top level (PROTOCOL.md §11.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DuplicateOp;

/// Whether a body is an object with `op` more than once at its top level
/// (see [`body_op`]).
pub(crate) fn has_duplicate_op(body: &RawValue) -> bool {
    body_op(body).is_err()
}

/// Finds the body's op (PROTOCOL.md §11.1): the value of its top-level
/// member `op`, if it is an object with one whose value is a string.
/// `None` for non-objects, objects without `op`, and an `op` that is not a
/// string; [`DuplicateOp`] for an object with `op` more than once (names
/// compared after unescaping, whatever the values).
///
/// `body` is already validated JSON (a `RawValue`), so this is a skimmer,
/// not a parser: it walks the top-level members and skips values by
/// bracket depth, string contents a word at a time. A member name `op`
/// needs a `p` or an escape, so once the first `op` is found, a rest
/// without either holds no second one (one memchr pass): the walk usually
/// stops there, as the op comes first in most bodies; and a body whose
/// first member is not `op` is looked at the same way for any `op`. Escaped names and values are decoded
/// by serde_json. A serde-based probe in the tests is the reference it is
/// property-tested against.
pub(crate) fn body_op(body: &RawValue) -> Result<Option<Op>, DuplicateOp> {
    let text = body.get();
    let s = text.as_bytes();
    let mut i = skip_ws(s, 0);
    if s.get(i) != Some(&b'{') {
        return Ok(None);
    }
    i += 1;
    let mut op: Option<Option<Op>> = None;
    // Whether what is left may hold an `op` name (looked at once, at the
    // first member that is not `op`).
    let mut may_hold_op = None;
    loop {
        i = skip_ws(s, i);
        if s.get(i) != Some(&b'"') {
            break; // `}`: the end
        }
        let Some((name_end, name_escaped)) = string_end(s, i) else {
            break;
        };
        let is_op = s
            .get(i..name_end)
            .is_some_and(|n| is_op_name(n, name_escaped));
        i = skip_ws(s, name_end);
        i = skip_ws(s, i + 1); // past ':'
        let value_end = if is_op {
            if op.is_some() {
                return Err(DuplicateOp);
            }
            let string = match s.get(i) {
                Some(b'"') => string_end(s, i),
                _ => None,
            };
            match string {
                Some((end, escaped)) => {
                    op = Some(match escaped {
                        // `body` is a `str` and the quotes are ASCII, so
                        // this slice is on char boundaries: no second UTF-8
                        // check.
                        false => text.get(i + 1..end - 1).map(Op::new),
                        true => text
                            .get(i..end)
                            .and_then(|v| serde_json::from_str::<String>(v).ok())
                            .map(Op::from),
                    });
                    Some(end)
                }
                None => {
                    op = Some(None); // not a string: no op, but still one
                    skip_value(s, i)
                }
            }
        } else {
            if op.is_none()
                && !*may_hold_op.get_or_insert_with(|| {
                    s.get(i..)
                        .is_some_and(|rest| memchr::memchr2(b'p', b'\\', rest).is_some())
                })
            {
                break; // no `op` at all
            }
            skip_value(s, i)
        };
        let Some(next) = value_end else {
            break;
        };
        i = skip_ws(s, next);
        if op.is_some()
            && s.get(i..)
                .is_none_or(|rest| memchr::memchr2(b'p', b'\\', rest).is_none())
        {
            break; // no second `op` can follow
        }
        if s.get(i) != Some(&b',') {
            break;
        }
        i += 1;
    }
    Ok(op.flatten())
}

/// Whether a member name (a JSON string, quotes included) is `op`, also
/// when written with escapes (`"\u006fp"`, at most 14 bytes).
fn is_op_name(name: &[u8], escaped: bool) -> bool {
    match name.len() {
        4 => name == b"\"op\"",
        7..=14 if escaped => serde_json::from_slice::<Cow<'_, str>>(name).is_ok_and(|k| k == "op"),
        _ => false,
    }
}

/// The body's op ignoring a second one: [`body_op`] for the tests'
/// comparison with the serde reference.
#[cfg(test)]
fn probe_op(body: &RawValue) -> Option<Op> {
    body_op(body).unwrap_or_else(|DuplicateOp| None)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while matches!(s.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// `s[i]` is the opening quote of a valid string; returns the index just
/// past its closing quote, and whether the string holds an escape.
fn string_end(s: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut j = i + 1;
    let mut escaped = false;
    loop {
        let k = quote_or_backslash(s, j)?;
        if s.get(k) == Some(&b'"') {
            return Some((k + 1, escaped));
        }
        escaped = true;
        j = k + 2; // skip the escaped character
    }
}

/// The index of the first `"` or `\` at or after `s[j]`. Most strings in
/// bodies are short (names, ops, small values), where memchr's set-up
/// costs more than the search, so the first 32 bytes are searched a word
/// (8 bytes) at a time, the rest by memchr.
fn quote_or_backslash(s: &[u8], mut j: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let end = j.saturating_add(32);
    while j < end {
        let Some(word) = s.get(j..j + 8).and_then(|w| <[u8; 8]>::try_from(w).ok()) else {
            // Fewer than 8 bytes left.
            let k = s.get(j..)?.iter().position(|&c| c == b'"' || c == b'\\')?;
            return Some(j + k);
        };
        let w = u64::from_le_bytes(word);
        // A byte of `x` is zero exactly where `w` has the byte sought; the
        // lowest set high bit of `(x - LO) & !x & HI` is the first such
        // byte (bits above it may be borrows, never below).
        let q = w ^ (LO * u64::from(b'"'));
        let b = w ^ (LO * u64::from(b'\\'));
        let m = ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI;
        if m != 0 {
            return Some(j + (m.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    memchr::memchr2(b'"', b'\\', s.get(j..)?).map(|k| j + k)
}

/// Skips one valid JSON value starting at `s[i]`; returns the index after it.
fn skip_value(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i).map(|(end, _)| end),
        b'{' | b'[' => {
            // Linear: one pass over structural bytes, memchr inside strings.
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s.get(j)? {
                    b'"' => j = string_end(s, j)?.0,
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
    use serde::de::{self, IgnoredAny};
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

    const D: usize = crate::DEFAULT_MAX_DEPTH;

    #[test]
    fn parses_known_fields_and_rejects_duplicates() {
        let env = parse(br#"{"t":"req","id":5,"d":{"a":[1,2]},"x":1}"#, D).unwrap();
        assert_eq!(env.frame_type().unwrap(), "req");
        assert_eq!(env.u64(Key::Id).unwrap(), 5);
        assert_eq!(env.raw(Key::D).unwrap().get(), r#"{"a":[1,2]}"#);
        assert_eq!(
            parse(br#"{"t":"req","id":5,"id":6}"#, D).unwrap_err(),
            ProtocolError::DuplicateField { field: "id" }
        );
    }

    #[test]
    fn ids_must_be_u64() {
        for bad in ["1.5", "-1", "\"7\"", "18446744073709551616", "1e3", "null"] {
            let line = format!(r#"{{"t":"req","id":{bad},"d":1}}"#);
            let env = parse(line.as_bytes(), D).unwrap();
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
            let got = parse(line, D).unwrap_err();
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
        outcome_at(line, fast, D)
    }

    /// [`outcome`] with a depth limit.
    fn outcome_at(line: &[u8], fast: bool, max_depth: usize) -> String {
        let r = if fast {
            parse(line, max_depth)
        } else {
            parse_general(line, max_depth)
        };
        match r {
            Ok(env) => format!(
                "t={:?} id={:?} d={:?} err={:?} op={:?}",
                env.frame_type(),
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

    proptest::proptest! {
        #[test]
        fn word_search_finds_the_first_quote_or_backslash(
            bytes in proptest::collection::vec(proptest::prop_oneof![
                proptest::num::u8::ANY,
                proptest::strategy::Just(b'"'),
                proptest::strategy::Just(b'\\'),
                proptest::strategy::Just(0x80u8),
                proptest::strategy::Just(0x21u8),
                proptest::strategy::Just(0x5du8),
            ], 0..80),
            filler in 0usize..80,
            from in 0usize..90,
        ) {
            // Long runs without a match, then anything.
            let mut s = vec![b'a'; filler];
            s.extend(bytes);
            let want = s.get(from..).and_then(|t| t.iter().position(|&c| c == b'"' || c == b'\\')).map(|k| from + k);
            proptest::prop_assert_eq!(quote_or_backslash(&s, from), want);
        }
    }

    #[test]
    fn depth_strings_and_limits() {
        let depth = |s: &str, limit| depth(s.as_bytes(), limit);
        assert_eq!(depth("1", 9), 0);
        assert_eq!(depth(r#""[[[""#, 9), 0);
        assert_eq!(depth("[]", 9), 1);
        assert_eq!(depth(r#"{"a":[1,{"b":[]}],"c":[]}"#, 9), 4);
        assert_eq!(depth(r#"["\"[", "\\", "]]]"]"#, 9), 1);
        assert_eq!(depth(r#"[["\\\"{{{"]]"#, 9), 2);
        // It stops one past the limit.
        let n = 1_000_000;
        let deep = format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert_eq!(depth(&deep, 127), 128);
        assert_eq!(depth(&deep, usize::MAX), n);
        // The shortcuts of `depth_within` agree with `depth`.
        for n in [0, 1, 2, 3, 60, 61, 62, 200] {
            let v = format!("{}{}", "[".repeat(n), "]".repeat(n));
            let padded = format!(r#"[{v},"{}"]"#, "{[".repeat(100));
            for limit in [0, 1, 2, 3, 61, 127] {
                assert_eq!(depth_within(v.as_bytes(), limit), n <= limit, "{n} {limit}");
                assert_eq!(
                    depth_within(padded.as_bytes(), limit),
                    n < limit,
                    "{n} {limit}"
                );
            }
        }
    }

    /// The reference for [`scan`], by serde: the depth and the top-level
    /// `op` members, from a visitor that sees every member (duplicates
    /// too, which `Value` would merge).
    fn scan_serde(text: &str) -> (usize, u8) {
        /// A value's depth, and its `op` members if it is an object.
        struct Seen(usize, u8);
        impl<'de> serde::Deserialize<'de> for Seen {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(SeenVisitor)
            }
        }
        struct SeenVisitor;
        impl<'de> Visitor<'de> for SeenVisitor {
            type Value = Seen;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("anything")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Seen, A::Error> {
                let (mut depth, mut ops) = (0, 0u8);
                while let Some(k) = map.next_key::<Cow<'de, str>>()? {
                    depth = depth.max(map.next_value::<Seen>()?.0);
                    if k == "op" {
                        ops = (ops + 1).min(2);
                    }
                }
                Ok(Seen(depth + 1, ops))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Seen, A::Error> {
                let mut depth = 0;
                while let Some(e) = s.next_element::<Seen>()? {
                    depth = depth.max(e.0);
                }
                Ok(Seen(depth + 1, 0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
            fn visit_unit<E>(self) -> Result<Seen, E> {
                Ok(Seen(0, 0))
            }
        }
        let Seen(depth, ops) = serde_json::from_str(text).unwrap();
        (depth, ops)
    }

    /// JSON text of an object whose member names may repeat (`Value`
    /// cannot hold that), `op` among them, plain or escaped.
    fn object_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let name = prop_oneof![
            Just(r#""op""#.to_owned()),
            Just(r#""\u006fp""#.to_owned()),
            Just(r#""o\u0070""#.to_owned()),
            Just(r#""opp""#.to_owned()),
            Just(r#""\"op""#.to_owned()),
            "[a-z]{1,3}".prop_map(|k| format!("\"{k}\"")),
        ];
        let value = json_value(3).prop_map(|v| serde_json::to_string_pretty(&v).unwrap());
        (
            proptest::collection::vec((name, value), 0..6),
            any::<bool>(),
        )
            .prop_map(|(kv, ws)| {
                let sep = if ws { " \n\t" } else { "" };
                let members: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{sep}{k}{sep}:{sep}{v}{sep}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            })
    }

    proptest::proptest! {
        #[test]
        fn depth_and_ops_agree_with_serde(v in json_value(4), obj in object_text()) {
            for text in [serde_json::to_string(&v).unwrap(), serde_json::to_string_pretty(&v).unwrap(), obj] {
                let (want_depth, ops) = scan_serde(&text);
                proptest::prop_assert_eq!(depth(text.as_bytes(), usize::MAX), want_depth, "{}", text);
                // With a limit it stops one past it, or gives the depth.
                proptest::prop_assert_eq!(depth(text.as_bytes(), 2), want_depth.min(3));
                for limit in 0..6 {
                    proptest::prop_assert_eq!(depth_within(text.as_bytes(), limit), want_depth <= limit);
                }
                let r = RawValue::from_string(text.clone()).unwrap();
                let want = if ops > 1 { Err(DuplicateOp) } else { Ok(probe_op_serde(&r)) };
                proptest::prop_assert_eq!(body_op(&r).map(|o| o.map(String::from)), want, "{}", text);
                proptest::prop_assert_eq!(has_duplicate_op(&r), ops > 1);
            }
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
        assert!(parse_canonical(br#"{"t":"req","id":9,"d":{"op":"a"}}"#, D).is_some());
        assert!(parse_canonical(br#"{"t":"req","id":09,"d":{}}"#, D).is_none());
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
            proptest::prop_assert_eq!(outcome_at(&bytes, true, 1), outcome_at(&bytes, false, 1));
        }
    }
}
