//! Cursor paging shared by the three list commands: default 10 rows,
//! at most 1000, an opaque cursor naming the last row returned, and no cursor
//! on the last page.

use serde_json::Value;

use crate::error::ApiError;

pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 1000;

/// Hex-encodes the sort key of the last row so clients can't mistake the
/// cursor for a timestamp or alias they could construct themselves.
fn encode_cursor(key: &str) -> String {
    let hex: String = key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("cur_{hex}")
}

fn decode_cursor(cursor: &str) -> Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid cursor {cursor:?}"));
    let hex = cursor.strip_prefix("cur_").ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    String::from_utf8(bytes).map_err(|_| bad())
}

pub fn limit(args: &serde_json::Map<String, Value>) -> Result<usize, ApiError> {
    let Some(v) = args.get("limit") else {
        return Ok(DEFAULT_LIMIT as usize);
    };
    let n = v
        .as_u64()
        .ok_or_else(|| ApiError::bad_request("limit must be a positive integer"))?;
    if n == 0 || n > MAX_LIMIT {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(n as usize)
}

/// `rows` are `(sort key, row)` already in answer order, keys strictly
/// monotonic in that order. Returns the page and the cursor for the next one.
pub fn page(
    rows: impl IntoIterator<Item = (String, Value)>,
    cursor: Option<&str>,
    limit: usize,
    ascending: bool,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let after = cursor.map(decode_cursor).transpose()?;
    let mut rows = rows.into_iter().filter(|(k, _)| match &after {
        None => true,
        Some(a) if ascending => k > a,
        Some(a) => k < a,
    });
    let mut out = Vec::new();
    let mut last_key = None;
    for (k, v) in rows.by_ref().take(limit) {
        out.push(v);
        last_key = Some(k);
    }
    let more = rows.next().is_some();
    Ok((
        out,
        if more {
            last_key.map(|k| encode_cursor(&k))
        } else {
            None
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursor_roundtrip_and_pages() {
        assert_eq!(decode_cursor(&encode_cursor("tasks/é")).unwrap(), "tasks/é");
        assert!(decode_cursor("nope").is_err());
        let rows: Vec<(String, Value)> = (0..25).map(|i| (format!("{i:03}"), json!(i))).collect();
        let (p1, c1) = page(rows.clone(), None, 10, true).unwrap();
        assert_eq!(p1.len(), 10);
        let (p3, c3) = page(rows.clone(), Some("cur_303139"), 10, true).unwrap();
        assert_eq!(p3, (20..25).map(|i| json!(i)).collect::<Vec<_>>());
        assert!(c3.is_none());
        assert!(c1.is_some());
        let (exact, c) = page(rows.into_iter().take(10), None, 10, true).unwrap();
        assert_eq!(exact.len(), 10);
        assert!(c.is_none(), "an exactly full last page has no cursor");
    }
}
