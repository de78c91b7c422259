//! `blobhub-worker plugins` and `blobhub-worker plugins check FILE.wasm`.

use std::path::Path;

use serde_json::{Value, json};

use super::loader::{self, LoadError, LoadedJobType, Origin, capability_text};

fn describe_json(jt: &LoadedJobType) -> Value {
    json!({
        "name": jt.descriptor.name,
        "version": jt.descriptor.version,
        "summary": jt.descriptor.summary,
        "capabilities": jt.descriptor.capabilities.iter().map(capability_text).collect::<Vec<_>>(),
        "wit": jt.wit.as_str(),
        "origin": match &jt.origin { Origin::Bundled => "bundled".to_owned(), Origin::Installed(p) => p.display().to_string() },
    })
}

fn describe_text(jt: &LoadedJobType) -> String {
    let caps: Vec<String> = jt
        .descriptor
        .capabilities
        .iter()
        .map(capability_text)
        .collect();
    format!(
        "{} {} ({}, blobhub:worker@{})\n    {}\n    capabilities: {}",
        jt.descriptor.name,
        jt.descriptor.version,
        jt.origin,
        jt.wit.as_str(),
        jt.descriptor.summary,
        if caps.is_empty() {
            "none".into()
        } else {
            caps.join(", ")
        }
    )
}

/// The listing: bundled and installed job types, and components that failed to load, as text
/// and as a JSON document.
pub async fn list(tree_root: &Path) -> anyhow::Result<(String, Value)> {
    let runtime = super::Runtime::load(
        Some(tree_root.join("plugins")),
        Some(tree_root.join("cache")),
    )
    .await?;
    let job_types = &runtime.job_types;
    let supported: Vec<String> = super::wit::WitVersion::ALL
        .iter()
        .map(|v| format!("blobhub:worker@{}", v.range()))
        .collect();
    let document = json!({
        "wit_versions": supported,
        "job_types": job_types.by_name.values().map(|j| describe_json(j)).collect::<Vec<_>>(),
        "held_back": job_types.reserved_claims.iter().map(|j| describe_json(j)).collect::<Vec<_>>(),
        "failures": job_types.failures.iter().map(|f| json!({"code": f.code(), "message": f.to_string()})).collect::<Vec<_>>(),
    });
    let mut out = format!("WIT versions supported: {}\n", supported.join(", "));
    for jt in job_types.by_name.values() {
        out.push_str(&describe_text(jt));
        out.push('\n');
    }
    for jt in &job_types.reserved_claims {
        out.push_str(&format!(
            "held back: {} claims the name of a bundled job type; it runs only where config.yaml sets job_types.{}.component to its file\n",
            jt.origin,
            jt.name()
        ));
    }
    for f in &job_types.failures {
        out.push_str(&format!("not loaded: {}: {f}\n", f.code()));
    }
    if job_types.by_name.is_empty() {
        out.push_str("no job types\n");
    }
    Ok((out.trim_end().to_owned(), document))
}

/// Validate a component without running it: compile, check the WIT version, call `describe`.
pub async fn check(file: &Path) -> Result<(String, Value), LoadError> {
    let wasm = std::fs::read(file).map_err(|source| LoadError::Unreadable {
        path: file.to_path_buf(),
        source,
    })?;
    let invalid = |e: wasmtime::Error| LoadError::Invalid {
        origin: file.display().to_string(),
        detail: format!("{e:#}"),
    };
    let engine = super::engine::new_engine().map_err(invalid)?;
    let linker = super::engine::new_linker(&engine).map_err(invalid)?;
    let jt = loader::load_bytes(
        &engine,
        &linker,
        &wasm,
        Origin::Installed(file.to_path_buf()),
        None,
    )
    .await?;
    Ok((
        format!("ok: {}", describe_text(&jt)),
        json!({"ok": true, "job_type": describe_json(&jt)}),
    ))
}
