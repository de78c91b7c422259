//! Latency of the session_agent_harness relay, measured on the emulator's own clock: from a
//! person's item to the agent's reply (the agent is spawned per turn, so this includes a process
//! start). Ignored by default; run with
//! `cargo test -p blobhub-worker --test e2e harness_latency -- --ignored --nocapture`.

use serde_json::Value;

use crate::harness_support::Env;

fn micros(ts: &str) -> i64 {
    // 2026-11-23T10:00:00.123456Z → seconds of the day and micros (same day in a short run).
    let t = ts.split('T').nth(1).unwrap_or("").trim_end_matches('Z');
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let mut p = hms.split(':').map(|x| x.parse::<i64>().unwrap_or(0));
    let (h, m, s) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
    let frac: i64 = format!("{frac:0<6}")[..6].parse().unwrap_or(0);
    ((h * 60 + m) * 60 + s) * 1_000_000 + frac
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn person_to_reply_latency() {
    const N: usize = 30;
    let env = Env::new().await;
    let s = env.session("ses_latency");
    // The default polling cadence (idle 1500 ms, active 3000 ms).
    let sections = format!(
        "agents:\n  test_double:\n    executable: {}\nsections:\n  - name: s\n    job_type: session_agent_harness\n    session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
        crate::harness_support::TEST_AGENT,
        s.org_id,
        s.blob_id,
        s.revision_id,
        s.session_id
    );
    env.home.write_config(&sections);
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait("active", |e| e.state(&s, "t") == "active").await;
    let mut samples = Vec::new();
    for i in 0..N {
        let id = env.say(&s, "t", &format!("m{i}"));
        let want = format!("echo: m{i}");
        env.wait("reply", |e| {
            e.transcript(&s, "t")
                .iter()
                .filter(|(t, _)| t == "turn_end")
                .count()
                > i
        })
        .await;
        let items = env.items(&s, "t");
        let at = |pred: &dyn Fn(&Value) -> bool| {
            items
                .iter()
                .find(|i| pred(i))
                .and_then(|i| i["created_at"].as_str())
                .map(micros)
                .unwrap()
        };
        let asked = at(&|i| i["id"] == id.as_str());
        let replied = at(&|i| i.pointer("/content/0/text").and_then(Value::as_str) == Some(&want));
        samples.push(replied - asked);
    }
    samples.sort_unstable();
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    eprintln!(
        "person item -> agent reply posted (default polling, {N} turns): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    );
    worker.terminate().await;
}
