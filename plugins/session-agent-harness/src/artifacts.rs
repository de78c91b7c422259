//! The agent's files, out (docs/attachments.md): the thread's `artifacts` block, the alias each
//! outbox file is published at, its content type, and the `artifacts_published` items.
//!
//! Pure: the guest walks the outbox and uploads through the host (`files.list-tree`,
//! `files.upload-session-file`).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::truncate::{BUDGET, item_len};

/// File blocks per item (the platform's cap).
pub const BLOCKS_PER_ITEM: usize = 10;
/// Aliases and skips listed in the first item's metadata.
pub const LISTED_MAX: usize = 100;
/// Most outbox entries looked at per turn.
pub const WALK_MAX: u32 = 5_000;

/// A valid `artifacts` block: publishing is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifacts {
    /// Ends with `/`; every alias starts with it.
    pub prefix: String,
    /// Relative to the work folder, clean (see [`crate::attachments::clean_relative`]).
    pub outbox: String,
}

/// Why a present `artifacts` block does not turn publishing on: the warning's event and fields.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockWarning {
    pub event: &'static str,
    pub fields: Value,
}

/// The thread's `artifacts` block: `Ok(None)` when absent, `Ok(Some)` when valid; a warning
/// (publishing off) when it is there but unusable. An outbox that leaves the work folder is
/// `outbox_invalid`.
pub fn parse_block(block: Option<&Value>) -> Result<Option<Artifacts>, BlockWarning> {
    let block = match block {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(other) => {
            return Err(BlockWarning {
                event: "artifacts_block_malformed",
                fields: json!({"found": type_name(other)}),
            });
        }
    };
    let text = |k: &str| block.get(k).and_then(Value::as_str).unwrap_or("");
    let (prefix, outbox) = (text("prefix"), text("outbox"));
    let missing: Vec<&str> = [("prefix", prefix), ("outbox", outbox)]
        .iter()
        .filter(|(_, v)| v.is_empty())
        .map(|(k, _)| *k)
        .collect();
    if !missing.is_empty() {
        return Err(BlockWarning {
            event: "artifacts_block_incomplete",
            fields: json!({"missing": missing}),
        });
    }
    if !prefix.ends_with('/') {
        return Err(BlockWarning {
            event: "artifacts_prefix_invalid",
            fields: json!({"prefix": prefix, "reason": "must end with `/`"}),
        });
    }
    if !blobhub_alias::is_valid(&format!("{prefix}x")) {
        return Err(BlockWarning {
            event: "artifacts_prefix_invalid",
            fields: json!({"prefix": prefix, "reason": blobhub_alias::GRAMMAR}),
        });
    }
    let Some(outbox) = crate::attachments::clean_relative(outbox) else {
        return Err(BlockWarning {
            event: "outbox_invalid",
            fields: json!({"error": format!("outbox `{outbox}` is not a folder inside the work folder")}),
        });
    };
    Ok(Some(Artifacts {
        prefix: prefix.to_string(),
        outbox,
    }))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn map_segment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._@-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The alias of the outbox file `rel` (a relative POSIX path): `prefix + rel` when that is a valid
/// alias and not `taken`; otherwise every segment mapped to the alias charset and
/// `-<first 6 hex of sha256(rel)>` (then `-2`, `-3`, … while taken) inserted before an extension
/// of 1–16 characters, the stem shortened to fit 256. `None` when no alias can be made
/// (`invalid_alias`).
pub fn alias_for(prefix: &str, rel: &str, taken: &dyn Fn(&str) -> bool) -> Option<String> {
    let plain = format!("{prefix}{rel}");
    if blobhub_alias::is_valid(&plain) && !taken(&plain) {
        return Some(plain);
    }
    let segments: Vec<String> = rel.split('/').map(map_segment).collect();
    let (last, dirs) = segments.split_last()?;
    if dirs.iter().any(|d| d.is_empty() || d == "." || d == "..") {
        return None;
    }
    let head = if dirs.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}{}/", dirs.join("/"))
    };
    let (stem, ext) = match last.rfind('.') {
        Some(dot) if dot > 0 && (1..=16).contains(&(last.len() - dot - 1)) => {
            (&last[..dot], &last[dot..])
        }
        _ => (last.as_str(), ""),
    };
    let hash = Sha256::digest(rel.as_bytes());
    let tag: String = hash.iter().take(3).map(|b| format!("{b:02x}")).collect();
    for n in 1..1000 {
        let suffix = if n == 1 {
            format!("-{tag}")
        } else {
            format!("-{tag}-{n}")
        };
        let room = blobhub_alias::MAX_LEN.checked_sub(head.len() + suffix.len() + ext.len())?;
        let stem = &stem[..stem.len().min(room)];
        let candidate = format!("{head}{stem}{suffix}{ext}");
        if !blobhub_alias::is_valid(&candidate) {
            return None;
        }
        if !taken(&candidate) {
            return Some(candidate);
        }
    }
    None
}

/// The content type of `name` by its extension; `None` when unknown (the host then says
/// `text/plain` for UTF-8 bytes, else `application/octet-stream`).
pub fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "log" | "text" => "text/plain",
        "md" | "markdown" => "text/markdown",
        "csv" => "text/csv",
        "tsv" => "text/tab-separated-values",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "yaml" | "yml" => "application/yaml",
        "toml" => "application/toml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// A file that was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub alias: String,
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// A file that was not, and why: `invalid_alias`, `unreadable`, `too_large`,
/// `unsupported_type`, `upload_failed`, or (ours) `symlink`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: String,
    pub reason: &'static str,
}

fn file_block(p: &Published) -> Value {
    json!({"type": "file", "file": {"alias": p.alias, "name": p.name,
        "content_type": p.content_type, "size": p.size}})
}

/// The `artifacts_published` items of a turn: the first says `Published n artifact(s), skipped
/// m` (+ ` (error)`) and lists aliases and skips; file blocks follow, at most ten per item.
/// When the first item with its blocks would pass the budget, it carries none and every block
/// goes to the parts after it.
pub fn items(
    published: &[Published],
    skipped: &[Skipped],
    error: Option<&str>,
) -> Vec<(Value, Value)> {
    let counts = json!({"published": published.len(), "skipped": skipped.len()});
    let mut text = format!(
        "Published {} artifact(s), skipped {}",
        published.len(),
        skipped.len()
    );
    if let Some(e) = error {
        text.push_str(&format!(" ({e})"));
    }
    let mut first_meta = json!({
        "type": "artifacts_published",
        "aliases": published.iter().take(LISTED_MAX).map(|p| p.alias.clone()).collect::<Vec<_>>(),
        "skipped": skipped.iter().take(LISTED_MAX)
            .map(|s| json!({"path": s.path, "reason": s.reason})).collect::<Vec<_>>(),
        "counts": counts,
    });
    if let Some(e) = error {
        first_meta["error"] = json!(e);
    }
    let blocks: Vec<Value> = published.iter().map(file_block).collect();
    let chunks: Vec<&[Value]> = blocks.chunks(BLOCKS_PER_ITEM).collect();
    let head_text = json!({"type": "text", "text": text});
    let first_with = |chunk: &[Value]| {
        let mut c = vec![head_text.clone()];
        c.extend(chunk.iter().cloned());
        Value::Array(c)
    };
    let (first_content, rest): (Value, Vec<&[Value]>) = match chunks.split_first() {
        None => (first_with(&[]), Vec::new()),
        Some((head, tail)) => {
            if item_len(&first_with(head), &first_meta) <= BUDGET {
                (first_with(head), tail.to_vec())
            } else {
                (first_with(&[]), chunks.clone())
            }
        }
    };
    let total = rest.len() + 1;
    if total > 1 {
        first_meta["part"] = json!({"index": 1, "total": total});
    }
    let mut out = vec![(first_content, first_meta)];
    for (i, chunk) in rest.iter().enumerate() {
        let index = i + 2;
        let mut content = vec![json!({"type": "text",
            "text": format!("Published artifacts (part {index}/{total})")})];
        content.extend(chunk.iter().cloned());
        out.push((
            Value::Array(content),
            json!({"type": "artifacts_published", "counts": counts,
                   "part": {"index": index, "total": total}}),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> bool {
        false
    }

    #[test]
    fn the_block() {
        assert_eq!(parse_block(None), Ok(None));
        assert_eq!(
            parse_block(Some(&json!({"prefix": "runs/r1/", "outbox": "./out/"}))),
            Ok(Some(Artifacts {
                prefix: "runs/r1/".into(),
                outbox: "out".into()
            }))
        );
        for (block, event) in [
            (json!("out"), "artifacts_block_malformed"),
            (json!([1]), "artifacts_block_malformed"),
            (json!({"prefix": "runs/"}), "artifacts_block_incomplete"),
            (
                json!({"prefix": "", "outbox": ""}),
                "artifacts_block_incomplete",
            ),
            (
                json!({"prefix": 3, "outbox": "o"}),
                "artifacts_block_incomplete",
            ),
            (
                json!({"prefix": "runs", "outbox": "o"}),
                "artifacts_prefix_invalid",
            ),
            (
                json!({"prefix": "/runs/", "outbox": "o"}),
                "artifacts_prefix_invalid",
            ),
            (
                json!({"prefix": "a b/", "outbox": "o"}),
                "artifacts_prefix_invalid",
            ),
            (
                json!({"prefix": "r/", "outbox": "/tmp/o"}),
                "outbox_invalid",
            ),
            (json!({"prefix": "r/", "outbox": "../o"}), "outbox_invalid"),
            (json!({"prefix": "r/", "outbox": "."}), "outbox_invalid"),
        ] {
            assert_eq!(
                parse_block(Some(&block)).unwrap_err().event,
                event,
                "{block}"
            );
        }
    }

    #[test]
    fn aliases_are_the_path_when_valid() {
        assert_eq!(
            alias_for("runs/r1/", "report.md", &none).as_deref(),
            Some("runs/r1/report.md")
        );
        assert_eq!(
            alias_for("runs/r1/", "sub/dir/data.csv", &none).as_deref(),
            Some("runs/r1/sub/dir/data.csv")
        );
    }

    #[test]
    fn invalid_paths_are_mapped_and_tagged_with_a_hash() {
        let tag = |rel: &str| {
            Sha256::digest(rel.as_bytes())
                .iter()
                .take(3)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let t = tag("my report.md");
        assert_eq!(
            alias_for("runs/", "my report.md", &none),
            Some(format!("runs/my_report-{t}.md"))
        );
        let t = tag("ünï/cödé.tar.gz");
        assert_eq!(
            alias_for("runs/", "ünï/cödé.tar.gz", &none),
            Some(format!("runs/_n_/c_d_.tar-{t}.gz"))
        );
        // An extension over 16 characters is part of the stem.
        let rel = "a b.abcdefghijklmnopq";
        let t = tag(rel);
        assert_eq!(
            alias_for("r/", rel, &none),
            Some(format!("r/a_b.abcdefghijklmnopq-{t}"))
        );
        // A valid path that is taken by another file gets the tag, then -N.
        let t = tag("x.txt");
        let first = format!("r/x-{t}.txt");
        let taken = |a: &str| a == "r/x.txt" || a == first;
        assert_eq!(
            alias_for("r/", "x.txt", &taken),
            Some(format!("r/x-{t}-2.txt"))
        );
    }

    #[test]
    fn long_paths_are_shortened_to_fit_or_skipped() {
        let long = format!("{} .png", "s".repeat(300));
        let alias = alias_for("r/", &long, &none).unwrap();
        assert_eq!(alias.len(), 256);
        assert!(alias.ends_with(".png"), "{alias}");
        assert!(blobhub_alias::is_valid(&alias));
        // The folders alone are too long: no alias is possible.
        let deep = format!("{}/f", "d".repeat(300));
        assert_eq!(alias_for("r/", &deep, &none), None);
    }

    proptest::proptest! {
        /// Any relative path gets a valid alias under the prefix, or none.
        #[test]
        fn any_path_maps_to_a_valid_alias_or_none(
            segments in proptest::collection::vec("\\PC{1,80}", 1..5)
        ) {
            let rel = segments.iter().map(|s| s.replace('/', "_")).collect::<Vec<_>>().join("/");
            if let Some(alias) = alias_for("runs/r1/", &rel, &none) {
                proptest::prop_assert!(blobhub_alias::is_valid(&alias), "{alias:?}");
                proptest::prop_assert!(alias.starts_with("runs/r1/"));
            }
        }
    }

    #[test]
    fn content_types_by_extension() {
        assert_eq!(content_type("a.PNG"), Some("image/png"));
        assert_eq!(content_type("notes.md"), Some("text/markdown"));
        assert_eq!(content_type("Makefile"), None);
        assert_eq!(content_type("x.unknownext"), None);
    }

    fn published(n: usize, name_len: usize) -> Vec<Published> {
        (0..n)
            .map(|i| Published {
                alias: format!("r/{i}-{}", "a".repeat(name_len)),
                name: format!("{i}-{}", "n".repeat(name_len)),
                content_type: "text/plain".into(),
                size: 1,
            })
            .collect()
    }

    #[test]
    fn one_item_for_a_few_files() {
        let skipped = [Skipped {
            path: "link".into(),
            reason: "symlink",
        }];
        let items = items(&published(2, 3), &skipped, None);
        assert_eq!(items.len(), 1);
        let (content, meta) = &items[0];
        assert_eq!(content[0]["text"], "Published 2 artifact(s), skipped 1");
        assert_eq!(content.as_array().unwrap().len(), 3);
        assert_eq!(content[1]["file"]["alias"], "r/0-aaa");
        assert_eq!(meta["type"], "artifacts_published");
        assert_eq!(meta["counts"], json!({"published": 2, "skipped": 1}));
        assert_eq!(
            meta["skipped"],
            json!([{"path": "link", "reason": "symlink"}])
        );
        assert!(meta.get("part").is_none());
        let items = super::items(&[], &[], Some("outbox unusable"));
        assert_eq!(
            items[0].0[0]["text"],
            "Published 0 artifact(s), skipped 0 (outbox unusable)"
        );
    }

    #[test]
    fn many_files_are_split_in_parts_of_ten() {
        let items = items(&published(23, 3), &[], None);
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].0.as_array().unwrap().len(), 11);
        assert_eq!(items[1].0[0]["text"], "Published artifacts (part 2/3)");
        assert_eq!(items[2].0.as_array().unwrap().len(), 4);
        assert_eq!(items[0].1["part"], json!({"index": 1, "total": 3}));
        assert_eq!(items[2].1["counts"]["published"], 23);
    }

    #[test]
    fn a_first_item_over_budget_carries_no_blocks() {
        // A long listing of aliases and skips leaves no room for the first ten blocks.
        let published = published(100, 240);
        let skipped: Vec<Skipped> = (0..100)
            .map(|i| Skipped {
                path: format!("{i}-{}", "p".repeat(300)),
                reason: "too_large",
            })
            .collect();
        let items = items(&published, &skipped, None);
        assert_eq!(items[0].0.as_array().unwrap().len(), 1);
        assert_eq!(items.len(), 11);
        assert_eq!(items[1].0.as_array().unwrap().len(), 11);
        assert_eq!(items[10].0[0]["text"], "Published artifacts (part 11/11)");
        assert_eq!(items[0].1["part"], json!({"index": 1, "total": 11}));
        for (c, m) in &items {
            assert!(item_len(c, m) <= BUDGET);
        }
    }
}
