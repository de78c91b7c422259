//! Runtime benchmarks and the concurrency measurements of docs/architecture.md (`just bench`;
//! release; not in CI). Prints one line per figure.
//!
//! Uses plugins/testing/concurrency-probe (built here with cargo) and an in-process transport
//! whose latency is chosen per thread alias, so no HTTP server is involved.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use blobhub_worker::runtime::capabilities::Shared;
use blobhub_worker::runtime::supervisor::{self, Runtime, RuntimeInputs};
use blobhub_worker::runtime::transport::{CallFuture, Channel, SessionTransport};
use blobhub_worker::runtime::{cache, engine, loader};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

/// Answers every call after a delay chosen by the thread alias; records in-flight counts and
/// completion times.
#[derive(Default)]
struct FakeTransport {
    slow: Mutex<Option<(String, Duration)>>,
    fast: Mutex<Duration>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    done: Mutex<Vec<(String, Instant)>>,
}

/// The transport handed to the runtime (a newtype: the trait is foreign to this crate).
struct Fake(Arc<FakeTransport>);

impl SessionTransport for Fake {
    fn call(&self, _: Channel, _: &str, _: &str, args: Map<String, Value>) -> CallFuture {
        let me = Arc::clone(&self.0);
        Box::pin(async move {
            let alias = args
                .get("alias")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let delay = match &*me.slow.lock().unwrap() {
                Some((slow, d)) if *slow == alias => *d,
                _ => *me.fast.lock().unwrap(),
            };
            let now = me.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            me.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            me.in_flight.fetch_sub(1, Ordering::SeqCst);
            me.done.lock().unwrap().push((alias, Instant::now()));
            Ok(json!({"status": "success", "item": {}}))
        })
    }
}

fn probe_wasm() -> PathBuf {
    let plugins = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = std::process::Command::new(cargo)
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "-p",
            "concurrency-probe",
        ])
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .expect("cargo")
        .success();
    assert!(ok, "building concurrency-probe failed");
    plugins.join("target/wasm32-wasip2/release/concurrency_probe.wasm")
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4
}

struct Bench {
    runtime: Arc<Runtime>,
    transport: Arc<FakeTransport>,
    tree: tempfile::TempDir,
}

impl Bench {
    fn start(
        &self,
        sections: Vec<Value>,
    ) -> (
        Arc<Shared>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<supervisor::RunReport>,
    ) {
        let inputs = RuntimeInputs {
            config: json!({"sections": sections}).try_into().unwrap(),
            transport: Arc::new(Fake(Arc::clone(&self.transport))),
            tree_root: self.tree.path().to_path_buf(),
            user_id: "usr_bench".into(),
            instance_id: "ins_bench".into(),
            secrets: vec![],
        };
        let (tx, rx) = watch::channel(false);
        let (ftx, frx) = watch::channel(false);
        std::mem::forget(ftx);
        let shared = supervisor::shared(&inputs, rx.clone());
        let task = tokio::spawn(supervisor::run_sections(
            Arc::clone(&self.runtime),
            Arc::clone(&shared),
            rx,
            frx,
        ));
        (shared, tx, task)
    }
}

/// The session of every section (the fake transport answers whatever it is); the host refuses
/// a section of a session job type without one.
fn session() -> Value {
    json!({"org_id": "org_bench", "blob_id": "blb_bench", "revision_id": "rev_bench", "session_id": "ses_bench"})
}

fn section(threads: u64, first: u64, rounds: u64) -> Value {
    json!({"job_type": "concurrency_probe", "threads": threads, "first": first, "rounds": rounds, "session": session()})
}

/// Candidate (1) `one` = true: one instance runs all threads; (2) false: an instance per thread.
async fn latency(bench: &Bench, one: bool, threads: u64) {
    let t = &bench.transport;
    *t.slow.lock().unwrap() = Some(("t0".into(), Duration::from_millis(1000)));
    *t.fast.lock().unwrap() = Duration::from_millis(5);
    // Requests of earlier runs may still be in flight (a dropped reply does not cancel).
    let base = t.in_flight.load(Ordering::SeqCst);
    t.max_in_flight.store(base, Ordering::SeqCst);
    t.done.lock().unwrap().clear();
    let sections = if one {
        vec![section(threads, 0, 40)]
    } else {
        (0..threads).map(|i| section(1, i, 40)).collect()
    };
    let started = Instant::now();
    let (_shared, _tx, task) = bench.start(sections);
    // Thread 0 needs 40 s; measure the others during its first slow request.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let done = t.done.lock().unwrap().clone();
    let t1: Vec<Instant> = done
        .iter()
        .filter(|(a, _)| a == "t1")
        .map(|(_, at)| *at)
        .collect();
    let gaps: Vec<f64> = t1
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
        .collect();
    let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
    let worst = gaps.iter().cloned().fold(0.0, f64::max);
    println!(
        "concurrency {}: threads {threads}, max requests in flight {}, thread t1 answers while t0 is slow: {} in {:?}, gap mean {mean:.1} ms, worst {worst:.1} ms",
        if one {
            "(1) one instance + guest executor"
        } else {
            "(2) instance per thread"
        },
        t.max_in_flight.load(Ordering::SeqCst) - base,
        t1.len(),
        started.elapsed(),
    );
    let _ = _tx.send(true);
    let _ = task.await;
}

async fn memory(bench: &Bench, label: &str, sections: Vec<Value>, units: u64) {
    let t = &bench.transport;
    *t.slow.lock().unwrap() = None;
    *t.fast.lock().unwrap() = Duration::from_secs(3600);
    let before = rss_kib();
    let (_shared, tx, task) = bench.start(sections);
    // Let every unit reach its waiting state.
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if t.in_flight.load(Ordering::SeqCst) as u64 >= units || label.contains("idle") {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "memory {label}: {units} units, RSS {before} -> {after} KiB, {:.1} KiB per unit",
        (after.saturating_sub(before)) as f64 / units as f64
    );
    let _ = tx.send(true);
    let _ = task.await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let wasm_path = probe_wasm();
    let wasm = std::fs::read(&wasm_path).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tree.path().join("plugins")).unwrap();
    std::fs::copy(
        &wasm_path,
        tree.path().join("plugins/concurrency_probe.wasm"),
    )
    .unwrap();

    // Cold vs cached load.
    let eng = engine::new_engine().unwrap();
    let linker = engine::new_linker(&eng).unwrap();
    let cache_dir = tree.path().join("cache");
    let t0 = Instant::now();
    let _ = cache::load(&eng, &wasm, Some(&cache_dir)).unwrap();
    let cold = t0.elapsed();
    let mut cached = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let (_, hit) = cache::load(&eng, &wasm, Some(&cache_dir)).unwrap();
        assert!(hit);
        cached.push(t.elapsed());
    }
    cached.sort();
    let t = Instant::now();
    let _ = loader::load_bytes(
        &eng,
        &linker,
        &wasm,
        loader::Origin::Bundled,
        Some(&cache_dir),
    )
    .await
    .unwrap();
    println!(
        "load: cold compile {:.1} ms, cached (median of 20) {:.3} ms, cached + checks + describe {:.3} ms ({} bytes)",
        cold.as_secs_f64() * 1000.0,
        cached[10].as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0,
        wasm.len()
    );

    let runtime = Arc::new(
        Runtime::load(Some(tree.path().join("plugins")), Some(cache_dir))
            .await
            .unwrap(),
    );
    let bench = Bench {
        runtime,
        transport: Arc::default(),
        tree,
    };

    // Host-call round trip.
    let n = 1_000_000u64;
    let start = Instant::now();
    let (_s, _tx, task) = bench.start(vec![
        json!({"job_type": "concurrency_probe", "calls": n, "session": session()}),
    ]);
    let _ = task.await;
    println!(
        "host-call round trip (guest -> host is-shutting-down, x{n}, incl. instantiate): {:.1} ns/call",
        start.elapsed().as_nanos() as f64 / n as f64
    );

    // Each memory figure in a fresh process, so that pages freed by one run are not reused by
    // the next and hide its cost.
    match std::env::args().find_map(|a| a.strip_prefix("memory=").map(str::to_owned)) {
        Some(which) => {
            match which.as_str() {
                "idle" => {
                    let idle = json!({"job_type": "concurrency_probe", "idle": true, "session": session()});
                    memory(&bench, "idle section", vec![idle; 200], 200).await;
                }
                "one" => {
                    memory(
                        &bench,
                        "active thread, one instance",
                        vec![section(1000, 0, 1)],
                        1000,
                    )
                    .await
                }
                _ => {
                    memory(
                        &bench,
                        "active thread, instance per thread",
                        (0..200).map(|i| section(1, i, 1)).collect(),
                        200,
                    )
                    .await
                }
            }
            return;
        }
        None => {
            for which in ["idle", "one", "per-thread"] {
                let exe = std::env::current_exe().unwrap();
                let out = std::process::Command::new(exe)
                    .arg(format!("memory={which}"))
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout);
                print!(
                    "{}",
                    text.lines()
                        .filter(|l| l.starts_with("memory"))
                        .map(|l| format!("{l}\n"))
                        .collect::<String>()
                );
            }
        }
    }
    latency(&bench, true, 10).await;
    latency(&bench, false, 10).await;
}
