//! Limits checked on the raw text of `config.yaml` before any YAML parser sees it.
//!
//! A real configuration is a few kilobytes nested five or six levels deep. Without limits a
//! pathological file (hundreds of kilobytes of nesting) made `config check` and `start` run for
//! many seconds and grow by ~100 MiB: the line index keeps one path per nesting level, so its
//! cost grows with the square of the depth. Both limits are far above any real configuration
//! and answer at once with `INVALID_CONFIG`.

/// The largest `config.yaml` read, in bytes.
pub const MAX_BYTES: usize = 1024 * 1024;

/// The deepest nesting accepted (block indentation levels, `- ` markers on one line, and open
/// `[`/`{` brackets, added together: an upper bound of the YAML nesting).
pub const MAX_DEPTH: usize = 64;

/// Checks `text` against [`MAX_BYTES`] and [`MAX_DEPTH`]; the error says which and where.
pub fn check(text: &str) -> Result<(), String> {
    if text.len() > MAX_BYTES {
        return Err(format!(
            "the file is {} bytes, over the limit of {MAX_BYTES}",
            text.len()
        ));
    }
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.lines().enumerate() {
        let body = line.trim_start_matches(' ');
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let indent = line.len() - body.len();
        // Flow collections may span lines; their content's indentation is not block nesting.
        if flow == 0 {
            while indents.last().is_some_and(|&i| i > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
        }
        let mut dashes = 0usize;
        let mut rest = body;
        while let Some(r) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")) {
            dashes += 1;
            rest = r.trim_start();
        }
        let mut line_max = flow;
        let (mut single, mut double, mut escaped) = (false, false, false);
        for c in rest.chars() {
            match c {
                _ if escaped => escaped = false,
                '\\' if double => escaped = true,
                '"' if !single => double = !double,
                '\'' if !double => single = !single,
                '#' if !single && !double => break,
                '[' | '{' if !single && !double => {
                    flow += 1;
                    line_max = line_max.max(flow);
                }
                ']' | '}' if !single && !double => flow = flow.saturating_sub(1),
                _ => {}
            }
        }
        let depth = indents.len() + dashes + line_max;
        if depth > MAX_DEPTH {
            return Err(format!(
                "line {}: nested deeper than {MAX_DEPTH} levels",
                n + 1
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_configs_pass() {
        let text = "polling:\n  interval_idle_ms: 100\nagents:\n  claude_code:\n    env: {A: \"[[[[\"}\n    allowed_executables: [a, b]\nsections:\n  - name: s\n    session: {org_id: o, blob_id: b}\n";
        assert_eq!(check(text), Ok(()));
    }

    #[test]
    fn deep_flow_block_and_dash_nesting_is_refused() {
        let flow = format!("a: {}1{}\n", "[".repeat(65), "]".repeat(65));
        assert!(check(&flow).unwrap_err().contains("line 1"));
        let block: String = (0..70)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert!(check(&block).unwrap_err().contains("line 65:"));
        let dashes = format!("a:\n{}x\n", "- ".repeat(70));
        assert!(check(&dashes).unwrap_err().contains("line 2"));
    }

    #[test]
    fn the_corpus_that_hung_is_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config-corpus");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let report = crate::config::load_file(&path);
                assert!(report.config.is_none(), "{}", path.display());
                assert_eq!(report.diagnostics[0].code, "INVALID_CONFIG");
                assert!(
                    report.diagnostics[0].message.contains("nested deeper"),
                    "{}: {}",
                    path.display(),
                    report.diagnostics[0].message
                );
                seen += 1;
            }
        }
        assert!(seen >= 4);
    }

    /// One level of a generated document.
    #[derive(Debug, Clone, Copy)]
    enum Level {
        FlowSeq,
        FlowMap,
        BlockMap,
        Dash,
    }

    /// A YAML text nesting `levels` under `agents:` (flow levels inside block ones).
    fn nested(levels: &[Level]) -> String {
        let mut head = String::from("sections: []\nagents:\n");
        let mut indent = 1;
        let mut flow_open = String::new();
        let mut flow_close = String::new();
        for level in levels {
            match level {
                Level::BlockMap if flow_open.is_empty() => {
                    head.push_str(&format!("{}k:\n", " ".repeat(indent)));
                    indent += 1;
                }
                Level::Dash if flow_open.is_empty() => {
                    head.push_str(&format!("{}- \n", " ".repeat(indent)));
                    indent += 2;
                }
                Level::FlowSeq | Level::BlockMap | Level::Dash => {
                    flow_open.push('[');
                    flow_close.insert(0, ']');
                }
                Level::FlowMap => {
                    flow_open.push_str("{a: ");
                    flow_close.insert(0, '}');
                }
            }
        }
        format!("{head}{}v: {flow_open}1{flow_close}\n", " ".repeat(indent))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Generated nesting of every kind and depth: every input is answered (a config or
        /// `INVALID_CONFIG`), and anything deeper than the limit is refused before parsing.
        #[test]
        fn nested_yaml_is_answered(levels in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(Level::FlowSeq),
                proptest::strategy::Just(Level::FlowMap),
                proptest::strategy::Just(Level::BlockMap),
                proptest::strategy::Just(Level::Dash),
            ],
            0..3000,
        )) {
            let text = nested(&levels);
            let report = crate::config::load_str(&text);
            if levels.len() > MAX_DEPTH {
                proptest::prop_assert!(report.config.is_none());
                proptest::prop_assert_eq!(&report.diagnostics[0].code, "INVALID_CONFIG");
            }
        }
    }

    #[test]
    fn big_files_are_refused() {
        let text = "#".repeat(MAX_BYTES + 1);
        assert!(check(&text).unwrap_err().contains("over the limit"));
    }
}
