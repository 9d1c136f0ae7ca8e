//! The admin's commands against the real API server and directory.

use kube::Api;
use serde_json::json;
use usersync::api::DirectoryUser;

use crate::ldap_support::Server;
use crate::support::{stderr, stdout, usersync};
use crate::world::World;

#[tokio::test]
async fn import_csv_reports_each_bad_row_and_applies_nothing_then_imports_a_good_file() {
    let w = World::new("csv", Server::slapd(), json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "username,email,department\nann,ann@example.org,Sales\nbo,not-an-address,\n,x@example.org,\n").unwrap();
    let out = usersync(["import-csv", bad.to_str().unwrap(), "-n", &w.ns.name]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.csv:3: email \"not-an-address\" is not an address"),
        "{err}"
    );
    assert!(err.contains("bad.csv:4: username is empty"), "{err}");
    assert!(w.users().await.is_empty(), "a bad file was half-applied");

    let good = dir.path().join("good.csv");
    std::fs::write(&good, "username,email,displayName,department\nann,ann@example.org,Ann A,Sales\nbo,bo@example.org,Bo B,\n").unwrap();
    let out = usersync(["import-csv", good.to_str().unwrap(), "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 created"), "{}", stdout(&out));
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    let ann = users.get("csv-ann").await.unwrap();
    assert_eq!(format!("{:?}", ann.spec.origin), "CSV");
    assert_eq!(
        ann.spec.attributes.get("department").map(String::as_str),
        Some("Sales")
    );

    // A CSV user is never touched by sync, and a directory user with its name is reported.
    w.add_user("ann", false);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!((run.imported, run.skipped), (0, 1), "{run:?}");
    assert_eq!(
        users
            .get("csv-ann")
            .await
            .unwrap()
            .metadata
            .resource_version,
        ann.metadata.resource_version
    );
}

#[tokio::test]
async fn plan_shows_what_a_run_would_do_and_applies_nothing() {
    let w = World::new("plan", Server::slapd(), json!({"dryRun": true})).await;
    w.add_user("cleo", false);
    w.add_user("dirk", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let out = usersync(["plan", "staff", "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("import") && text.contains("cleo") && text.contains("dirk"),
        "{text}"
    );
    let out = usersync(["plan", "staff", "-n", &w.ns.name, "-o", "json"]);
    let plan: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("plan -o json prints JSON");
    assert_eq!(plan["counts"]["imported"], 2, "{plan}");
    assert!(w.users().await.is_empty(), "plan applied something");
}

// Multi-threaded: the command blocks one thread while the in-process operator runs on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_command_requests_a_run_and_reports_its_outcome() {
    let w = World::new("clisync", Server::slapd(), json!({})).await;
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.add_user("edna", false);
    let out = usersync(["sync", "staff", "-n", &w.ns.name, "--timeout", "60s"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("Succeeded"), "{}", stdout(&out));
    assert_eq!(w.state("edna").await, "Active");
}

#[tokio::test]
async fn preserve_and_unpreserve_from_the_command_line_take_effect_on_the_next_run() {
    let w = World::new("cli-preserve", Server::slapd(), json!({})).await;
    let ns = w.ns.name.clone();
    w.add_user("gil", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let name = kube::ResourceExt::name_any(&w.user("gil").await);

    let out = usersync(["preserve", &name, "-n", &ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user = w.user("gil").await;
    assert!(user.spec.preserve);
    let managers: Vec<String> = user
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains("f:preserve"))
        })
        .filter_map(|m| m.manager)
        .collect();
    assert_eq!(
        managers,
        ["usersync-admin"],
        "the admin's field, never the operator's"
    );
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("gil").await, "Preserved/Manual");

    let list = usersync(["users", "-n", &ns]);
    assert!(list.status.success(), "{}", stderr(&list));
    let line = stdout(&list)
        .lines()
        .find(|l| l.starts_with(&name))
        .map(str::to_string)
        .expect("the user is listed");
    assert!(
        line.contains("Preserved") && line.contains("Manual") && line.ends_with("yes"),
        "{line}"
    );

    let out = usersync(["unpreserve", &name, "-n", &ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let run = w.sync("staff").await;
    assert_eq!(run.reenabled, 1, "{run:?}");
    assert_eq!(w.state("gil").await, "Active");

    let out = usersync(["preserve", "corp-nobody", "-n", &ns]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no DirectoryUser"),
        "{}",
        stderr(&out)
    );
}

/// `usersync explain` as JSON.
fn explain(ns: &str, user: &str) -> serde_json::Value {
    let out = usersync(["explain", user, "-n", ns, "-o", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[tokio::test]
async fn explain_says_why_a_user_is_in_its_state_and_why_one_is_not_imported() {
    let w = World::new(
        "explain",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "24h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let ns = w.ns.name.clone();
    w.add_user("ann", false);
    w.add_user("bea", false);
    w.add_user("cy", true);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("bea", true);
    let run = w.sync("staff").await;
    assert_eq!(run.preserved, 1, "{run:?}");

    // Active, by username: the rule, its mapping's conditions, the last run.
    let out = usersync(["explain", "ann", "-n", &ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Directory record: Active")
            && text.contains("Active while its directory account is enabled")
            && text.contains("mapping staff:")
            && text.contains("Synced=True")
            && text.contains("connector corp:")
            && text.contains("Connected=True"),
        "{text}"
    );
    // By anchor, the same record.
    let anchor = w
        .user("ann")
        .await
        .spec
        .anchor
        .clone()
        .expect("a directory user has an anchor");
    let report = explain(&ns, &anchor);
    assert_eq!(
        report["records"][0]["record"]["fields"]["username"], "ann",
        "{report}"
    );

    // Preserved, by record name: the deadline not reached, the connector permits
    // deletions, and the transition in its history.
    let bea = kube::ResourceExt::name_any(&w.user("bea").await);
    let report = explain(&ns, &bea);
    let e = &report["records"][0];
    assert_eq!(e["record"]["state"], "Preserved", "{e}");
    assert!(
        e["explanation"]["rule"]
            .as_str()
            .unwrap()
            .contains("the directory marks the account disabled"),
        "{e}"
    );
    let needs = e["explanation"]["deletionNeeds"].as_array().unwrap();
    let met: Vec<(&str, bool)> = needs
        .iter()
        .map(|n| (n["what"].as_str().unwrap(), n["met"].as_bool().unwrap()))
        .collect();
    assert_eq!(
        &met[..2],
        [("deadline", false), ("connector", true)],
        "{needs:?}"
    );
    let history = e["history"].as_array().unwrap();
    assert!(
        history
            .iter()
            .any(|h| h["what"].as_str().unwrap().starts_with("Preserved")),
        "{history:?}"
    );

    // Frozen deletions show as the unmet need, with the cause.
    w.set_deletions_allowed(false).await;
    let report = explain(&ns, &bea);
    let connector = &report["records"][0]["explanation"]["deletionNeeds"][1];
    assert_eq!(connector["met"], false, "{connector}");
    assert!(
        connector["detail"]
            .as_str()
            .unwrap()
            .contains("deletionsAllowed: false"),
        "{connector}"
    );

    // Not imported: disabled in the directory, or in no mapping's scope.
    let report = explain(&ns, "cy");
    assert_eq!(report["records"].as_array().unwrap().len(), 0);
    let why = report["notImported"][0]["why"].as_str().unwrap();
    assert!(why.contains("disabled in the directory"), "{why}");
    let out = usersync(["explain", "nobody", "-n", &ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("no user record matches \"nobody\"")
            && text.contains("mapping staff: not in its scope"),
        "{text}"
    );

    // Not imported because a Manual user has its username: both are told.
    w.apply(
        &json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryUser",
        "metadata": {"name": "dee-by-hand"}, "spec": {"origin": "Manual", "username": "dee"}}),
    );
    w.add_user("dee", false);
    w.sync("staff").await;
    let report = explain(&ns, "dee");
    assert_eq!(
        report["records"][0]["record"]["origin"], "Manual",
        "{report}"
    );
    let why = report["notImported"][0]["why"].as_str().unwrap();
    assert!(
        why.contains("not imported") && why.contains("already used by Manual user dee-by-hand"),
        "{why}"
    );

    // An admin's preserve not applied yet, then applied.
    let ann = kube::ResourceExt::name_any(&w.user("ann").await);
    let out = usersync(["preserve", &ann, "-n", &ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rule = explain(&ns, "ann")["records"][0]["explanation"]["rule"].clone();
    assert!(
        rule.as_str().unwrap().contains("asked to preserve it"),
        "{rule}"
    );
    w.sync("staff").await;
    let e = explain(&ns, "ann")["records"][0]["explanation"].clone();
    assert!(
        e["rule"].as_str().unwrap().contains("by an admin")
            && e["deletionNeeds"][0]["detail"]
                .as_str()
                .unwrap()
                .contains("deleteManuallyPreserved"),
        "{e}"
    );
}
