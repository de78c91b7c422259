//! Fixture: a job type built against the frozen `blobhub:worker@0.1.0` (`wit/since_v0.1.0/`)
//! with `wit_bindgen` directly, as an author who never updated would have built it. The host
//! must still load it and run its sections through its 0.1.0 bindings.
//!
//! `run` proves the imports work end to end: it reads the session, writes the object `wit-v0-1-0`
//! (`{"wit": "0.1.0", "session": <session id>, "worker": <version>}`), shows a status row, and
//! waits for shutdown. `validate` warns nothing (0.1.0 has no severities) and refuses a section
//! whose settings say `"refuse": true`, with the code `V010_REFUSED`.

wit_bindgen::generate!({
    path: "../../../wit/since_v0.1.0",
    world: "job-type",
    generate_all,
});

use blobhub::worker::{session, status, types, worker};
use exports::blobhub::worker::job;

struct V010;

/// Waits for a reply; imports never block, `wasi:io/poll` does.
fn wait(reply: &session::Reply) -> Result<String, session::ApiError> {
    loop {
        reply.subscribe().block();
        if let Some(result) = reply.take() {
            return result;
        }
    }
}

fn failed(code: &str, message: String) -> job::Outcome {
    job::Outcome {
        code: Some(code.into()),
        message,
    }
}

impl job::Guest for V010 {
    fn describe() -> job::Descriptor {
        job::Descriptor {
            name: "wit_v0_1_0".into(),
            version: "0.1.0".into(),
            summary: "Fixture built against blobhub:worker@0.1.0".into(),
            capabilities: vec![job::Capability::Session],
        }
    }

    fn validate(sections: Vec<types::Section>) -> Vec<job::SectionCheck> {
        sections
            .into_iter()
            .map(|s| {
                let refused = s.settings.contains("\"refuse\":true");
                job::SectionCheck {
                    index: s.index,
                    state_key: (!refused).then(|| format!("s{}", s.index)),
                    diagnostics: if refused {
                        vec![types::Diagnostic {
                            code: "V010_REFUSED".into(),
                            message: "the section asked to be refused".into(),
                            field: Some(format!("sections[{}].refuse", s.index)),
                        }]
                    } else {
                        vec![]
                    },
                }
            })
            .collect()
    }

    fn run(_section: types::Section) -> job::Outcome {
        let answer = match wait(&session::get_session()) {
            Ok(answer) => answer,
            Err(e) => return failed("V010_SESSION_FAILED", format!("{e:?}")),
        };
        // `"id":"ses_..."` of the session object, without a JSON parser.
        let id = answer
            .split("\"id\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("")
            .to_owned();
        let value = format!(
            "{{\"wit\":\"0.1.0\",\"session\":\"{id}\",\"worker\":\"{}\"}}",
            worker::identity().version
        );
        if let Err(e) = wait(&session::upload_object("wit-v0-1-0", &value)) {
            return failed("V010_UPLOAD_FAILED", format!("{e:?}"));
        }
        status::set_section("attached", "built against blobhub:worker@0.1.0");
        worker::shutdown_signal().block();
        job::Outcome {
            code: None,
            message: "shutdown".into(),
        }
    }
}

export!(V010);
