//! session_agent_harness under crashes and faults: a scripted conversation survives SIGKILL at
//! random points and an unreliable platform, with every message echoed exactly once.

use std::time::Duration;

use blobhub_emulator::Faults;

use crate::harness_support::{
    Env, agent_processes, answered_or_closed, assert_no_duplicate_posts, echo_counts, eventually,
};

/// A tiny deterministic generator (xorshift), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_twenty_points_loses_and_repeats_nothing() {
    const MESSAGES: usize = 20;
    let env = Env::new().await;
    let s = env.session("ses_crash");
    env.configure(&[&s], 4, "");
    let mut worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for i in 0..MESSAGES {
        env.say(&s, "t", &format!("m{i}"));
        // The kill point: a seeded random moment during the turn this message starts.
        tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
        worker.child.kill().await.unwrap();
        eprintln!("killed at m{i}");
        worker = env.start().await;
        eprintln!("restarted after m{i}");
    }
    // Every message is answered, or its turn visibly closed when a kill cut it after the agent
    // had begun it; none is answered twice.
    env.wait("every message answered or its turn closed", |e| {
        answered_or_closed(e, &s, "t", MESSAGES)
            .iter()
            .all(|ok| *ok)
    })
    .await;
    let counts = echo_counts(&env, &s, "t", MESSAGES);
    assert!(
        counts.iter().all(|c| *c <= 1),
        "echo counts {counts:?}\n{:#?}",
        env.transcript(&s, "t")
    );
    // A turn closed `interrupted` must be rare: most kills land while no agent is mid-turn.
    let closed = MESSAGES - counts.iter().filter(|c| **c == 1).count();
    assert!(
        closed <= MESSAGES / 2,
        "{closed} messages were never answered\n{:#?}",
        env.transcript(&s, "t")
    );
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_survives_an_unreliable_platform() {
    const MESSAGES: usize = 8;
    let env = Env::new().await;
    let s = env.session("ses_faults");
    env.configure(&[&s], 4, "");
    env.admin.set_fault_seed(7);
    env.admin.set_faults(
        "*",
        Faults {
            rate_5xx: 0.10,
            rate_429: 0.05,
            retry_after_s: 0,
            rate_drop: 0.02,
            ..Faults::default()
        },
    );
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    for i in 0..MESSAGES {
        env.say(&s, "t", &format!("m{i}"));
        env.wait(&format!("m{i} echoed"), |e| {
            echo_counts(e, &s, "t", MESSAGES)[i] >= 1
        })
        .await;
    }
    env.say(&s, "t", "ask: proceed?");
    env.wait("prompt", |e| {
        e.transcript(&s, "t")
            .iter()
            .any(|(t, _)| t == "pending_prompt")
    })
    .await;
    env.say(&s, "t", "yes");
    env.wait("answered", |e| e.has(&s, "t", "text", "answered: Approve"))
        .await;
    env.admin.clear_faults();
    let counts = echo_counts(&env, &s, "t", MESSAGES);
    assert!(counts.iter().all(|c| *c == 1), "echo counts {counts:?}");
    assert_no_duplicate_posts(&env, &s, "t");
    let activity = env.activity(&s);
    assert_eq!(
        activity.iter().filter(|t| *t == "thread_active").count(),
        1,
        "{activity:?}"
    );
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_and_unknown_writes_are_retried_without_duplicates() {
    let env = Env::new().await;
    let s = env.session("ses_unknown");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.wait_attached(&s).await;
    // The next envelope writes fail outright; the next posts land but their answers are lost.
    env.admin.set_faults(
        "upload_session_object",
        Faults {
            rate_5xx: 1.0,
            times: Some(3),
            ..Faults::default()
        },
    );
    env.admin.set_faults(
        "post_session_thread_item",
        Faults {
            rate_drop: 1.0,
            after_apply: true,
            times: Some(3),
            ..Faults::default()
        },
    );
    env.handoff(&s, "t");
    env.wait("active despite failed writes", |e| {
        e.state(&s, "t") == "active"
    })
    .await;
    env.say(&s, "t", "m0");
    env.wait("m0 echoed", |e| echo_counts(e, &s, "t", 1)[0] >= 1)
        .await;
    env.wait("turn ended", |e| {
        e.transcript(&s, "t").iter().any(|(t, _)| t == "turn_end")
    })
    .await;
    assert_eq!(echo_counts(&env, &s, "t", 1), [1]);
    assert_no_duplicate_posts(&env, &s, "t");
    assert_no_duplicate_posts(&env, &s, "worker");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_around_questions_asks_and_answers_each_once() {
    const ROUNDS: usize = 6;
    let env = Env::new().await;
    let s = env.session("ses_crash_ask");
    env.configure(&[&s], 4, "");
    let mut worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    let mut rng = Rng(0x5eed_0000_0000_0042);
    let count = |e: &Env, ty: &str| {
        e.transcript(&s, "t")
            .iter()
            .filter(|(t, _)| t == ty)
            .count()
    };
    for i in 0..ROUNDS {
        env.say(&s, "t", &format!("ask: q{i}"));
        env.wait(&format!("q{i} asked"), |e| {
            count(e, "pending_prompt") == i + 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(200))).await;
        worker.child.kill().await.unwrap();
        worker = env.start().await;
        env.say(&s, "t", "yes");
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        worker.child.kill().await.unwrap();
        worker = env.start().await;
        // The answer reaches the agent, or, when the second kill cut the turn that carried it
        // after the agent had begun it, that turn is visibly closed `interrupted` (a turn the
        // agent began is not replayed, by design).
        env.wait(&format!("q{i} answered or its turn closed"), |e| {
            settled(&e.transcript(&s, "t"), i) != Settled::Open
        })
        .await;
    }
    let transcript = env.transcript(&s, "t");
    let outcomes: Vec<Settled> = (0..ROUNDS).map(|i| settled(&transcript, i)).collect();
    assert_eq!(count(&env, "pending_prompt"), ROUNDS, "{transcript:#?}");
    let answered = outcomes.iter().filter(|o| **o == Settled::Answered).count();
    assert!(
        answered * 2 >= ROUNDS,
        "only {answered} of {ROUNDS} answers reached the agent: {outcomes:?}\n{transcript:#?}"
    );
    let texts: Vec<&String> = transcript
        .iter()
        .filter(|(t, _)| t == "text")
        .map(|(_, x)| x)
        .collect();
    let answers = texts
        .iter()
        .filter(|x| **x == "answered: Approve" || x.contains("was answered: Approve"))
        .count();
    assert_eq!(
        answers, answered,
        "an answer was delivered twice: {transcript:#?}"
    );
    assert!(
        !texts.iter().any(|x| x.as_str() == "echo: yes"),
        "an answer was replayed as a message: {transcript:#?}"
    );
    assert_no_duplicate_posts(&env, &s, "t");
    worker.terminate().await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Open,
    Answered,
    Closed,
}

/// Question `q<i>` as the person sees it: after its answer was resolved (the `i`-th
/// `pending_prompt_resolved`) and before the next question, the agent's text saying it got the
/// answer and the end of that turn, or a turn closed `interrupted`.
fn settled(transcript: &[(String, String)], i: usize) -> Settled {
    let Some(resolved) = transcript
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| t == "pending_prompt_resolved")
        .nth(i)
        .map(|(at, _)| at)
    else {
        return Settled::Open;
    };
    let next_ask = format!("ask: q{}", i + 1);
    let after = transcript[resolved..]
        .iter()
        .take_while(|(t, x)| !(t.is_empty() && *x == next_ask));
    // Answered counts once the turn that carried the answer has ended, so the next question is
    // not posted into it.
    let (mut answered, mut closed) = (false, false);
    for (t, x) in after {
        if t == "text" && (x == "answered: Approve" || x.contains("was answered: Approve")) {
            answered = true;
        } else if t == "turn_end" {
            if answered {
                return Settled::Answered;
            }
            closed |= x.contains("interrupted");
        }
    }
    if closed {
        Settled::Closed
    } else {
        Settled::Open
    }
}

/// An agent must not outlive a worker killed with SIGKILL: its cleanup never runs then, and an
/// orphaned agent would go on working in the folder where the restarted worker starts another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_leaves_no_agent_running() {
    let env = Env::new().await;
    let s = env.session("ses_orphan");
    env.configure(&[&s], 4, "");
    let mut worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    env.say(&s, "t", "sleep: 600000");
    let work_folder = env.work_folder().to_path_buf();
    eventually("the agent runs", || agent_processes(&work_folder) == 1).await;
    worker.child.kill().await.unwrap();
    eventually("the agent died with the worker", || {
        agent_processes(&work_folder) == 0
    })
    .await;
}

/// A message whose fetch fails even after the host's retries is fetched again shortly, without
/// waiting for another event (the reference leaves it until someone posts again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_fetch_fails_is_fetched_again() {
    let env = Env::new().await;
    let s = env.session("ses_refetch");
    env.configure(&[&s], 4, "");
    let worker = env.start().await;
    env.handoff(&s, "t");
    env.wait_state(&s, "t", "active").await;
    let refused = |e: &Env| {
        e.admin
            .requests()
            .iter()
            .filter(|r| {
                r.command.as_deref() == Some("list_session_thread_items") && r.status == 503
            })
            .count()
    };
    env.admin.set_faults(
        "list_session_thread_items",
        Faults {
            rate_5xx: 1.0,
            ..Faults::default()
        },
    );
    env.say(&s, "t", "hello");
    // A thread fetches its items one read at a time, so twice the host's attempts in a row
    // contain at least one whole read that failed for good. No event follows that would start
    // another fetch: only the thread's own recheck can deliver the message now.
    let attempts = blobhub_worker::api::RetryPolicy::default().max_attempts as usize;
    env.wait("a fetch that fails for good", |e| {
        refused(e) >= 2 * attempts
    })
    .await;
    env.admin.clear_faults();
    env.wait("the echo", |e| e.has(&s, "t", "text", "echo: hello"))
        .await;
    let outcome = worker.terminate().await;
    assert!(
        outcome.stderr.contains("ingest_failed"),
        "a fetch should have failed for good: {}",
        outcome.stderr
    );
}
