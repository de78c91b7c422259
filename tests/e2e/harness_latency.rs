//! Latency of the session_agent_harness relay, with the default polling cadence. Ignored by
//! default (a measurement, not a check); run with
//! `cargo test -p blobhub-worker --test e2e harness_latency -- --ignored --nocapture`.
//!
//! The test agent's `stamp` turn replies `stamp: read=<µs> sent=<µs>`: the wall-clock times it read
//! the turn from stdin and wrote its reply. Against the emulator's `created_at` (same machine, same
//! clock) that gives: a person's item → the agent's stdin, and the agent's line → the posted item.

use serde_json::Value;

use crate::harness_support::Env;

/// Microseconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`.
fn epoch_micros(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let mut d = date.split('-').map(|x| x.parse::<i64>().unwrap());
    let (y, m, day) = (d.next().unwrap(), d.next().unwrap(), d.next().unwrap());
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().unwrap());
    let (h, mi, s) = (t.next().unwrap(), t.next().unwrap(), t.next().unwrap());
    let frac: i64 = format!("{frac:0<6}")[..6].parse().unwrap();
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    ((days * 86_400 + h * 3600 + mi * 60 + s) * 1_000_000) + frac
}

fn percentiles(mut v: Vec<i64>) -> String {
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.99),
        p(1.0)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn relay_latency() {
    const N: usize = 30;
    let env = Env::new().await;
    let s = env.session("ses_latency");
    // The default polling cadence (idle 1500 ms, active 3000 ms).
    env.home.write_config(&format!(
        "agents:\n  test_double:\n    executable: {}\nsections:\n  - name: s\n    job_type: session_agent_harness\n    session: {{org_id: {}, blob_id: {}, revision_id: {}, session_id: {}}}\n",
        crate::harness_support::TEST_AGENT,
        s.org_id,
        s.blob_id,
        s.revision_id,
        s.session_id
    ));
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait("active", |e| e.state(&s, "t") == "active").await;
    let (mut to_agent, mut to_post, mut round_trip) = (Vec::new(), Vec::new(), Vec::new());
    let (mut idle_to_agent, mut after_turn_to_agent) = (Vec::new(), Vec::new());
    for i in 0..N {
        // Even turns: posted right after the previous reply. Odd turns: posted once the thread
        // has idled for a while (spread over the poll interval), the usual case.
        let idle = i % 2 == 1;
        if idle {
            tokio::time::sleep(std::time::Duration::from_millis(
                200 + (i as u64 * 97) % 1500,
            ))
            .await;
        }
        let id = env.say(&s, "t", "stamp");
        env.wait("reply", |e| {
            e.transcript(&s, "t")
                .iter()
                .filter(|(t, _)| t == "turn_end")
                .count()
                > i
        })
        .await;
        let items = env.items(&s, "t");
        let asked = items.iter().find(|x| x["id"] == id.as_str()).unwrap();
        let asked_at = epoch_micros(asked["created_at"].as_str().unwrap());
        let reply = items
            .iter()
            .rev()
            .find(|x| {
                x.pointer("/content/0/text")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.starts_with("stamp: "))
            })
            .unwrap();
        let posted_at = epoch_micros(reply["created_at"].as_str().unwrap());
        let text = reply["content"][0]["text"].as_str().unwrap();
        let field = |k: &str| -> i64 {
            text.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .unwrap()
                .parse()
                .unwrap()
        };
        to_agent.push(field("read=") - asked_at);
        if idle {
            idle_to_agent.push(field("read=") - asked_at);
        } else {
            after_turn_to_agent.push(field("read=") - asked_at);
        }
        to_post.push(posted_at - field("sent="));
        round_trip.push(posted_at - asked_at);
    }
    eprintln!("default polling, {N} turns, one agent process per turn:");
    eprintln!(
        "  person's item -> agent's stdin: {}",
        percentiles(to_agent)
    );
    eprintln!(
        "    posted while idle:             {}",
        percentiles(idle_to_agent)
    );
    eprintln!(
        "    posted right after a turn:     {}",
        percentiles(after_turn_to_agent)
    );
    eprintln!("  agent's line  -> posted item:   {}", percentiles(to_post));
    eprintln!(
        "  person's item -> posted reply:  {}",
        percentiles(round_trip)
    );
    worker.terminate().await;
}
