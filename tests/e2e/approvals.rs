//! Approving a threshold-blocked run is a right of its own (RunApproval), held to
//! the approver's name by the shipped admission policy, used once, and recorded.

use std::process::Output;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use usersync::api::{
    APPROVE_RUN_ANNOTATION, ApprovalState, BlockedRun, DirectoryMapping, RunApproval, RunResult,
    find_condition,
};

use crate::ldap_support::Server;
use crate::support::{cluster, eventually, stderr, stdout};
use crate::world::{RUN_WAIT, World};

/// A mapping of ten users whose next run would preserve four, past 10%: blocked.
async fn blocked_world(test: &str) -> (World<'static>, BlockedRun) {
    let w = World::new(
        test,
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 10}}),
    )
    .await;
    for i in 0..10 {
        w.add_user(&format!("u{i}"), false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    for i in 0..4 {
        w.set_disabled(&format!("u{i}"), true);
    }
    let run = w.sync("staff").await;
    assert_eq!(run.result, RunResult::Blocked, "{run:?}");
    let blocked = mappings(&w)
        .get("staff")
        .await
        .unwrap()
        .status
        .unwrap()
        .blocked_run
        .unwrap();
    (w, blocked)
}

fn mappings(w: &World<'_>) -> Api<DirectoryMapping> {
    Api::namespaced(w.client.clone(), &w.ns.name)
}

/// A Role in the test namespace with `rules`, bound to user `user`.
fn grant(ns: &str, user: &str, rules: serde_json::Value) {
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": user}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": user},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": user},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]});
    let out = cluster().apply(ns, &objects.to_string());
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A mapping editor: everything on mappings, nothing on approvals.
fn editor_rules() -> serde_json::Value {
    json!([{"apiGroups": ["usersync.dev"], "resources": ["directorymappings"],
            "verbs": ["get", "list", "watch", "create", "update", "patch"]}])
}

/// What deploy/base/approver-rbac.yaml grants, here as a Role.
fn approver_rules() -> serde_json::Value {
    let text =
        std::fs::read_to_string(crate::support::repo().join("deploy/base/approver-rbac.yaml"))
            .unwrap();
    let role: serde_json::Value = serde_yaml::from_str(&text).unwrap();
    role["rules"].clone()
}

/// `usersync <args>` as `user` (the admin's kubeconfig, impersonating them).
fn usersync_as(user: &str, args: &[&str]) -> Output {
    let mut config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&cluster().kubeconfig).unwrap()).unwrap();
    for entry in config["users"].as_sequence_mut().unwrap() {
        entry["user"]["as"] = user.into();
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(args)
        .env("KUBECONFIG", &path)
        .env("USERSYNC_LOG", "warn")
        .output()
        .unwrap()
}

/// `kubectl <args>` as `user`, with `stdin`.
fn kubectl_as(user: &str, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let c = cluster();
    let mut child = std::process::Command::new(c.bin.join("kubectl"))
        .args(args)
        .args(["--as", user])
        .env("KUBECONFIG", &c.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn approval(name: &str, run_id: &str, approved_by: &str) -> String {
    json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "RunApproval", "metadata": {"name": name},
        "spec": {"mappingRef": "staff", "runId": run_id, "approvedBy": approved_by}})
    .to_string()
}

#[tokio::test]
async fn an_editor_of_mappings_cannot_approve_and_an_approver_is_named_in_the_run() {
    let (w, blocked) = blocked_world("approve-rights").await;
    let ns = w.ns.name.clone();
    grant(&ns, "erin", editor_rules());
    grant(&ns, "alice", approver_rules());

    // The editor may change the mapping, but not approve what that change caused.
    let out = usersync_as("erin", &["approve", "staff", &blocked.run_id, "-n", &ns]);
    assert!(
        !out.status.success(),
        "an editor approved: {}",
        stdout(&out)
    );
    assert!(stderr(&out).contains("forbidden"), "{}", stderr(&out));
    let out = kubectl_as(
        "erin",
        &["create", "-n", &ns, "-f", "-"],
        &approval("by-erin", &blocked.run_id, "erin"),
    );
    assert!(
        !out.status.success() && stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    // Nor with the annotation, which this policy does not accept.
    let out = kubectl_as(
        "erin",
        &[
            "annotate",
            "-n",
            &ns,
            "dmap",
            "staff",
            &format!("{APPROVE_RUN_ANNOTATION}={}", blocked.run_id),
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = mappings(&w).get("staff").await.unwrap().status.unwrap();
    assert_eq!(
        status.blocked_run.as_ref().map(|b| &b.run_id),
        Some(&blocked.run_id),
        "the annotation approved"
    );
    assert_eq!(w.state("u0").await, "Active", "the annotation approved");

    // The approver may not edit the mapping, and approves in their own name.
    let out = kubectl_as(
        "alice",
        &[
            "patch",
            "-n",
            &ns,
            "dmap",
            "staff",
            "--type=merge",
            "-p",
            r#"{"spec":{"priority":5}}"#,
        ],
        "",
    );
    assert!(
        !out.status.success() && stderr(&out).contains("forbidden"),
        "{}",
        stderr(&out)
    );
    let out = usersync_as("alice", &["approve", "staff", &blocked.run_id, "-n", &ns]);
    assert!(out.status.success(), "usersync approve: {}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains("as alice") && said.contains("preserves 4"),
        "{said}"
    );

    let run = w.wait_run("staff", Some(&blocked.run_id)).await;
    assert_eq!(
        (run.result, run.preserved),
        (RunResult::Succeeded, 4),
        "{run:?}"
    );
    assert_eq!(run.approved_by.as_deref(), Some("alice"), "{run:?}");
    assert_eq!(w.state("u0").await, "Preserved/DisabledInDirectory");

    // The approval says it was used, by which run; it is never used again.
    let approvals: Api<RunApproval> = Api::namespaced(w.client.clone(), &ns);
    let used = approvals
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("usersync approve created a RunApproval");
    assert_eq!(
        Some(run.approval_ref.as_deref().unwrap()),
        used.metadata.name.as_deref()
    );
    let status = used.status.unwrap();
    assert_eq!(status.state, Some(ApprovalState::Used));
    assert_eq!(status.consumed_by.as_deref(), Some(run.id.as_str()));
    assert_eq!(
        find_condition(&status.conditions, "Ready").unwrap().reason,
        "Used"
    );

    // The mapping's Event names the approver.
    let events: Api<Event> = Api::namespaced(w.client.clone(), &ns);
    let note = eventually(RUN_WAIT, "the approval's Event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("RunApproved")
                    && e.regarding.as_ref().and_then(|r| r.kind.as_deref())
                        == Some("DirectoryMapping")
            })?
            .note
    })
    .await;
    assert!(note.contains("approved by alice"), "{note}");
}

#[tokio::test]
async fn an_approval_in_another_name_is_refused_and_a_stale_one_does_nothing() {
    let (w, blocked) = blocked_world("approve-stale").await;
    let ns = w.ns.name.clone();
    let me = usersync::cli::approve::username(&w.client).await.unwrap();

    // The admission policy holds approvedBy to the requester, even an admin.
    let refused = eventually(
        Duration::from_secs(30),
        "the admission policy to refuse",
        || async {
            let out = cluster().apply(&ns, &approval("forged", &blocked.run_id, "mallory"));
            (!out.status.success()).then(|| stderr(&out))
        },
    )
    .await;
    assert!(
        refused.contains("spec.approvedBy must be the username of whoever approves"),
        "{refused}"
    );

    // An approval of a run that is not the blocked one is reported, and does nothing.
    let last = w.last_run("staff").await.unwrap();
    let out = cluster().apply(&ns, &approval("old", "20000101-000000-0000", &me));
    assert!(out.status.success(), "{}", stderr(&out));
    let approvals: Api<RunApproval> = Api::namespaced(w.client.clone(), &ns);
    let status = eventually(RUN_WAIT, "the approval to be found stale", || async {
        let status = approvals.get("old").await.ok()?.status?;
        (status.state == Some(ApprovalState::Stale)).then_some(status)
    })
    .await;
    let stalled = find_condition(&status.conditions, "Stalled").unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "Stale")
    );
    assert!(
        stalled.message.contains(&blocked.run_id),
        "{}",
        stalled.message
    );
    assert_eq!(status.consumed_by, None);
    let now = mappings(&w).get("staff").await.unwrap().status.unwrap();
    assert_eq!(
        now.last_run.unwrap().id,
        last.id,
        "a stale approval started a run"
    );
    assert_eq!(now.blocked_run.unwrap().run_id, blocked.run_id);
    assert_eq!(w.state("u0").await, "Active");

    // An approval's spec never changes: it records what was approved.
    let out = cluster().kubectl([
        "patch",
        "-n",
        &ns,
        "rapproval",
        "old",
        "--type=merge",
        "-p",
        &format!(r#"{{"spec":{{"runId":"{}"}}}}"#, blocked.run_id),
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("immutable"),
        "{}",
        stderr(&out)
    );
}
