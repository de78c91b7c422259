//! `--log-format json`: one JSON object per log record and line,
//! `{"ts": "<UTC, seconds>", "level": "info", "event": "<name>", …fields}`, the shape log
//! collectors (journald's JSON export, Loki, jq) take without a parser of ours.
//!
//! The event name is the record's message; the record's fields follow at the top level, in the
//! order they were given (`section`, `thread`, `code`, …). A job type's event carries its own
//! fields as one JSON object (`fields`), which is spread into the record rather than nested as
//! a string.

use std::fmt;

use serde_json::{Map, Value};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The log format of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (the default when stderr is not a terminal).
    Json,
    /// Text for people (the default on a terminal).
    Pretty,
}

/// The JSON-lines event format.
pub struct JsonLines;

/// `info`, `warning`, `error`, `debug`, `trace`.
fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// Collects a record's fields in order; the message becomes the event.
#[derive(Default)]
struct Fields {
    event: Option<String>,
    /// In call order (a JSON map would sort them).
    map: Vec<(String, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => {
                self.event = Some(match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
            }
            // A job type's own fields, as the JSON object it gave.
            "fields" => match &value {
                Value::String(s) => match serde_json::from_str::<Map<String, Value>>(s) {
                    Ok(inner) => self.map.extend(inner),
                    Err(_) if s.is_empty() => {}
                    Err(_) => self.map.push(("fields".into(), value)),
                },
                _ => self.map.push(("fields".into(), value)),
            },
            // Empty tags (a section-wide event has no thread) are left out.
            _ if value.as_str() == Some("") => {}
            name => self.map.push((name.to_owned(), value)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
}

/// One record as its JSON line (without the newline): the fixed keys, then the fields in call
/// order; a field named like a fixed key is written as `field_<name>`.
fn record(level: &Level, fields: Fields, ts: String) -> String {
    let mut out: Vec<(String, Value)> = vec![
        ("ts".into(), ts.into()),
        ("level".into(), level_name(level).into()),
        ("event".into(), fields.event.unwrap_or_default().into()),
    ];
    for (k, v) in fields.map {
        let k = if ["ts", "level", "event"].contains(&k.as_str()) {
            format!("field_{k}")
        } else {
            k
        };
        match out.iter_mut().find(|(name, _)| *name == k) {
            Some(slot) => slot.1 = v,
            None => out.push((k, v)),
        }
    }
    let body: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", body.join(","))
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = record(
            event.metadata().level(),
            fields,
            crate::state_tree::utc_now_seconds(),
        );
        writeln!(writer, "{line}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn records_are_flat_json_lines_with_the_event_and_fields() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                section = "backend",
                thread = "t1",
                fields = r#"{"code":"API_TRANSIENT_ERROR","attempts":5}"#,
                "{}",
                "post_failed"
            );
            tracing::info!(section = "backend", thread = "", fields = "", "attached");
        });
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(r#"{"ts":""#)
                && first.contains(r#"","level":"warning","event":"post_failed","section":"backend","thread":"t1","#),
            "fixed keys first, then the fields in call order: {first}"
        );
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["level"], "warning");
        assert_eq!(lines[0]["event"], "post_failed");
        assert_eq!(lines[0]["section"], "backend");
        assert_eq!(lines[0]["thread"], "t1");
        assert_eq!(lines[0]["code"], "API_TRANSIENT_ERROR");
        assert_eq!(lines[0]["attempts"], 5);
        assert_eq!(lines[0]["ts"].as_str().unwrap().len(), 20);
        assert_eq!(lines[1]["event"], "attached");
        assert!(lines[1].get("thread").is_none(), "empty tags are left out");
    }
}
