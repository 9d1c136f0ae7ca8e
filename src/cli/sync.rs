//! `usersync sync <mapping>`: ask for a run now, through the on-demand annotation.

use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

use crate::api::{DirectoryMapping, RunResult, RunSummary, SYNC_REQUESTED_ANNOTATION};

/// The field manager of the CLI's annotation writes.
const CLI_FIELD_MANAGER: &str = "usersync-cli";

/// How a requested sync ended.
#[derive(Debug)]
pub enum SyncOutcome {
    /// The request was recorded; the operator will act on it (no waiting asked).
    Requested(String),
    /// The operator refused it (a run is in progress, or the mapping is not ready).
    Refused(String),
    /// The run finished.
    Finished(RunSummary),
}

/// Set the annotation to a new value and, with `wait`, follow the request to its end.
pub async fn request_sync(
    client: Client,
    namespace: &str,
    mapping: &str,
    wait: Option<Duration>,
) -> anyhow::Result<SyncOutcome> {
    let api: Api<DirectoryMapping> = Api::namespaced(client, namespace);
    let value = jiff::Timestamp::now().to_string();
    let request = serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryMapping",
        "metadata": {"name": mapping, "annotations": {SYNC_REQUESTED_ANNOTATION: value}},
    });
    api.patch(
        mapping,
        &PatchParams::apply(CLI_FIELD_MANAGER).force(),
        &Patch::Apply(&request),
    )
    .await?;
    let Some(wait) = wait else {
        return Ok(SyncOutcome::Requested(value));
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut run_id = None;
    loop {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting after {wait:?}; the request stays recorded"
        );
        let status = api.get(mapping).await?.status.unwrap_or_default();
        match (
            &run_id,
            status.last_sync_request.filter(|r| r.value == value),
        ) {
            (None, Some(request)) => match request.outcome.strip_prefix("Started run ") {
                Some(id) => run_id = Some(id.to_string()),
                None => return Ok(SyncOutcome::Refused(request.outcome)),
            },
            (Some(id), _) => {
                if let Some(run) = status
                    .last_run
                    .filter(|r| &r.id == id && !status.sync_in_progress)
                {
                    return Ok(SyncOutcome::Finished(run));
                }
            }
            (None, None) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The process exit code for an outcome: 0 when the run succeeded (or was only requested).
pub fn exit_code(outcome: &SyncOutcome) -> i32 {
    match outcome {
        SyncOutcome::Requested(_) => 0,
        SyncOutcome::Refused(_) => 3,
        SyncOutcome::Finished(run) => match run.result {
            RunResult::Succeeded | RunResult::DryRun => 0,
            RunResult::Blocked => 4,
            RunResult::Failed => 5,
        },
    }
}
