//! The arguments convention of message and request bodies (PROTOCOL.md
//! §11.5): how a typed value travels beside the body's `op`.
//!
//! A body names its operation in `op`; its **arguments** are:
//!
//! - the value of `args`, when `op` and `args` are the body's only members
//!   (`{"op":"neg","args":5}` → `5`): any JSON value, primitives and arrays
//!   included;
//! - otherwise, the body without its `op` member (`{"op":"add","a":2,"b":3}`
//!   → `{"a":2,"b":3}`): the flat shape zetta-rpc and iris-rpc send;
//! - a body without `op` is its own arguments.
//!
//! [`RawJson::call`] builds the body that decodes back to the same value:
//! a JSON object is flattened beside `op` unless it has a member named `op`
//! or consists of `args` alone (those are sent as `{"op":…,"args":…}`), and
//! any other value goes in `args`. Members keep their order and their exact
//! JSON text.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::RawJson;

/// The members of a JSON object in their order, values as raw JSON.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(4).min(64));
                while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Appends `s` to `out` as a JSON string.
fn push_key(out: &mut String, s: &str) -> Result<(), serde_json::Error> {
    out.push_str(&serde_json::to_string(s)?);
    Ok(())
}

impl RawJson {
    /// Deserializes this body's **arguments** (the module docs of
    /// [`args`](crate::args) give the rule): the `args` member of an
    /// `{"op":…,"args":…}` body, otherwise the body without `op`.
    ///
    /// ```
    /// use jsonlink_proto::RawJson;
    /// let neg = RawJson::from_json(r#"{"op":"neg","args":5}"#).unwrap();
    /// assert_eq!(neg.args::<i64>().unwrap(), 5);
    /// let add = RawJson::from_json(r#"{"op":"add","a":2,"b":3}"#).unwrap();
    /// let v: std::collections::BTreeMap<String, i64> = add.args().unwrap();
    /// assert_eq!(v.len(), 2);
    /// ```
    pub fn args<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let text = self.get();
        if !text.trim_start().starts_with('{') {
            return serde_json::from_str(text);
        }
        let Members(members) = serde_json::from_str(text)?;
        let Some(op_at) = members.iter().position(|(k, _)| k == "op") else {
            return serde_json::from_str(text);
        };
        if let [(a, x), (b, y)] = members.as_slice() {
            if a == "args" && b == "op" {
                return serde_json::from_str(x.get());
            }
            if a == "op" && b == "args" {
                return serde_json::from_str(y.get());
            }
        }
        let mut rest = String::with_capacity(text.len());
        rest.push('{');
        for (i, (k, v)) in members.iter().enumerate() {
            if i == op_at {
                continue;
            }
            if rest.len() > 1 {
                rest.push(',');
            }
            push_key(&mut rest, k)?;
            rest.push(':');
            rest.push_str(v.get());
        }
        rest.push('}');
        serde_json::from_str(&rest)
    }

    /// Builds the body `{"op": op, <args>}` whose [`args`](Self::args) are
    /// `args`: an object is flattened beside `op` (zetta-rpc's and
    /// iris-rpc's shape), unless it has a member `op` or only a member
    /// `args`; those and every other value are sent as
    /// `{"op": op, "args": args}`.
    ///
    /// ```
    /// use jsonlink_proto::RawJson;
    /// assert_eq!(RawJson::call("neg", &5).unwrap().get(), r#"{"op":"neg","args":5}"#);
    /// let add = serde_json::json!({"a": 2, "b": 3});
    /// assert_eq!(RawJson::call("add", &add).unwrap().get(), r#"{"op":"add","a":2,"b":3}"#);
    /// ```
    pub fn call<T: Serialize + ?Sized>(op: &str, args: &T) -> Result<Self, serde_json::Error> {
        let value = serde_json::value::to_raw_value(args)?;
        let text = value.get();
        let mut body = String::with_capacity(text.len() + op.len() + 16);
        body.push_str("{\"op\":");
        push_key(&mut body, op)?;
        let flat = if text.starts_with('{') {
            let Members(members) = serde_json::from_str(text)?;
            let clash = members.iter().any(|(k, _)| k == "op")
                || matches!(members.as_slice(), [(k, _)] if k == "args");
            (!clash).then_some(members)
        } else {
            None
        };
        match flat {
            Some(members) => {
                for (k, v) in &members {
                    body.push(',');
                    push_key(&mut body, k)?;
                    body.push(':');
                    body.push_str(v.get());
                }
                body.push('}');
            }
            None => {
                body.push_str(",\"args\":");
                body.push_str(text);
                body.push('}');
            }
        }
        Self::from_json(&body)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::{Value, json};

    use crate::RawJson;

    fn body(s: &str) -> RawJson {
        RawJson::from_json(s).unwrap()
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Add {
        a: i64,
        b: i64,
    }

    #[test]
    fn primitives_travel_in_args() {
        assert_eq!(body(r#"{"op":"neg","args":5}"#).args::<i64>().unwrap(), 5);
        assert_eq!(
            body(r#"{"args":"x","op":"neg"}"#).args::<String>().unwrap(),
            "x"
        );
        assert_eq!(
            body(r#"{"op":"sum","args":[1,2]}"#)
                .args::<Vec<i64>>()
                .unwrap(),
            [1, 2]
        );
    }

    #[test]
    fn flat_bodies_lose_only_op_so_strict_structs_decode() {
        let add: Add = body(r#"{"op":"add","a":2,"b":3}"#).args().unwrap();
        assert_eq!(add, Add { a: 2, b: 3 });
        let add: Add = body(r#"{"a":2,"op":"add","b":3}"#).args().unwrap();
        assert_eq!(add, Add { a: 2, b: 3 });
        // An unknown member still fails a deny_unknown_fields struct.
        assert!(
            body(r#"{"op":"add","a":2,"b":3,"c":4}"#)
                .args::<Add>()
                .is_err()
        );
        // No op: the body is its own arguments.
        assert_eq!(
            body(r#"{"a":1,"b":2}"#).args::<Add>().unwrap(),
            Add { a: 1, b: 2 }
        );
    }

    #[test]
    fn flattened_members_keep_their_exact_text_and_order() {
        let v: Box<serde_json::value::RawValue> =
            body(r#"{"op":"x","n":1.0e400,"s":"\u00e9","z":-0}"#)
                .args()
                .unwrap();
        assert_eq!(v.get(), r#"{"n":1.0e400,"s":"\u00e9","z":-0}"#);
        let v: Box<serde_json::value::RawValue> = body(r#"{"op":"x","k\"q":1}"#).args().unwrap();
        assert_eq!(v.get(), r#"{"k\"q":1}"#);
    }

    #[test]
    fn call_round_trips_every_shape() {
        let cases = [
            json!(5),
            json!("s"),
            json!(null),
            json!([1, 2]),
            json!({}),
            json!({"a": 1}),
            json!({"args": 1}),
            json!({"args": 1, "b": 2}),
            json!({"op": "inner", "x": 1}),
            json!({"a": {"op": "nested"}}),
        ];
        for args in cases {
            let b = RawJson::call("go", &args).unwrap();
            assert_eq!(b.parse::<Value>().unwrap()["op"], "go", "{}", b.get());
            assert_eq!(b.args::<Value>().unwrap(), args, "{}", b.get());
        }
        let b = RawJson::call("add", &Add { a: 2, b: 3 }).unwrap();
        assert_eq!(b.get(), r#"{"op":"add","a":2,"b":3}"#);
        assert_eq!(b.args::<Add>().unwrap(), Add { a: 2, b: 3 });
        let b = RawJson::call("q\"uote", &1).unwrap();
        assert_eq!(b.parse::<Value>().unwrap()["op"], "q\"uote");
    }

    /// The table of PROTOCOL.md §11.5.
    #[test]
    fn the_protocol_tables_examples_hold() {
        let table = [
            (r#"{"op":"neg","args":5}"#, "5"),
            (r#"{"op":"add","a":2,"b":3}"#, r#"{"a":2,"b":3}"#),
            (
                r#"{"op":"add","args":{"a":2},"b":3}"#,
                r#"{"args":{"a":2},"b":3}"#,
            ),
            (
                r#"{"op":"wrap","args":{"op":"inner"}}"#,
                r#"{"op":"inner"}"#,
            ),
            (r#"{"op":"ping"}"#, "{}"),
            ("[1,2]", "[1,2]"),
        ];
        for (b, args) in table {
            let got: Box<serde_json::value::RawValue> = body(b).args().unwrap();
            assert_eq!(got.get(), args, "{b}");
        }
    }

    #[test]
    fn a_body_that_is_not_an_object_is_its_own_arguments() {
        assert_eq!(body("[1,2]").args::<Vec<i64>>().unwrap(), [1, 2]);
        assert_eq!(body("7").args::<i64>().unwrap(), 7);
    }
}
