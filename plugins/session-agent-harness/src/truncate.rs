//! Keeping a posted item under the platform's size cap (64 KiB per item).
//!
//! The budget is measured the way the reference measures it — Python's `json.dumps` with its
//! default `", "`/`": "` separators and `\uXXXX` escapes for non-ASCII — which is never smaller
//! than the compact encoding we actually send, so an item that fits here fits on the wire.

use serde_json::{Value, json};

/// Server cap 64 KiB minus 4 KiB headroom for the envelope the server wraps around an item.
pub const BUDGET: usize = 61_440;
const HEAD_CHARS: usize = 4096;
const TAIL_CHARS: usize = 2048;

/// UTF-8 length of Python's `json.dumps(v)`.
pub fn py_json_len(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Number(n) => n.to_string().len(),
        Value::String(s) => str_len(s),
        Value::Array(a) => {
            2 + a.iter().map(py_json_len).sum::<usize>() + 2 * a.len().saturating_sub(1)
        }
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| str_len(k) + 2 + py_json_len(v))
                .sum::<usize>()
                + 2 * o.len().saturating_sub(1)
        }
    }
}

fn str_len(s: &str) -> usize {
    2 + s
        .chars()
        .map(|c| match c {
            '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
            c if (c as u32) < 0x20 => 6,
            c if c.is_ascii() => 1,
            c if (c as u32) < 0x10000 => 6,
            _ => 12,
        })
        .sum::<usize>()
}

/// The size of an item as the budget counts it.
pub fn item_len(content: &Value, metadata: &Value) -> usize {
    py_json_len(&json!({"content": content, "metadata": metadata}))
}

/// Why an item could not be made to fit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub size: usize,
}

/// Fields excerpted, in this order, while the item is over budget.
const LADDER: &[&str] = &[
    "metadata.tool.output",
    "metadata.tool.input",
    "metadata.text",
    "content[0].text",
];

fn field_mut<'a>(
    content: &'a mut Value,
    metadata: &'a mut Value,
    name: &str,
) -> Option<&'a mut Value> {
    match name {
        "metadata.tool.output" => metadata.pointer_mut("/tool/output"),
        "metadata.tool.input" => metadata.pointer_mut("/tool/input"),
        "metadata.text" => metadata.pointer_mut("/text"),
        "content[0].text" => content.pointer_mut("/0/text"),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// `first 4096 chars …[truncated {n} bytes; see {log}]… last 2048 chars`.
pub fn excerpt(original: &str, local_log: &str) -> String {
    let chars: Vec<char> = original.chars().collect();
    if chars.len() <= HEAD_CHARS + TAIL_CHARS {
        // Nothing to cut by characters (the size comes from escapes); keep the marker honest.
        return format!("…[truncated {} bytes; see {local_log}]…", original.len());
    }
    let head: String = chars[..HEAD_CHARS].iter().collect();
    let tail: String = chars[chars.len() - TAIL_CHARS..].iter().collect();
    format!(
        "{head}…[truncated {} bytes; see {local_log}]…{tail}",
        original.len()
    )
}

/// Shrink `{content, metadata}` to the budget in place. `local_log` names the thread's full log
/// (`<job>/threads/<alias>/logs/thread.log`). Ok(fields excerpted), or the size that still does
/// not fit.
pub fn truncate(
    content: &mut Value,
    metadata: &mut Value,
    local_log: &str,
) -> Result<Vec<String>, TooLarge> {
    if item_len(content, metadata) <= BUDGET {
        return Ok(Vec::new());
    }
    let mut cut = Vec::new();
    for name in LADDER {
        if item_len(content, metadata) <= BUDGET {
            break;
        }
        let Some(field) = field_mut(content, metadata, name) else {
            continue;
        };
        if is_empty(field) {
            continue;
        }
        let original = match &*field {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        *field = Value::String(excerpt(&original, local_log));
        cut.push(name.to_string());
    }
    if !cut.is_empty() && metadata.is_object() {
        metadata["truncated"] = json!(true);
        metadata["truncated_fields"] = json!(cut);
        metadata["local_log"] = json!(local_log);
    }
    if item_len(content, metadata) > BUDGET {
        for name in &cut {
            if let Some(field) = field_mut(content, metadata, name) {
                *field = Value::String(format!("…[dropped; see {local_log}]…"));
            }
        }
    }
    let size = item_len(content, metadata);
    if size > BUDGET {
        return Err(TooLarge { size });
    }
    Ok(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_like_python() {
        // json.dumps({"a": [1, "é\n"], "b": None}) == '{"a": [1, "\\u00e9\\n"], "b": null}'
        let v = json!({"a": [1, "é\n"], "b": null});
        assert_eq!(
            py_json_len(&v),
            r#"{"a": [1, "\u00e9\n"], "b": null}"#.len()
        );
        assert_eq!(py_json_len(&json!("😀")), 14);
    }

    #[test]
    fn small_items_are_untouched() {
        let mut c = json!([{"type": "text", "text": "hi"}]);
        let mut m = json!({"type": "text"});
        assert_eq!(
            truncate(&mut c, &mut m, "log").unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(m, json!({"type": "text"}));
    }

    #[test]
    fn ladder_excerpts_tool_output_first() {
        let big = "x".repeat(100_000);
        let mut c = json!([{"type": "text", "text": "→ ok"}]);
        let mut m = json!({"type": "tool_result", "tool": {"invocation_id": "1", "is_error": false, "output": big}});
        let cut = truncate(&mut c, &mut m, "job/threads/t/logs/thread.log").unwrap();
        assert_eq!(cut, vec!["metadata.tool.output"]);
        let out = m["tool"]["output"].as_str().unwrap();
        assert!(out.contains("…[truncated 100000 bytes; see job/threads/t/logs/thread.log]…"));
        assert_eq!(
            out.chars().count(),
            4096 + 2048
                + "…[truncated 100000 bytes; see job/threads/t/logs/thread.log]…"
                    .chars()
                    .count()
        );
        assert_eq!(m["truncated"], json!(true));
        assert!(item_len(&c, &m) <= BUDGET);
    }

    #[test]
    fn text_items_and_escaped_content() {
        // Non-ASCII counts six bytes per char: 20 000 'é' is 120 000 bytes by the budget.
        let mut c = json!([{"type": "text", "text": "é".repeat(20_000)}]);
        let mut m = json!({"type": "text"});
        let cut = truncate(&mut c, &mut m, "l").unwrap();
        assert_eq!(cut, vec!["content[0].text"]);
        assert!(item_len(&c, &m) <= BUDGET);
    }

    #[test]
    fn too_large_when_untruncatable_fields_are_huge() {
        let mut c = json!([{"type": "text", "text": "x"}]);
        let mut m = json!({"type": "status", "detail": "y".repeat(70_000)});
        assert!(truncate(&mut c, &mut m, "l").is_err());
    }
}
