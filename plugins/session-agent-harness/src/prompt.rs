//! The interactive prompt protocol (docs/session-agent-harness.md): the shapes of
//! `pending_prompt` / `pending_prompt_resolved` items, mapping a person's reply onto the open
//! prompt's questions, and adopting an open prompt after a restart.
//!
//! Only **held** waits are implemented: the agent process stays alive and blocked on its request
//! until the answer arrives. Parked waits are not (yet); an approval answered after its agent is
//! gone becomes a one-shot grant (crate::grants) — see docs/session-agent-harness.md.

use serde_json::{Value, json};

/// Replies that approve an approval prompt (trimmed, lower-cased).
/// The label of an approval that also covers the agent's later calls of the same kind.
pub const APPROVE_FOR_SESSION: &str = "Approve for this session";

pub const AFFIRMATIVE: &[&str] = &["approve", "approved", "yes", "y", "ok", "allow", "1"];

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// `prm_<ULID>`.
    pub prompt_id: String,
    /// `approval`, `ask_user_question` or `text`.
    pub kind: String,
    pub questions: Vec<Value>,
}

impl Prompt {
    /// An agent's tool-permission request: one question, Approve / Deny.
    pub fn approval(prompt_id: String, tool: &str, question: &str) -> Prompt {
        let question = if question.is_empty() {
            format!("Allow the agent to use `{tool}`?")
        } else {
            question.to_string()
        };
        Prompt {
            prompt_id,
            kind: "approval".into(),
            questions: vec![json!({
                "question": question,
                "header": "permission",
                "options": [
                    {"label": "Approve", "description": ""},
                    {"label": "Deny", "description": ""},
                ],
                "multiSelect": false,
                "subject": tool,
            })],
        }
    }

    /// Offers a third choice, [`APPROVE_FOR_SESSION`], between Approve and Deny: the agent may
    /// then run the same kind of call again without asking (codex's `acceptForSession`).
    pub fn with_session_option(mut self) -> Prompt {
        if let Some(options) = self
            .questions
            .first_mut()
            .and_then(|q| q.get_mut("options"))
            .and_then(Value::as_array_mut)
        {
            options.insert(1, json!({"label": APPROVE_FOR_SESSION, "description": ""}));
        }
        self
    }

    /// Records which call an approval is for (`grant_key`, see crate::grants), so an answer
    /// given after the agent process is gone grants exactly that call.
    pub fn with_grant_key(mut self, key: Option<String>) -> Prompt {
        if let (Some(key), Some(q)) = (key, self.questions.first_mut()) {
            q["grant_key"] = json!(key);
        }
        self
    }

    /// The approval's `subject` and `grant_key` (from its first question).
    pub fn subject_and_key(&self) -> (String, Option<String>) {
        let q = self.questions.first();
        let field = |k: &str| {
            q.and_then(|q| q.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        (field("subject").unwrap_or_default(), field("grant_key"))
    }

    /// The first question's prose, for the dashboard.
    pub fn summary(&self) -> String {
        self.questions
            .first()
            .and_then(|q| q.get("question"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    /// `content[0].text` of the `pending_prompt` item: each question, then its numbered options.
    pub fn text(&self) -> String {
        let mut lines = Vec::new();
        for q in &self.questions {
            lines.push(
                q.get("question")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
            for (i, opt) in q
                .get("options")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let label = opt.get("label").and_then(Value::as_str).unwrap_or("");
                let desc = opt.get("description").and_then(Value::as_str).unwrap_or("");
                if desc.is_empty() {
                    lines.push(format!("  {}. {label}", i + 1));
                } else {
                    lines.push(format!("  {}. {label} — {desc}", i + 1));
                }
            }
        }
        lines.join("\n")
    }

    pub fn pending_metadata(&self) -> Value {
        json!({"type": "pending_prompt", "prompt": {
            "prompt_id": self.prompt_id, "kind": self.kind,
            "prompt_state": "pending", "questions": self.questions}})
    }

    pub fn answered_metadata(&self, answers: &[Value]) -> Value {
        json!({"type": "pending_prompt_resolved", "prompt": {
            "prompt_id": self.prompt_id, "kind": self.kind,
            "prompt_state": "answered", "answers": answers}})
    }

    pub fn cancelled_metadata(&self, reason: &str) -> Value {
        json!({"type": "pending_prompt_resolved", "prompt": {
            "prompt_id": self.prompt_id, "kind": self.kind,
            "prompt_state": "cancelled", "reason": reason}})
    }

    /// The person's reply as an answer set: a structured `metadata.answers` with one entry (an
    /// object whose `answer` is a list) per question is used verbatim; otherwise the text is
    /// mapped per kind.
    pub fn answers(&self, text: &str, structured: Option<&Value>) -> Vec<Value> {
        if let Some(list) = structured.and_then(Value::as_array)
            && list.len() == self.questions.len()
            && list
                .iter()
                .all(|a| a.get("answer").is_some_and(Value::is_array))
        {
            return list.clone();
        }
        let trimmed = text.trim();
        self.questions
            .iter()
            .map(|q| {
                let qtext = q.get("question").and_then(Value::as_str).unwrap_or("");
                let answer: Vec<String> = match self.kind.as_str() {
                    "approval" => {
                        let yes = lowercases_to_any(trimmed, AFFIRMATIVE);
                        match map_options(q, trimmed).first() {
                            Some(l) if l == APPROVE_FOR_SESSION => vec![l.clone()],
                            _ => vec![if yes { "Approve" } else { "Deny" }.to_string()],
                        }
                    }
                    "text" => vec![text.to_string()],
                    _ => map_options(q, trimmed),
                };
                json!({"question": qtext, "answer": answer})
            })
            .collect()
    }
}

/// Options matched by 1-based number or case-insensitive label; free text otherwise.
fn map_options(q: &Value, text: &str) -> Vec<String> {
    let options: Vec<&str> = q
        .get("options")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("label").and_then(Value::as_str))
        .collect();
    let resolve = |token: &str| -> Option<String> {
        if let Ok(n) = token.parse::<usize>()
            && (1..=options.len()).contains(&n)
        {
            return Some(options[n - 1].to_string());
        }
        options
            .iter()
            .find(|l| l.eq_ignore_ascii_case(token))
            .map(|l| l.to_string())
    };
    if !options.is_empty() {
        if q.get("multiSelect")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            let picked: Vec<String> = text
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .filter_map(resolve)
                .collect();
            if !picked.is_empty() {
                return picked;
            }
        } else if let Some(label) = resolve(text) {
            return vec![label];
        }
    }
    vec![text.to_string()]
}

/// The labels of an answer set, as one string per question.
fn labels(answers: &[Value]) -> Vec<String> {
    answers
        .iter()
        .map(|a| {
            a.get("answer")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

/// `✓ Answered: <labels>`.
pub fn answered_text(answers: &[Value]) -> String {
    format!("✓ Answered: {}", labels(answers).join("; "))
}

/// `✗ Cancelled` or `✗ Cancelled: <reason>`.
pub fn cancelled_text(reason: &str) -> String {
    if reason.is_empty() {
        "✗ Cancelled".into()
    } else {
        format!("✗ Cancelled: {reason}")
    }
}

/// Replies that deny an approval and say nothing more.
const BARE_DENIALS: &[&str] = &[
    "deny", "denied", "no", "n", "nope", "reject", "rejected", "0", "2",
];

/// The message a tool use is denied with: the person's own words when they gave reasons.
pub fn denial_for_agent(reply: &str) -> String {
    let reply = reply.trim();
    if reply.is_empty() || lowercases_to_any(reply, BARE_DENIALS) {
        "The person denied this tool use. Do not retry it; choose another approach.".into()
    } else {
        format!("The person denied this tool use and said: {reply}")
    }
}

/// What an agent is told when its request is parked (`wait: parked`): nobody refused.
pub const PARK_NOTICE: &str = "This request is parked waiting for a person; nobody refused it. \
Stop here: you will be told the answer in your next turn, when they reply.";

/// The turn an agent gets when it is resumed after a transient model-API failure cut its
/// previous attempt short.
pub const CONTINUE_AFTER_TRANSIENT_ERROR: &str = "Your previous attempt at this turn was cut \
short by a transient error of the model API. Continue where you left off.";

/// What the agent is told: the first question's labels, joined.
pub fn answer_for_agent(answers: &[Value]) -> String {
    labels(answers).into_iter().next().unwrap_or_default()
}

/// The message a resumed agent session gets for a question answered after the process that
/// asked it was gone.
pub fn resume_text(question: &str, answers: &[Value]) -> String {
    format!(
        "Your earlier question \"{question}\" was answered: {}",
        answer_for_agent(answers)
    )
}

/// What to do with a person's message met again after a restart, given the metadata of a
/// `pending_prompt_resolved` item the worker posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// The item does not name an answer message.
    Unrelated,
    /// Message `0` answered a prompt inside a turn: the agent had it; drop it.
    Drop(String),
    /// Message `0` answered an adopted prompt: it becomes this resume message again.
    Resume(String, String),
}

pub fn replayed(meta: &Value) -> Replayed {
    if meta.get("type").and_then(Value::as_str) != Some("pending_prompt_resolved")
        || meta.pointer("/prompt/prompt_state").and_then(Value::as_str) != Some("answered")
    {
        return Replayed::Unrelated;
    }
    let Some(answer_id) = meta.get("answer_item_id").and_then(Value::as_str) else {
        return Replayed::Unrelated;
    };
    if meta.get("turn_id").and_then(Value::as_str).is_some() {
        return Replayed::Drop(answer_id.to_string());
    }
    let answers = meta
        .pointer("/prompt/answers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let question = answers
        .first()
        .and_then(|a| a.get("question"))
        .and_then(Value::as_str)
        .unwrap_or("");
    Replayed::Resume(answer_id.to_string(), resume_text(question, &answers))
}

/// The verdict of an approval: the first label of the first answer is affirmative.
pub fn approved(answers: &[Value]) -> bool {
    let first = answers
        .first()
        .and_then(|a| a.get("answer"))
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .and_then(Value::as_str)
        .unwrap_or("");
    let first = first.trim();
    lowercases_to_any(first, AFFIRMATIVE)
        || lowercases_to(first, &APPROVE_FOR_SESSION.to_ascii_lowercase())
}

/// Whether `text.to_lowercase()` is one of `words` (ASCII, lowercase).
fn lowercases_to_any(text: &str, words: &[&str]) -> bool {
    words.iter().any(|w| lowercases_to(text, w))
}

/// Whether `text.to_lowercase() == word`, for `word` ASCII and lowercase, without
/// `to_lowercase`: its Unicode case table is ~11 KB of read-only data in the component, which
/// every section maps (docs/benchmarks.md, issue 14). The one character outside ASCII whose
/// lowercase is ASCII is U+212A KELVIN SIGN ('k'); any other lowercases to something else than
/// a single ASCII character, so it never matches an ASCII word.
fn lowercases_to(text: &str, word: &str) -> bool {
    let mut chars = text.chars();
    word.chars().all(|w| {
        chars
            .next()
            .is_some_and(|c| c.to_ascii_lowercase() == w || (c == '\u{212A}' && w == 'k'))
    }) && chars.next().is_none()
}

/// Whether an approval was given for the rest of the agent's session.
pub fn for_session(answers: &[Value]) -> bool {
    answers
        .first()
        .and_then(|a| a.get("answer"))
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .and_then(Value::as_str)
        .is_some_and(|l| l.trim().eq_ignore_ascii_case(APPROVE_FOR_SESSION))
}

/// The newest `pending_prompt` whose id has no `pending_prompt_resolved`, among a thread's items
/// (oldest first, any author) — the prompt a restarted worker adopts — with the `created_at` of
/// its item (only later messages can answer it).
pub fn adopt(items: &[Value]) -> Option<(Prompt, String)> {
    let mut adoption = Adoption::default();
    items.iter().for_each(|item| adoption.see(item));
    adoption.finish()
}

/// [`adopt`] over a thread read page by page: it keeps the prompts not resolved so far and the
/// ids of resolved ones, never the items.
#[derive(Debug, Default)]
pub struct Adoption {
    resolved: std::collections::HashSet<String>,
    /// Prompts seen and not resolved so far, oldest first, with their items' `created_at`.
    open: Vec<(Prompt, String)>,
}

impl Adoption {
    /// The next item of the thread (oldest first).
    pub fn see(&mut self, item: &Value) {
        match item.pointer("/metadata/type").and_then(Value::as_str) {
            Some("pending_prompt_resolved") => {
                if let Some(id) = item
                    .pointer("/metadata/prompt/prompt_id")
                    .and_then(Value::as_str)
                {
                    self.open.retain(|(p, _)| p.prompt_id != id);
                    self.resolved.insert(id.to_string());
                }
            }
            Some("pending_prompt") => {
                let Some(p) = item.pointer("/metadata/prompt") else {
                    return;
                };
                let Some(id) = p.get("prompt_id").and_then(Value::as_str) else {
                    return;
                };
                // Resolved before it was asked (out of order on the wire): never open.
                if self.resolved.contains(id) {
                    return;
                }
                let asked_at = item
                    .get("created_at")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let prompt = Prompt {
                    prompt_id: id.to_string(),
                    kind: p
                        .get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or("approval")
                        .to_string(),
                    questions: p
                        .get("questions")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                };
                self.open.push((prompt, asked_at));
            }
            _ => {}
        }
    }

    /// The prompt to adopt: the newest still open.
    pub fn finish(mut self) -> Option<(Prompt, String)> {
        self.open.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The same answers as `to_lowercase` (which the component does without).
        #[test]
        fn lowercases_to_matches_to_lowercase(
            text in "(?i:approve|yes|y|ok|deny|no|n|0|2|approve for this session)|[\\u{212A}kKıİſ ÿ]{0,3}|\\PC{0,6}"
        ) {
            for words in [AFFIRMATIVE, BARE_DENIALS, &["approve for this session"]] {
                proptest::prop_assert_eq!(
                    lowercases_to_any(&text, words),
                    words.contains(&text.to_lowercase().as_str()),
                    "{:?}", text
                );
            }
        }
    }

    #[test]
    fn the_kelvin_sign_lowercases_to_k() {
        assert!(lowercases_to_any("O\u{212A}", AFFIRMATIVE));
        assert!(lowercases_to_any("YeS", AFFIRMATIVE));
        assert!(!lowercases_to_any("yes!", AFFIRMATIVE));
        assert!(!lowercases_to_any("\u{130}", &["i"]));
    }

    #[test]
    fn the_session_option_is_offered_and_recognised() {
        let p = Prompt::approval("prm_1".into(), "shell", "Run `ls`?").with_session_option();
        assert_eq!(
            p.text(),
            "Run `ls`?\n  1. Approve\n  2. Approve for this session\n  3. Deny"
        );
        for text in ["2", "approve for this session"] {
            let a = p.answers(text, None);
            assert!(approved(&a) && for_session(&a), "{text}");
        }
        let a = p.answers("yes", None);
        assert!(approved(&a) && !for_session(&a));
        let a = p.answers("3", None);
        assert!(!approved(&a));
        // Without the option, "2" is still Deny.
        let plain = Prompt::approval("prm_2".into(), "shell", "Run `ls`?");
        assert!(!approved(&plain.answers("2", None)));
    }

    #[test]
    fn approval_text_mapping() {
        let p = Prompt::approval("prm_1".into(), "Bash", "May I run `ls`?");
        assert_eq!(p.text(), "May I run `ls`?\n  1. Approve\n  2. Deny");
        for yes in ["yes", " Y ", "ok", "1", "APPROVE"] {
            let a = p.answers(yes, None);
            assert!(approved(&a), "{yes}");
            assert_eq!(answer_for_agent(&a), "Approve");
        }
        let a = p.answers("yes, but not on main", None);
        assert!(!approved(&a));
        assert_eq!(answered_text(&a), "✓ Answered: Deny");
    }

    #[test]
    fn structured_answers_are_used_verbatim_when_complete() {
        let p = Prompt::approval("prm_1".into(), "Bash", "q");
        let s = json!([{"question": "q", "answer": ["Approve"]}]);
        assert_eq!(p.answers("no", Some(&s)), s.as_array().unwrap().clone());
        let partial = json!([{"question": "q", "answer": "Approve"}]);
        assert!(!approved(&p.answers("no", Some(&partial))));
    }

    #[test]
    fn option_questions() {
        let p = Prompt {
            prompt_id: "prm_2".into(),
            kind: "ask_user_question".into(),
            questions: vec![
                json!({"question": "Pick", "options": [{"label": "A", "description": "first"}, {"label": "B"}], "multiSelect": false}),
                json!({"question": "Many", "options": [{"label": "A"}, {"label": "B"}], "multiSelect": true}),
            ],
        };
        assert_eq!(
            p.text(),
            "Pick\n  1. A — first\n  2. B\nMany\n  1. A\n  2. B"
        );
        let a = p.answers("2", None);
        assert_eq!(a[0]["answer"], json!(["B"]));
        assert_eq!(a[1]["answer"], json!(["B"]));
        let a = p.answers("a, 2", None);
        assert_eq!(a[0]["answer"], json!(["a, 2"]));
        assert_eq!(a[1]["answer"], json!(["A", "B"]));
        assert_eq!(answered_text(&a), "✓ Answered: a, 2; A, B");
    }

    #[test]
    fn replayed_answers() {
        let p = Prompt::approval("prm_1".into(), "ask", "ship?");
        let answers = p.answers("yes", None);
        let mut m = p.answered_metadata(&answers);
        assert_eq!(replayed(&m), Replayed::Unrelated);
        m["answer_item_id"] = json!("itm_9");
        assert_eq!(
            replayed(&m),
            Replayed::Resume(
                "itm_9".into(),
                "Your earlier question \"ship?\" was answered: Approve".into()
            )
        );
        m["turn_id"] = json!("trn_1");
        assert_eq!(replayed(&m), Replayed::Drop("itm_9".into()));
        assert_eq!(replayed(&p.cancelled_metadata("x")), Replayed::Unrelated);
    }

    #[test]
    fn adoption_picks_the_newest_unresolved() {
        let p1 = Prompt::approval("prm_1".into(), "t", "one");
        let p2 = Prompt::approval("prm_2".into(), "t", "two");
        let item = |m: Value| json!({"metadata": m});
        let items = vec![
            item(p1.pending_metadata()),
            item(p2.pending_metadata()),
            item(p2.answered_metadata(&[])),
        ];
        assert_eq!(adopt(&items).unwrap().0.prompt_id, "prm_1");
        let items = vec![
            item(p1.pending_metadata()),
            item(p1.cancelled_metadata("x")),
        ];
        assert!(adopt(&items).is_none());
        assert_eq!(cancelled_text(""), "✗ Cancelled");
    }

    #[test]
    fn adoption_page_by_page_keeps_only_open_prompts() {
        let item = |m: Value| json!({"metadata": m});
        let mut adoption = Adoption::default();
        // A thousand prompts asked and answered, then one left open, seen across "pages".
        for i in 0..1000 {
            let p = Prompt::approval(format!("prm_{i}"), "t", "q");
            adoption.see(&item(p.pending_metadata()));
            adoption.see(&item(p.answered_metadata(&[])));
        }
        assert!(adoption.open.is_empty(), "answered prompts are not kept");
        let open = Prompt::approval("prm_open".into(), "t", "q");
        adoption.see(&item(open.pending_metadata()));
        // A resolution seen before its prompt (out of order on the wire) keeps it closed.
        let early = Prompt::approval("prm_early".into(), "t", "q");
        adoption.see(&item(early.answered_metadata(&[])));
        adoption.see(&item(early.pending_metadata()));
        assert_eq!(adoption.finish().unwrap().0.prompt_id, "prm_open");
    }
}
