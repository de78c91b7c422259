//! A person's files, in (docs/attachments.md): which blocks of an item are files, where each is
//! put in the work folder (the inbox, one folder per item, sanitised names), and how the turn
//! names them to the agent.
//!
//! Pure: the guest downloads through the host (`files.download-session-file`) into the paths
//! computed here.

use serde_json::Value;

/// The inbox when neither the thread nor config.yaml names one.
pub const DEFAULT_INBOX: &str = ".blobhub/inbox";
/// The longest sanitised name.
pub const NAME_MAX: usize = 128;
/// The longest extension a shortened name keeps.
pub const EXT_MAX: usize = 16;
/// Download attempts for a transient failure (a terminal one is not retried).
pub const DOWNLOAD_ATTEMPTS: u32 = 3;
/// The first wait between download attempts; it doubles.
pub const DOWNLOAD_BACKOFF_MS: u64 = 500;

/// A `file` block of a person's item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRef {
    pub alias: String,
    /// The display name (may be empty; then the alias's last segment is used).
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// A block of a person's message, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Text(String),
    File(FileRef),
}

/// The usable blocks of an item: non-empty text, and file blocks with a non-empty `file.alias`.
pub fn blocks(item: &Value) -> Vec<Block> {
    let mut out = Vec::new();
    for block in item
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                if let Some(t) = block
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                {
                    out.push(Block::Text(t.to_string()));
                }
            }
            Some("file") => {
                let Some(alias) = block
                    .pointer("/file/alias")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                else {
                    continue;
                };
                let text = |k: &str| {
                    block
                        .pointer(&format!("/file/{k}"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                };
                out.push(Block::File(FileRef {
                    alias: alias.to_string(),
                    name: text("name"),
                    content_type: text("content_type"),
                    size: block
                        .pointer("/file/size")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                }));
            }
            _ => {}
        }
    }
    out
}

/// A name that is safe as one path component: backslashes become `/` and only the last
/// non-empty segment is kept; characters outside `[A-Za-z0-9._@-]` become `_`; leading dots are
/// stripped; empty becomes `file-<ordinal>`; more than [`NAME_MAX`] characters are shortened,
/// keeping an extension of at most [`EXT_MAX`] characters.
pub fn sanitize(name: &str, ordinal: usize) -> String {
    let unified = name.replace('\\', "/");
    let last = unified.split('/').rfind(|s| !s.is_empty()).unwrap_or("");
    let mapped: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = mapped.trim_start_matches('.');
    if trimmed.is_empty() {
        return format!("file-{ordinal}");
    }
    cap(trimmed)
}

/// `name` (ASCII) shortened to [`NAME_MAX`], keeping a short extension.
fn cap(name: &str) -> String {
    if name.len() <= NAME_MAX {
        return name.to_string();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot - 1 <= EXT_MAX => {
            let ext = &name[dot..];
            format!("{}{ext}", &name[..NAME_MAX - ext.len()])
        }
        _ => name[..NAME_MAX].to_string(),
    }
}

/// The sanitised names of one item's files, made unique: a name already taken gets `<ordinal>-`
/// prefixes (its 1-based position among the item's files) until it is free.
pub fn item_names(files: &[&FileRef]) -> Vec<String> {
    let mut taken: Vec<String> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let ordinal = i + 1;
        let source = if f.name.is_empty() {
            f.alias.as_str()
        } else {
            f.name.as_str()
        };
        let mut name = sanitize(source, ordinal);
        while taken.contains(&name) {
            name = format!("{ordinal}-{name}");
        }
        taken.push(name);
    }
    taken
}

/// Why an inbox setting is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxProblem {
    /// The thread's `attachments` block is not an object with a string `inbox`
    /// (`attachments_block_malformed`; the next tier is used).
    Malformed(String),
    /// The inbox would not be strictly inside the work folder (`inbox_invalid`; attachments are
    /// not downloaded).
    Invalid(String),
}

/// The thread's inbox: thread `attachments.inbox` > config.yaml's `attachments.inbox` >
/// [`DEFAULT_INBOX`], as a clean relative path strictly inside the work folder. Returns the inbox
/// (`None` when refused) and the problems met on the way.
pub fn resolve_inbox(
    thread_block: Option<&Value>,
    config_inbox: Option<&str>,
) -> (Option<String>, Vec<InboxProblem>) {
    let mut problems = Vec::new();
    let thread = match thread_block {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => match o.get("inbox") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(other) => {
                problems.push(InboxProblem::Malformed(format!(
                    "attachments.inbox must be a non-empty string, found {other}"
                )));
                None
            }
        },
        Some(other) => {
            problems.push(InboxProblem::Malformed(format!(
                "attachments must be an object, found {other}"
            )));
            None
        }
    };
    let chosen = thread
        .or_else(|| config_inbox.filter(|s| !s.is_empty()).map(str::to_string))
        .unwrap_or_else(|| DEFAULT_INBOX.to_string());
    match clean_relative(&chosen) {
        Some(p) => (Some(p), problems),
        None => {
            problems.push(InboxProblem::Invalid(format!(
                "inbox `{chosen}` is not a folder inside the work folder"
            )));
            (None, problems)
        }
    }
}

/// `path` as plain `/`-joined segments when it is relative, names no `..` and is not the work
/// folder itself; else `None`. (`..` is refused outright rather than folded: a path that climbs
/// out and back in is never what a person meant.)
pub fn clean_relative(path: &str) -> Option<String> {
    if path.starts_with('/') || path.contains('\0') || path.contains('\\') {
        return None;
    }
    let mut parts = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return None,
            s => parts.push(s),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A file of a turn, as the agent is given it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Local {
    /// The sanitised name.
    pub name: String,
    /// Relative to the work folder.
    pub rel: String,
    /// Absolute.
    pub path: String,
    pub content_type: String,
    pub size: u64,
}

impl Local {
    /// Whether the agent may be given it as an image (claude image blocks, codex `localImage`):
    /// the formats both accept.
    pub fn is_image(&self) -> bool {
        matches!(
            self.content_type.as_str(),
            "image/png" | "image/jpeg" | "image/gif" | "image/webp"
        )
    }
}

/// One part of a turn's input, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    File(Local),
    /// A file that could not be fetched, with why.
    Unavailable {
        name: String,
        reason: String,
    },
}

/// The message that carries the files of an answer given to a waiting agent (a tool result
/// cannot carry files, so they come as the next turn).
pub fn answer_files_note(n: usize) -> String {
    format!(
        "{n} attachment(s) came with the answer you just received; they arrive separately because \
         an answer to a question cannot carry files. Nothing new is asked."
    )
}

/// The instruction line of the `## Attachments` section.
pub const ATTACHMENTS_NOTE: &str =
    "The person attached these files; they are on disk, read them from these paths:";

/// The turn as text: file tokens `[name]` where the files were, unavailable files as `- name —
/// unavailable (reason)` lines, then (when any file arrived) a blank line, `## Attachments`, a
/// blank line, [`ATTACHMENTS_NOTE`] and one `- name (type, size bytes): path` line per file.
pub fn render(parts: &[Part]) -> String {
    let mut text = String::new();
    let mut listed = Vec::new();
    for part in parts {
        match part {
            Part::Text(t) => text.push_str(t),
            Part::File(f) => {
                text.push_str(&format!("[{}]", f.name));
                listed.push(f);
            }
            Part::Unavailable { name, reason } => {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&format!("- {name} — unavailable ({reason})\n"));
            }
        }
    }
    if !listed.is_empty() {
        text.push_str("\n\n## Attachments\n\n");
        text.push_str(ATTACHMENTS_NOTE);
        for f in listed {
            text.push_str(&format!("\n{}", listing_line(f)));
        }
    }
    text
}

/// `- name (type, size bytes): path`.
pub fn listing_line(f: &Local) -> String {
    let ct = if f.content_type.is_empty() {
        "application/octet-stream"
    } else {
        &f.content_type
    };
    format!("- {} ({ct}, {} bytes): {}", f.name, f.size, f.path)
}

/// Whether a turn gives its images natively (any part is an image file).
pub fn has_image(parts: &[Part]) -> bool {
    parts
        .iter()
        .any(|p| matches!(p, Part::File(f) if f.is_image()))
}

/// A non-image file in a native turn: `[name] at path`.
pub fn inline_reference(f: &Local) -> String {
    format!("[{}] at {}", f.name, f.path)
}

/// A turn with images, as agents that read files natively are given it: the parts in order and
/// each image's bytes (by absolute path) in base64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativeInput {
    pub parts: Vec<Part>,
    pub images: Vec<(String, String)>,
}

impl NativeInput {
    /// The base64 bytes of the image at `path`, when they could be read.
    pub fn image(&self, path: &str) -> Option<&str> {
        self.images
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, b)| b.as_str())
    }
}

/// Standard base64 with padding (RFC 4648), for image blocks.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The text of an `unavailable` reason for a failed download (at most 256 bytes).
pub fn abridge_reason(reason: &str) -> String {
    if reason.len() <= 256 {
        return reason.to_string();
    }
    let mut end = 253;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &reason[..end])
}

/// The `attachment_unavailable` status item: `n attachment(s) could not be fetched`, with
/// `files: [{name, alias, reason}]` (at most 20).
pub fn unavailable_item(failed: &[(String, String, String)]) -> (Value, Value) {
    let text = format!("{} attachment(s) could not be fetched", failed.len());
    let files: Vec<Value> = failed
        .iter()
        .take(20)
        .map(|(name, alias, reason)| {
            serde_json::json!({"name": abridge_reason(name), "alias": alias,
                "reason": abridge_reason(reason)})
        })
        .collect();
    (
        serde_json::json!([{"type": "text", "text": text}]),
        serde_json::json!({"type": "status", "status": "attachment_unavailable", "files": files}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn base64_matches_rfc_4648() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn names_are_sanitised_as_specified() {
        let long_stem = "a".repeat(200);
        let long_ext = format!("x.{}", "e".repeat(17));
        for (input, ordinal, want) in [
            ("report.pdf", 1, "report.pdf".to_string()),
            ("C:\\Users\\me\\shot 1.png", 1, "shot_1.png".into()),
            ("dir/sub/", 1, "sub".into()),
            ("../../x", 1, "x".into()),
            ("..", 2, "file-2".into()),
            ("/", 3, "file-3".into()),
            ("", 4, "file-4".into()),
            (".env", 1, "env".into()),
            ("...hidden.txt", 1, "hidden.txt".into()),
            ("héllo wörld.md", 1, "h_llo_w_rld.md".into()),
            ("a@b-c_d.e", 1, "a@b-c_d.e".into()),
            ("$(rm -rf ~).sh", 1, "__rm_-rf___.sh".into()),
            (
                &format!("{long_stem}.png"),
                1,
                format!("{}.png", "a".repeat(124)),
            ),
            (&long_stem, 1, "a".repeat(128)),
        ] {
            assert_eq!(sanitize(input, ordinal), want, "{input:?}");
        }
        // An extension over 16 characters is not kept: a plain cut.
        let name = format!("{}{long_ext}", "s".repeat(130));
        assert_eq!(sanitize(&name, 1), name[..128]);
    }

    proptest::proptest! {
        /// Whatever a person names a file, the result is one plain path component.
        #[test]
        fn any_name_becomes_one_safe_component(name in "\\PC{0,300}", ordinal in 1usize..20) {
            let safe = sanitize(&name, ordinal);
            proptest::prop_assert!(!safe.is_empty() && safe.len() <= NAME_MAX, "{safe:?}");
            proptest::prop_assert!(!safe.starts_with('.'), "{safe:?}");
            proptest::prop_assert!(
                safe.chars().all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c)),
                "{safe:?}"
            );
            proptest::prop_assert!(clean_relative(&safe).as_deref() == Some(safe.as_str()));
        }

        /// An inbox that resolves is always a relative path without `..`.
        #[test]
        fn a_resolved_inbox_stays_inside(inbox in "[a-z./\\\\]{0,20}") {
            if let (Some(p), _) = resolve_inbox(Some(&json!({"inbox": inbox})), None) {
                proptest::prop_assert!(!p.starts_with('/') && !p.split('/').any(|s| s == ".." || s.is_empty()));
            }
        }
    }

    #[test]
    fn collisions_within_an_item_get_ordinal_prefixes() {
        let f = |name: &str| FileRef {
            alias: "files/a".into(),
            name: name.into(),
            content_type: String::new(),
            size: 0,
        };
        let files = [f("a.txt"), f("dir/a.txt"), f("a.txt"), f(""), f("b")];
        let refs: Vec<&FileRef> = files.iter().collect();
        assert_eq!(item_names(&refs), ["a.txt", "2-a.txt", "3-a.txt", "a", "b"]);
        let files = [f("x"), f("2-x"), f("x")];
        let refs: Vec<&FileRef> = files.iter().collect();
        assert_eq!(item_names(&refs), ["x", "2-x", "3-x"]);
        let files = [f("x"), f("x"), f("2-x")];
        let refs: Vec<&FileRef> = files.iter().collect();
        assert_eq!(item_names(&refs), ["x", "2-x", "3-2-x"]);
    }

    #[test]
    fn inbox_tiers_and_containment() {
        assert_eq!(resolve_inbox(None, None).0.as_deref(), Some(DEFAULT_INBOX));
        assert_eq!(resolve_inbox(None, Some("in")).0.as_deref(), Some("in"));
        assert_eq!(
            resolve_inbox(Some(&json!({"inbox": "./docs/in/"})), Some("in"))
                .0
                .as_deref(),
            Some("docs/in")
        );
        let (inbox, problems) = resolve_inbox(Some(&json!({"inbox": 3})), Some("in"));
        assert_eq!(inbox.as_deref(), Some("in"));
        assert!(matches!(problems[..], [InboxProblem::Malformed(_)]));
        let (_, problems) = resolve_inbox(Some(&json!("in")), None);
        assert!(matches!(problems[..], [InboxProblem::Malformed(_)]));
        for bad in ["/tmp/in", "../in", "a/../../in", ".", "./", "a\\..\\b"] {
            let (inbox, problems) = resolve_inbox(Some(&json!({ "inbox": bad })), None);
            assert_eq!(inbox, None, "{bad}");
            assert!(matches!(problems[..], [InboxProblem::Invalid(_)]), "{bad}");
        }
    }

    #[test]
    fn blocks_keep_text_and_files_in_order() {
        let item = json!({"content": [
            {"type": "text", "text": "see "},
            {"type": "file", "file": {"alias": "files/shot", "name": "shot.png",
                "content_type": "image/png", "size": 12}},
            {"type": "file", "file": {"alias": ""}},
            {"type": "file", "file": {"name": "no alias"}},
            {"type": "image"},
            {"type": "text", "text": ""},
            {"type": "text", "text": "and this"},
        ]});
        let b = blocks(&item);
        assert_eq!(b.len(), 3);
        assert_eq!(b[0], Block::Text("see ".into()));
        assert!(matches!(&b[1], Block::File(f) if f.alias == "files/shot" && f.size == 12));
        assert_eq!(b[2], Block::Text("and this".into()));
    }

    fn local(name: &str, ct: &str) -> Local {
        Local {
            name: name.into(),
            rel: format!(".blobhub/inbox/itm_1/{name}"),
            path: format!("/w/.blobhub/inbox/itm_1/{name}"),
            content_type: ct.into(),
            size: 5,
        }
    }

    #[test]
    fn rendering_names_files_inline_and_lists_their_paths() {
        let parts = [
            Part::Text("look at ".into()),
            Part::File(local("log.txt", "text/plain")),
            Part::Text(" please".into()),
            Part::File(local("blob", "")),
            Part::Unavailable {
                name: "gone.pdf".into(),
                reason: "not found".into(),
            },
        ];
        assert_eq!(
            render(&parts),
            "look at [log.txt] please[blob]\n- gone.pdf — unavailable (not found)\n\n\n## Attachments\n\n\
             The person attached these files; they are on disk, read them from these paths:\n\
             - log.txt (text/plain, 5 bytes): /w/.blobhub/inbox/itm_1/log.txt\n\
             - blob (application/octet-stream, 5 bytes): /w/.blobhub/inbox/itm_1/blob"
        );
        assert_eq!(render(&[Part::Text("plain".into())]), "plain");
        assert!(!has_image(&parts));
        assert!(has_image(&[Part::File(local("a.png", "image/png"))]));
    }
}
