//! Builds the bundled job types (plugins/session-agent-harness) for wasm32-wasip2 and generates
//! `$OUT_DIR/bundled.rs` with their bytes, so a plain `cargo build` of the host yields a worker
//! that carries them.
//!
//! The nested cargo uses its own target dir (`$OUT_DIR/plugin-target`) so it does not wait on the
//! outer build's lock, and runs without the outer RUSTFLAGS (they are for the host target).
//! `BLOBHUB_NO_BUNDLED=1` skips it (the worker then knows only installed job types).

use std::path::{Path, PathBuf};
use std::process::Command;

/// (cargo package, wasm file stem) of each bundled job type.
const BUNDLED: &[(&str, &str)] = &[("session-agent-harness", "session_agent_harness")];

fn watch(path: &Path) {
    println!("cargo::rerun-if-changed={}", path.display());
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ has a parent").to_path_buf();
    let plugins = root.join("plugins");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    watch(&root.join("wit"));
    watch(&plugins.join("Cargo.toml"));
    watch(&plugins.join("Cargo.lock"));
    watch(&plugins.join("sdk"));
    watch(&plugins.join("agent-types"));
    watch(&plugins.join("alias"));
    println!("cargo::rerun-if-env-changed=BLOBHUB_NO_BUNDLED");

    let mut entries = Vec::new();
    if std::env::var_os("BLOBHUB_NO_BUNDLED").is_none() {
        let target_dir = out.join("plugin-target");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&plugins)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("RUSTC_WORKSPACE_WRAPPER");
        for (package, _) in BUNDLED {
            watch(&plugins.join(package));
            cmd.args(["-p", package]);
        }
        // Cargo hides a build script's output; say what takes the time on a first build.
        println!(
            "cargo::warning=building the bundled job types ({}) for wasm32-wasip2 in release mode; a first build takes a minute or two",
            BUNDLED
                .iter()
                .map(|(p, _)| *p)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let status = cmd
            .status()
            .expect("cannot run cargo for the bundled job types");
        assert!(
            status.success(),
            "building the bundled job types failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)"
        );
        for (package, stem) in BUNDLED {
            let built = target_dir.join(format!("wasm32-wasip2/release/{stem}.wasm"));
            let dest = out.join(format!("{stem}.wasm"));
            std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
            entries.push(format!(
                "({package:?}, include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.wasm\")) as &[u8])"
            ));
        }
    }
    let code = format!(
        "/// Bundled job types: (cargo package, component bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[{}];\n",
        entries.join(", ")
    );
    std::fs::write(out.join("bundled.rs"), code).expect("write bundled.rs");
}
