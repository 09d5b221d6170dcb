//! Skimmers over JSON text already validated: a value's nesting depth and a
//! body's top-level `op`, each in one pass without building a value.

use std::borrow::Cow;

use serde_json::value::RawValue;

use crate::event::Op;

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
/// first member is not `op` is looked at the same way for any `op`.
/// Escaped names and values are decoded by serde_json. A serde-based probe
/// in the tests is the reference it is property-tested against.
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
#[cfg(test)]
pub(super) mod tests {
    use std::fmt;

    use serde::de::{Deserializer, MapAccess, Visitor};

    use super::*;

    /// The body's op ignoring a second one: [`body_op`] for the tests'
    /// comparison with the serde reference.
    #[cfg(test)]
    fn probe_op(body: &RawValue) -> Option<Op> {
        body_op(body).unwrap_or_else(|DuplicateOp| None)
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
                    fn visit_seq<A: de::SeqAccess<'de>>(
                        self,
                        mut s: A,
                    ) -> Result<OpValue, A::Error> {
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

    pub(in crate::wire) fn json_value(
        depth: u32,
    ) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
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
}
