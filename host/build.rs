//! Builds the bundled job types (plugins/session-agent-harness) for wasm32-wasip2 and generates
//! `$OUT_DIR/bundled.rs` with their bytes, so a plain `cargo build` of the host yields a worker
//! that carries them.
//!
//! Each bundled job type is then compiled ahead of time (`Engine::precompile_component`) with the
//! engine settings of the runtime (`src/runtime/engine_config.rs`, included below), and the
//! compiled code is embedded beside the component with the engine's compatibility hash: a start
//! loads it instead of compiling (docs/architecture.md, "No compile on any start").
//!
//! The nested cargo uses its own target dir (`$OUT_DIR/plugin-target`) so it does not wait on the
//! outer build's lock, and runs without the outer RUSTFLAGS (they are for the host target).
//! `BLOBHUB_NO_BUNDLED=1` skips it (the worker then knows only installed job types).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/runtime/engine_config.rs"]
mod engine_config;

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

    watch(&manifest.join("src/runtime/engine_config.rs"));
    // The target the runtime's engine compiles for (the worker's own).
    let target = std::env::var("TARGET").expect("TARGET");
    println!("cargo::rustc-env=BLOBHUB_ENGINE_TARGET={target}");

    let mut entries = Vec::new();
    let mut precompiled = Vec::new();
    let mut aligned = Vec::new();
    let mut engine_hash = 0u64;
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
        match precompile(&target, &out) {
            Ok((hash, packages)) => {
                engine_hash = hash;
                for (i, (package, stem, len)) in packages.into_iter().enumerate() {
                    // A page-aligned static of its own: the runtime makes its code executable
                    // where it lies instead of copying it (src/runtime/code_memory.rs).
                    aligned.push(format!(
                        "static PRECOMPILED_{i}: PageAligned<{len}> = PageAligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{stem}.cwasm\")));\n"
                    ));
                    precompiled.push(format!("({package:?}, &PRECOMPILED_{i}.0 as &[u8])"));
                }
            }
            // E.g. a cross build for an architecture this Cranelift does not generate code for:
            // the worker then compiles the bundled job types at run time, as installed ones.
            Err(e) => println!(
                "cargo::warning=the bundled job types are not precompiled ({e}); the worker will compile them at its first start"
            ),
        }
    }
    let code = format!(
        "/// Bundled job types: (cargo package, component bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[{}];\n\
         /// Bytes starting on a 64 KiB boundary (the largest page size of Linux targets) and\n\
         /// filling whole pages: nothing else shares their pages.\n\
         #[repr(C, align(65536))]\n\
         pub struct PageAligned<const N: usize>(pub [u8; N]);\n\
         {}\
         /// Their code compiled by the build: (cargo package, `Engine::precompile_component` output).\n\
         pub static PRECOMPILED: &[(&str, &[u8])] = &[{}];\n\
         /// The build engine's `precompile_compatibility_hash`, hashed with `DefaultHasher`.\n\
         pub const PRECOMPILED_ENGINE_HASH: u64 = {engine_hash:#x};\n",
        entries.join(", "),
        aligned.concat(),
        precompiled.join(", ")
    );
    std::fs::write(out.join("bundled.rs"), code).expect("write bundled.rs");
}

/// (cargo package, wasm file stem, length of the compiled code) of the bundled job types that
/// were precompiled.
type Precompiled = Vec<(&'static str, &'static str, usize)>;

/// Compile every bundled component in `out` for `target` with the runtime's engine settings,
/// writing `<stem>.cwasm` beside it. Returns the engine's compatibility hash and the packages.
fn precompile(target: &str, out: &Path) -> Result<(u64, Precompiled), String> {
    let config = engine_config::config(target).map_err(|e| format!("{e:#}"))?;
    let engine = wasmtime::Engine::new(&config).map_err(|e| format!("{e:#}"))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let mut packages = Vec::new();
    for (package, stem) in BUNDLED {
        let wasm = std::fs::read(out.join(format!("{stem}.wasm"))).map_err(|e| e.to_string())?;
        let started = std::time::Instant::now();
        let cwasm = engine
            .precompile_component(&wasm)
            .map_err(|e| format!("{package}: {e:#}"))?;
        // Visible with `cargo build -vv`: the cost this step adds to a build.
        eprintln!(
            "precompiled {package} ({} KiB -> {} KiB) in {:.2?}",
            wasm.len() / 1024,
            cwasm.len() / 1024,
            started.elapsed()
        );
        std::fs::write(out.join(format!("{stem}.cwasm")), &cwasm).map_err(|e| e.to_string())?;
        packages.push((*package, *stem, cwasm.len()));
    }
    Ok((hasher.finish(), packages))
}
