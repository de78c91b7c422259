//! Parsing a success body, with explicit limits, and keeping what can be kept of a listing that
//! holds one value the parser rejects.
//!
//! `serde_json` refuses nesting deeper than 128 levels and strings holding a lone UTF-16
//! surrogate (`"\ud800"`), both valid for the platform. Such a body is not a transient failure
//! (the same bytes come back on every retry), so it is permanent for that object; and one bad
//! element of a listing (`items`, `objects`, `events`) must not hide the others. Each element of
//! a top-level array is parsed on its own; one that fails is replaced by a stub keeping its
//! `id`, `created_at`, `user_id` and `type` (read while skipping the rest, which has no depth
//! limit and does not validate escapes) and an `unreadable` field saying why, so a consumer can
//! skip it in order.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The largest success body parsed; a larger one is refused as unparseable.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The top-level field a salvaged stub carries (the harness skips such an item with a code).
pub const UNREADABLE_FIELD: &str = "unreadable";

/// Parses a success body: the whole of it, or, when that fails, member by member and the
/// elements of top-level arrays one by one. `Err` says why nothing could be kept.
pub fn parse_body(bytes: &[u8]) -> Result<Value, String> {
    if bytes.len() > MAX_BODY_BYTES {
        return Err(format!(
            "the body is {} bytes, over the {MAX_BODY_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let whole = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    salvage_object(bytes).ok_or_else(|| format!("the body cannot be parsed: {whole}"))
}

/// The keys kept from an element that cannot be parsed whole.
#[derive(Deserialize, Default)]
struct Keys {
    id: Option<String>,
    created_at: Option<String>,
    user_id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn salvage_object(bytes: &[u8]) -> Option<Value> {
    let mut s = Scanner { b: bytes, i: 0 };
    s.ws();
    s.eat(b'{')?;
    let mut out = Map::new();
    s.ws();
    if s.eat(b'}').is_some() {
        return Some(Value::Object(out));
    }
    loop {
        s.ws();
        let key_range = s.value()?;
        let key: String = serde_json::from_slice(&bytes[key_range]).ok()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        let range = s.value()?;
        let raw = &bytes[range];
        let value = match serde_json::from_slice::<Value>(raw) {
            Ok(v) => v,
            // Only a listing's elements are salvaged: anything else that fails fails the body.
            Err(_) if raw.first() == Some(&b'[') => salvage_array(raw)?,
            Err(_) => return None,
        };
        out.insert(key, value);
        s.ws();
        if s.eat(b',').is_some() {
            continue;
        }
        s.eat(b'}')?;
        s.ws();
        return (s.i == bytes.len()).then_some(Value::Object(out));
    }
}

fn salvage_array(raw: &[u8]) -> Option<Value> {
    let mut s = Scanner { b: raw, i: 0 };
    s.eat(b'[')?;
    let mut out = Vec::new();
    s.ws();
    if s.eat(b']').is_some() {
        return Some(Value::Array(out));
    }
    loop {
        s.ws();
        let range = s.value()?;
        let element = &raw[range];
        out.push(match serde_json::from_slice::<Value>(element) {
            Ok(v) => v,
            Err(e) => stub(element, &e.to_string())?,
        });
        s.ws();
        if s.eat(b',').is_some() {
            continue;
        }
        s.eat(b']')?;
        return Some(Value::Array(out));
    }
}

fn stub(element: &[u8], why: &str) -> Option<Value> {
    let keys: Keys = serde_json::from_slice(element).ok()?;
    let mut m = Map::new();
    for (k, v) in [
        ("id", keys.id),
        ("created_at", keys.created_at),
        ("user_id", keys.user_id),
        ("type", keys.kind),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v));
        }
    }
    m.insert(UNREADABLE_FIELD.into(), Value::String(why.to_owned()));
    Some(Value::Object(m))
}

/// Finds where JSON values end without building them (no depth limit: nesting is counted, not
/// recursed into). Validity is left to `serde_json` on the slices it returns.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => self.i += 2,
                _ => self.i += 1,
            }
        }
    }

    /// The byte range of the value starting here.
    fn value(&mut self) -> Option<std::ops::Range<usize>> {
        let start = self.i;
        match *self.b.get(self.i)? {
            b'"' => self.string()?,
            b'[' | b'{' => {
                let mut depth = 0usize;
                loop {
                    match *self.b.get(self.i)? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'[' | b'{' => depth += 1,
                        b']' | b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| !matches!(c, b',' | b']' | b'}') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
            }
        }
        (self.i > start).then_some(start..self.i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deep(levels: usize) -> String {
        format!("{}1{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn a_plain_body_parses_whole() {
        let v = parse_body(br#"{"status":"success","items":[{"id":"a"}]}"#).unwrap();
        assert_eq!(v, json!({"status": "success", "items": [{"id": "a"}]}));
    }

    #[test]
    fn one_deep_item_is_replaced_by_a_stub_and_the_others_kept() {
        let body = format!(
            r#"{{"status":"success","items":[{{"id":"a","created_at":"t1","content":[]}},{{"id":"b","created_at":"t2","user_id":"u","content":{}}},{{"id":"c"}}],"cursor":null}}"#,
            deep(300)
        );
        let v = parse_body(body.as_bytes()).unwrap();
        let items = v["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            json!({"id": "a", "created_at": "t1", "content": []})
        );
        assert_eq!(items[1]["id"], "b");
        assert_eq!(items[1]["created_at"], "t2");
        assert_eq!(items[1]["user_id"], "u");
        assert!(
            items[1]["unreadable"]
                .as_str()
                .unwrap()
                .contains("recursion")
        );
        assert!(items[1].get("content").is_none());
        assert_eq!(items[2], json!({"id": "c"}));
        assert_eq!(v["status"], "success");
        assert_eq!(v["cursor"], Value::Null);
    }

    #[test]
    fn a_lone_surrogate_is_local_to_its_item() {
        let body = br#"{"status":"success","items":[{"id":"x","content":[{"type":"text","text":"\ud800"}]},{"id":"y"}]}"#;
        let v = parse_body(body).unwrap();
        assert_eq!(v["items"][0]["id"], "x");
        assert!(v["items"][0]["unreadable"].is_string());
        assert_eq!(v["items"][1], json!({"id": "y"}));
    }

    #[test]
    fn an_object_value_that_cannot_be_parsed_fails_the_body() {
        let body = format!(
            r#"{{"status":"success","object":{{"alias":"t","value":{}}}}}"#,
            deep(200)
        );
        let e = parse_body(body.as_bytes()).unwrap_err();
        assert!(e.contains("cannot be parsed"), "{e}");
        assert!(parse_body(b"<html>").is_err());
        assert!(parse_body(b"{\"a\":1} trailing").is_err());
    }

    #[test]
    fn oversized_bodies_are_refused_before_parsing() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(parse_body(&big).unwrap_err().contains("limit"));
    }

    proptest::proptest! {
        /// Whatever the nesting and wherever a bad element sits, the good elements survive in
        /// order and nothing panics.
        #[test]
        fn good_elements_survive(depths in proptest::collection::vec(0usize..400, 0..8)) {
            let elements: Vec<String> = depths
                .iter()
                .enumerate()
                .map(|(i, d)| format!(r#"{{"id":"i{i}","v":{}}}"#, deep(*d)))
                .collect();
            let body = format!(r#"{{"status":"success","items":[{}]}}"#, elements.join(","));
            let v = parse_body(body.as_bytes()).unwrap();
            let items = v["items"].as_array().unwrap();
            proptest::prop_assert_eq!(items.len(), depths.len());
            for (i, (item, d)) in items.iter().zip(&depths).enumerate() {
                let id = format!("i{i}");
                proptest::prop_assert_eq!(item["id"].as_str(), Some(id.as_str()));
                // serde_json's limit is 128 levels, counting the element's own object.
                proptest::prop_assert_eq!(item.get("unreadable").is_some(), *d > 126);
            }
        }
    }
}
