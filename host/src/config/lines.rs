//! An index from a field path (`sections[1].job_type`) to the line where it appears in the
//! YAML text, so that every diagnostic can name its line. serde_yaml does not expose positions,
//! so the text is read a second time with yaml-rust2's event parser, which carries markers.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Field path → 1-based line.
#[derive(Debug, Default, Clone)]
pub struct LineIndex {
    lines: HashMap<String, usize>,
}

impl LineIndex {
    /// Indexes `text`. A text that does not parse yields the entries seen before the error
    /// (the YAML error itself is reported by serde_yaml, with its own line).
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut builder, false);
        LineIndex {
            lines: builder.lines,
        }
    }

    /// The line of `path`, or of its nearest indexed ancestor (`a.b[2].c` → `a.b[2]` → `a.b`).
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut path = path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// A container being walked: a mapping (waiting for a key or for the value of `key`) or a
/// sequence (counting items).
enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    lines: HashMap<String, usize>,
}

impl Builder {
    /// Called when a node starts: returns its path, or `None` if the node is a mapping key.
    fn node_path(&mut self, mark: Marker) -> Option<String> {
        let path = match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Sequence { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                item
            }
            Some(Frame::Mapping { path, key }) => {
                let key = key.take()?;
                if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }
            }
        };
        // The key's line (recorded below) is the better anchor for a mapping value.
        self.lines.entry(path.clone()).or_insert(mark.line());
        Some(path)
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => {
                if let Some(Frame::Mapping { path, key }) = self.stack.last_mut()
                    && key.is_none()
                {
                    let child = if path.is_empty() {
                        value.clone()
                    } else {
                        format!("{path}.{value}")
                    };
                    self.lines.entry(child).or_insert(mark.line());
                    *key = Some(value);
                    return;
                }
                self.node_path(mark);
            }
            Event::Alias(_) => {
                self.node_path(mark);
            }
            Event::MappingStart(..) => {
                // A complex (non-scalar) key gets no path; its contents are indexed under "?".
                let path = self.node_path(mark).unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(mark).unwrap_or_else(|| "?".to_owned());
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_paths() {
        let text = "\
polling:
  interval_idle_ms: 5
sections:
  - name: a
    job_type: x
  - job_type: y
    session:
      org_id: o
agents: {codex: {model: m}}
";
        let index = LineIndex::build(text);
        assert_eq!(index.line("polling"), Some(1));
        assert_eq!(index.line("polling.interval_idle_ms"), Some(2));
        assert_eq!(index.line("sections"), Some(3));
        assert_eq!(index.line("sections[0]"), Some(4));
        assert_eq!(index.line("sections[0].job_type"), Some(5));
        assert_eq!(index.line("sections[1].job_type"), Some(6));
        assert_eq!(index.line("sections[1].session.org_id"), Some(8));
        assert_eq!(index.line("agents.codex.model"), Some(9));
        // Missing leaves fall back to their parent.
        assert_eq!(index.line("sections[1].session.blob_id"), Some(7));
        assert_eq!(index.line("nowhere"), None);
    }
}
