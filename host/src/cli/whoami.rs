//! `whoami`: the API URL, the user the key belongs to, the state tree and whether a worker runs.
//!
//! Everything but the user comes from the state tree, so it is shown even when BlobHub cannot be
//! asked: then the user is the one `login` recorded, and the command says the server did not
//! answer (and exits 1 with that error).

use std::process::ExitCode;

use serde_json::json;

use super::{Output, state_tree};
use crate::api::{Client, RetryPolicy};
use crate::coded::CodedError;
use crate::instance_lock::current_holder;

pub async fn run(output: &Output) -> anyhow::Result<ExitCode> {
    let tree = state_tree()?;
    let credentials = tree.load_credentials().map_err(CodedError::from)?;
    let recorded = tree.load_identity().ok();
    let running = current_holder(&tree.instance_path());
    let client = Client::new(
        &credentials.api.url,
        credentials.api.key.expose(),
        RetryPolicy::interactive(),
    )
    .map_err(CodedError::from)?;
    let answer = client.users_me().await;
    let running_text = match &running {
        Some(i) => format!("yes ({}, pid {} on {})", i.instance_id, i.pid, i.host),
        None => "no".to_owned(),
    };

    let user = match answer {
        Ok(user) => user,
        Err(err) => {
            // The server is down or refused the key: show what this tree knows, then the error.
            let coded = CodedError::from(err);
            let recorded_text = match &recorded {
                Some(r) => format!(
                    "{}, recorded by login at {}",
                    describe(&r.user.name, &r.user.email, &r.user.user_id),
                    r.user.recorded_at
                ),
                None => "not recorded (run `blobhub-worker login`)".to_owned(),
            };
            let human = format!(
                "api_url:    {}\nuser:       {recorded_text}\nstate_tree: {}\nrunning:    {running_text}\nserver:     not confirmed: {}: {}",
                client.api_url(),
                tree.root().display(),
                coded.code,
                coded.message
            );
            output.result(
                &human,
                json!({
                    "api_url": client.api_url(),
                    "user": null,
                    "recorded_user": recorded.as_ref().map(|r| &r.user),
                    "state_tree": tree.root(),
                    "running": running.is_some(),
                    "instance": running,
                    "server": {"reachable": false, "code": coded.code, "message": coded.message},
                }),
            );
            let hint = match coded.code.as_ref() {
                "AUTH_INVALID" => {
                    "the stored key was refused; run `blobhub-worker login` with a valid key"
                        .to_owned()
                }
                _ => format!(
                    "BlobHub at {} did not answer; the lines above are the local state. Check the network, or change the URL with `blobhub-worker login --api-url URL`",
                    client.api_url()
                ),
            };
            return Err(coded.with_hint(hint).into());
        }
    };
    let matches = recorded.as_ref().map(|r| r.user.user_id == user.id);

    let mut human = format!(
        "api_url:    {}\nuser:       {}\nstate_tree: {}\nrunning:    {running_text}",
        client.api_url(),
        describe(&user.name, &user.email, &user.id),
        tree.root().display(),
    );
    match (&recorded, matches) {
        (None, _) => human.push_str("\nidentity:   not recorded (run `blobhub-worker login`)"),
        (Some(r), Some(false)) => human.push_str(&format!(
            "\nidentity:   MISMATCH: recorded {} ({}); `start` will refuse",
            r.user.user_id, r.user.name
        )),
        _ => {}
    }
    output.result(
        &human,
        json!({
            "api_url": client.api_url(),
            "user": user,
            "state_tree": tree.root(),
            "running": running.is_some(),
            "instance": running,
            "recorded_user_id": recorded.map(|r| r.user.user_id),
            "identity_matches": matches,
            "server": {"reachable": true},
        }),
    );
    Ok(ExitCode::SUCCESS)
}

/// `Name <email> (id)`, leaving out the parts that are empty.
fn describe(name: &str, email: &str, id: &str) -> String {
    let mut out = String::new();
    if !name.is_empty() {
        out.push_str(name);
        out.push(' ');
    }
    if !email.is_empty() {
        out.push_str(&format!("<{email}> "));
    }
    if out.is_empty() {
        id.to_owned()
    } else {
        format!("{out}({id})")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_user_is_described_by_what_is_known() {
        assert_eq!(super::describe("Ann", "a@x", "usr_1"), "Ann <a@x> (usr_1)");
        assert_eq!(super::describe("", "", "usr_1"), "usr_1");
        assert_eq!(super::describe("Ann", "", "usr_1"), "Ann (usr_1)");
    }
}
