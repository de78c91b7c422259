//! `whoami`: the API URL, the user the key belongs to, the state tree and whether a worker runs.

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
    let client = Client::new(
        &credentials.api.url,
        credentials.api.key.expose(),
        RetryPolicy::default(),
    )
    .map_err(CodedError::from)?;
    let user = client.users_me().await.map_err(CodedError::from)?;
    let running = current_holder(&tree.instance_path());
    let matches = recorded.as_ref().map(|r| r.user.user_id == user.id);

    let mut human = format!(
        "api_url:    {}\nuser:       {} <{}> ({})\nstate_tree: {}\nrunning:    {}",
        client.api_url(),
        user.name,
        user.email,
        user.id,
        tree.root().display(),
        match &running {
            Some(i) => format!("yes ({}, pid {} on {})", i.instance_id, i.pid, i.host),
            None => "no".to_owned(),
        }
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
        }),
    );
    Ok(ExitCode::SUCCESS)
}
