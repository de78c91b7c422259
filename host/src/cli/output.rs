//! How commands print: human text or JSON, and the single error report.

use serde_json::{Value, json};

use crate::coded::CodedError;

/// The version of every JSON document the CLI prints.
pub const SCHEMA_VERSION: &str = "1.0";

#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
    pub quiet: bool,
}

impl Output {
    /// Prints a command's result: `human` as text, or `document` (plus `schema_version`) as
    /// one JSON line on stdout.
    pub fn result(&self, human: &str, mut document: Value) {
        if self.json {
            if let Some(map) = document.as_object_mut() {
                map.insert("schema_version".into(), SCHEMA_VERSION.into());
            }
            println!("{document}");
        } else if !human.is_empty() {
            println!("{human}");
        }
    }

    /// A progress or warning line on stderr (not in `--json` or `--quiet` mode, where logs and
    /// the final document carry the information).
    pub fn note(&self, line: &str) {
        if !self.json && !self.quiet {
            eprintln!("{line}");
        }
    }

    /// Prints `err` once: `error: CODE: message` and `hint: …`, or one JSON line.
    pub fn report_error(&self, err: &anyhow::Error) {
        let coded = coded_of(err);
        if self.json {
            let line = json!({
                "error": coded.message,
                "hint": coded.hint,
                "code": coded.code,
                "schema_version": SCHEMA_VERSION,
            });
            eprintln!("{line}");
        } else {
            eprintln!("error: {}: {}", coded.code, coded.message);
            if let Some(hint) = &coded.hint {
                eprintln!("hint: {hint}");
            }
        }
    }
}

/// The coded error in `err`'s chain, or `INTERNAL_ERROR` carrying the whole chain.
fn coded_of(err: &anyhow::Error) -> CodedError {
    if let Some(coded) = err.chain().find_map(|e| e.downcast_ref::<CodedError>()) {
        return coded.clone();
    }
    if let Some(api) = err
        .chain()
        .find_map(|e| e.downcast_ref::<crate::api::ApiError>())
    {
        return api.clone().into();
    }
    CodedError::new("INTERNAL_ERROR", format!("{err:#}"))
        .with_hint("this is a bug or an environment problem; rerun with -vv for details")
}
