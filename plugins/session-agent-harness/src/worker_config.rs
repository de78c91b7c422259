//! The keys of the section's `worker-config` (config.yaml's worker-wide blocks, as the host
//! serializes its typed `Config`) that the harness reads, as JSON pointers; `<type>` stands for an
//! agent type.
//!
//! `worker-config` is JSON, so nothing but a test ties a read here to a key the host knows. Two
//! tests do: the one below fails when `settings.rs` reads a key missing from [`READS`], and the
//! host's (`host/src/runtime/settings.rs`) fails when a key of [`READS`] is not in the
//! `worker-config` the host produces. A key the host drops as unknown can then never be read in
//! vain, as `agents.<type>.wait` once was.

/// Every key the harness reads, one JSON pointer each.
pub const READS: &[&str] = &[
    "/agents/<type>",
    "/agents/<type>/permissions",
    "/agents/<type>/executable",
    "/agents/<type>/allowed_executables",
    "/agents/<type>/model",
    "/agents/<type>/effort",
    "/agents/<type>/env",
    "/agents/<type>/turn_retries",
    "/agents/<type>/turn_retry_delays_ms",
    "/agents/<type>/stall_timeout_s",
    "/agents/<type>/wait",
    "/agents/<type>/prestart",
    "/attachments/inbox",
    "/policy/allow_autonomous",
    "/policy/rules",
    "/polling/backoff_max_ms",
];

#[cfg(test)]
mod tests {
    use super::READS;

    /// The string literals that follow `marker` in `source`.
    fn literals_after<'a>(source: &'a str, marker: &str) -> Vec<&'a str> {
        source
            .match_indices(marker)
            .filter_map(|(i, _)| {
                let rest = &source[i + marker.len()..];
                let rest = rest.strip_prefix('"')?;
                rest.split('"').next()
            })
            .collect()
    }

    /// Every read of `worker_config` in the harness goes through `settings.rs` in three shapes:
    /// `tier2(worker_config, t, "key")`, `b.get("key")` on the `agents.<type>` block, and
    /// `worker_config.pointer("/path")`. Each key they name must be listed.
    #[test]
    fn every_key_settings_reads_is_listed() {
        let source = include_str!("settings.rs");
        // The tests at the end build their own configs.
        let code = source.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        let mut read: Vec<String> = Vec::new();
        for key in literals_after(code, "tier2(worker_config, t, ") {
            read.push(format!("/agents/<type>/{key}"));
        }
        for key in literals_after(code, ".and_then(|b| b.get(") {
            read.push(format!("/agents/<type>/{key}"));
        }
        read.extend(
            literals_after(code, ".pointer(")
                .into_iter()
                .map(String::from),
        );
        assert!(read.len() >= 10, "the scan found too little: {read:?}");
        for key in &read {
            assert!(
                READS.contains(&key.as_str()),
                "{key} is read but not in READS"
            );
        }
        // The `agents.<type>` block itself, and reads by another shape, are listed by hand.
        assert!(code.contains(r#"pointer(&format!("/agents/{t}"))"#));
        assert!(
            !code.contains("\"/agents/{t}/"),
            "a read of an unlisted shape"
        );
        // Nothing else in the harness reads worker_config: the guest hands it to `resolve`.
        for (file, text) in [
            ("guest/thread.rs", include_str!("guest/thread.rs")),
            ("guest/ctx.rs", include_str!("guest/ctx.rs")),
            ("guest/section.rs", include_str!("guest/section.rs")),
        ] {
            for (i, _) in text.match_indices("worker_config") {
                let after = text[i + "worker_config".len()..].trim_start();
                // A direct read must name a listed key (ctx.rs reads the backoff cap).
                if let Some(rest) = after.strip_prefix(".pointer(\"") {
                    let key = rest.split('"').next().unwrap_or("");
                    assert!(READS.contains(&key), "{file} reads {key}, not in READS");
                    continue;
                }
                assert!(
                    !after.starts_with(".pointer") && !after.starts_with(".get("),
                    "{file} reads worker_config itself"
                );
            }
        }
    }
}
