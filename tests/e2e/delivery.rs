//! ProvisioningTargets end to end: from a change in a real directory, through the
//! registry, to the account in a real SCIM application (scim2-server, started by
//! tests/scim.sh). What the application holds is read from the application itself.

use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use usersync::api::{CycleSummary, ProvisioningTarget, SYNC_REQUESTED_ANNOTATION};

use crate::ldap_support::Server;
use crate::scim_support::{FaultProxy, Tenant};
use crate::support::{eventually, spawn_operator};
use crate::world::{RUN_WAIT, Scene, World};

/// The userNames of the application's users, sorted.
pub async fn user_names(app: &Tenant) -> Vec<String> {
    let mut names: Vec<String> = app
        .users()
        .await
        .iter()
        .map(|u| u["userName"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// The application's user with this userName, as the application answers.
pub async fn account(app: &Tenant, user_name: &str) -> Value {
    app.users()
        .await
        .into_iter()
        .find(|u| u["userName"] == user_name)
        .unwrap_or_else(|| panic!("the application has no user {user_name}"))
}

impl Scene {
    /// A target `name` over mapping `staff` to `app`, with `extra` spec fields.
    pub async fn target(&self, name: &str, app: &Tenant, extra: Value) {
        self.target_at(name, app.url.as_str(), &app.token, extra)
            .await;
    }

    /// A target `name` over mapping `staff` to the SCIM endpoint `url`.
    pub async fn target_at(&self, name: &str, url: &str, token: &str, extra: Value) {
        self.secret(&format!("{name}-token"), "token", token).await;
        self.apply_target(name, url, extra);
    }

    /// Apply target `name` to `url`, with the token its Secret `<name>-token` holds.
    pub fn apply_target(&self, name: &str, url: &str, extra: Value) {
        let mut spec = json!({
            "endpoint": url,
            "allowInsecureHttp": true,
            "auth": {"bearerTokenSecretRef": {"name": format!("{name}-token"), "key": "token"}},
            "users": {"mappings": ["staff"]},
            "interval": "1h",
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        self.apply(&json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "ProvisioningTarget",
            "metadata": {"name": name}, "spec": spec,
        }));
    }

    fn targets(&self) -> Api<ProvisioningTarget> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// The last cycle of target `name`, once it differs from `after`.
    pub async fn wait_cycle(&self, name: &str, after: Option<&str>) -> CycleSummary {
        eventually(RUN_WAIT, &format!("a cycle of target {name}"), || async {
            let t = self.targets().get(name).await.ok()?;
            let last = t.status?.last_cycle?;
            (Some(last.id.as_str()) != after).then_some(last)
        })
        .await
    }

    /// Ask target `name` for a cycle now and wait for it.
    pub async fn cycle(&self, name: &str) -> CycleSummary {
        let before = self
            .targets()
            .get(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.last_cycle)
            .map(|c| c.id);
        let nonce = format!("{:?}", std::time::SystemTime::now());
        let patch = json!({"metadata": {"annotations": {SYNC_REQUESTED_ANNOTATION: nonce}}});
        self.targets()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        // Cycle ids carry the second they started in; two in one second differ by suffix.
        self.wait_cycle(name, before.as_deref()).await
    }

    /// The last cycle of target `name`, once one succeeded.
    pub async fn succeeded_cycle(&self, name: &str) -> CycleSummary {
        eventually(
            RUN_WAIT,
            &format!("a cycle of target {name} that succeeded"),
            || async {
                let c = self.target_status(name).await.last_cycle?;
                (c.result == "Succeeded").then_some(c)
            },
        )
        .await
    }

    pub async fn target_status(&self, name: &str) -> usersync::api::ProvisioningTargetStatus {
        self.targets().get(name).await.unwrap().status.unwrap()
    }
}

#[tokio::test]
async fn scim_lifecycle_follows_the_directory_to_the_application() {
    let w = World::new(
        "deliver",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("alice", false);
    w.add_user("bob", false);
    w.add_user("carol", true);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 100}}))
        .await;

    // Import → created, active, with the directory anchor as externalId.
    let first = w.wait_cycle("app", None).await;
    assert_eq!((first.created, first.failed), (2, 0), "{first:?}");
    let bob = account(&app, "bob").await;
    assert_eq!(bob["active"], true);
    assert_eq!(
        bob["externalId"],
        w.user("bob").await.spec.anchor.unwrap().as_str()
    );
    assert_eq!(bob["emails"][0]["value"], "bob@example.org");
    assert_eq!(
        app.users().await.len(),
        2,
        "the disabled user is never provisioned"
    );
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let ledger = w.user("bob").await.status.unwrap().deliveries;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        (
            ledger[0].target.as_str(),
            ledger[0].remote_id.as_deref(),
            ledger[0].state.as_str()
        ),
        ("app", Some(bob_id.as_str()), "Provisioned")
    );

    // No change: a cycle sends nothing and writes no DirectoryUser.
    let version = w.user("bob").await.metadata.resource_version;
    let quiet = w.cycle("app").await;
    assert_eq!(
        (quiet.requests, quiet.created, quiet.updated),
        (0, 0, 0),
        "{quiet:?}"
    );
    assert_eq!(w.user("bob").await.metadata.resource_version, version);

    // Disable in the directory → preserved → active=false on the same account.
    w.set_disabled("bob", true);
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!(c.disabled, 1, "{c:?}");
    let bob = account(&app, "bob").await;
    assert_eq!(
        (bob["id"].as_str(), &bob["active"]),
        (Some(bob_id.as_str()), &json!(false))
    );

    // Re-enable → active=true on the same id, never a second account.
    w.set_disabled("bob", false);
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!((c.enabled, c.created), (1, 0), "{c:?}");
    let bob = account(&app, "bob").await;
    assert_eq!(
        (bob["id"].as_str(), &bob["active"]),
        (Some(bob_id.as_str()), &json!(true))
    );
    assert_eq!(app.users().await.len(), 2);

    // A change of a field is one update.
    w.set_mail("alice", "alice.new@example.org");
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!(c.updated, 1, "{c:?}");
    assert_eq!(
        account(&app, "alice").await["emails"][0]["value"],
        "alice.new@example.org"
    );

    // Rename and reuse of the old name in one run: the rename goes first, so the
    // newcomer's account does not collide with its previous holder.
    let alice_id = account(&app, "alice").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.rename("alice", "alice.old");
    w.add_user("alice", false);
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!((c.updated, c.created, c.failed), (1, 1, 0), "{c:?}");
    assert_eq!(
        account(&app, "alice.old").await["id"].as_str(),
        Some(alice_id.as_str())
    );
    assert_ne!(
        account(&app, "alice").await["id"].as_str(),
        Some(alice_id.as_str())
    );
}

#[tokio::test]
async fn an_existing_account_is_adopted_by_its_exact_user_name_never_duplicated() {
    let w = World::new("adopt", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    // The application already has dave (an admin made it) and "Erin" (another case).
    let dave = app.create(json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "dave", "active": false})).await;
    app.create(
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "Erin"}),
    )
    .await;
    w.add_user("dave", false);
    w.add_user("erin", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({})).await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(c.adopted, 1, "{c:?}");
    let now = account(&app, "dave").await;
    assert_eq!(now["id"], dave["id"], "adopted, not created again");
    assert_eq!(now["active"], true);
    // Erin's account differs in case only: it is not adopted, and the user's
    // delivery fails with the application's answer instead of touching it.
    assert_eq!(c.failed, 1, "{c:?}");
    let erin = w.user("erin").await.status.unwrap().deliveries;
    let error = erin[0].last_error.clone().unwrap();
    assert!(
        error.contains("409") || error.contains("uniqueness"),
        "{error}"
    );
    assert_eq!(erin[0].failures, 1);
    assert!(erin[0].retry_after_time.is_some());
    assert_eq!(app.users().await.len(), 2);
    let status = w.target_status("app").await;
    assert_eq!(status.accounts.unwrap().failed, 1);
    let note = w.event_note("DeliveryFailed").await;
    assert!(
        note.contains("erin") || note.contains(&w.user("erin").await.metadata.name.unwrap()),
        "{note}"
    );
    assert!(
        !note.contains(&app.token),
        "the token never reaches an Event"
    );
}

#[tokio::test]
async fn a_threshold_withholds_a_mass_disable_until_approved() {
    let w = World::new(
        "ptarget-threshold",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    for u in ["u1", "u2", "u3", "u4"] {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 25}}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 4);
    for u in ["u1", "u2", "u3"] {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!((c.result.as_str(), c.disabled), ("Blocked", 0), "{c:?}");
    for u in ["u1", "u2", "u3"] {
        assert_eq!(
            account(&app, u).await["active"],
            true,
            "{u} was disabled past the threshold"
        );
    }
    let status = w.target_status("app").await;
    let blocked = status.blocked_cycle.clone().unwrap();
    assert_eq!((blocked.would_disable, blocked.active_accounts), (3, 4));
    assert!(usersync::api::condition_is_true(
        &status.conditions,
        "DeletionsBlocked"
    ));
    assert!(usersync::api::condition_is_true(
        &status.conditions,
        "Stalled"
    ));
    // The same plan keeps its id, so an approval stays valid.
    w.cycle("app").await;
    assert_eq!(
        w.target_status("app").await.blocked_cycle.unwrap().run_id,
        blocked.run_id
    );
    // Approving that cycle sends the withheld disables at once.
    let before = w.target_status("app").await.last_cycle.unwrap().id;
    let out = crate::support::usersync([
        "approve",
        "--target",
        "app",
        &blocked.run_id,
        "-n",
        &w.ns.name,
    ]);
    assert!(
        out.status.success(),
        "usersync approve --target: {}",
        crate::support::stderr(&out)
    );
    assert!(
        crate::support::stdout(&out).contains("it disables 3 and deletes 0 accounts"),
        "{}",
        crate::support::stdout(&out)
    );

    let c = w.wait_cycle("app", Some(&before)).await;
    assert_eq!(c.disabled, 3, "{c:?}");
    for u in ["u1", "u2", "u3"] {
        assert_eq!(account(&app, u).await["active"], false);
    }
    assert!(w.target_status("app").await.blocked_cycle.is_none());
}

#[tokio::test]
async fn a_wrong_token_quarantines_the_target_until_it_is_fixed() {
    let w = World::new("quarantine", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("frank", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.secret("wrong-token", "token", "not-the-token").await;
    w.target(
        "app",
        &app,
        json!({"interval": "1m", "auth": {"bearerTokenSecretRef": {"name": "wrong-token", "key": "token"}}}),
    )
    .await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(c.result, "Quarantined", "{c:?}");
    let status = w.target_status("app").await;
    let q = usersync::api::find_condition(&status.conditions, "Quarantined")
        .unwrap()
        .clone();
    assert_eq!(
        (q.status.as_str(), q.reason.as_str()),
        ("True", "BadCredentials"),
        "{q:?}"
    );
    assert!(
        q.message.contains("refused the credentials"),
        "{}",
        q.message
    );
    assert!(!q.message.contains("not-the-token"));
    assert_eq!(status.quarantined_cycles, 1);
    let argo = w
        .health_is("ProvisioningTarget", "app", "Failed", "Degraded")
        .await;
    assert!(argo.contains("refused the credentials"), "{argo}");
    let (last, next) = (
        status.last_sync_time.unwrap().0,
        status.next_sync_time.unwrap().0,
    );
    assert_eq!(
        next.duration_since(last),
        jiff::SignedDuration::from_secs(120),
        "a quarantined target cycles slower than its 1m interval"
    );
    assert!(app.users().await.is_empty());
    // The admin fixes the token: the next cycle delivers and clears the quarantine.
    w.patch_target_spec(
        "app",
        json!({"auth": {"bearerTokenSecretRef": {"name": "app-token", "key": "token"}}}),
    )
    .await;
    let c = w.succeeded_cycle("app").await;
    assert_eq!(c.created, 1, "{c:?}");
    let status = w.target_status("app").await;
    assert!(!usersync::api::condition_is_true(
        &status.conditions,
        "Quarantined"
    ));
    assert_eq!(status.quarantined_cycles, 0);
    assert!(usersync::api::condition_is_true(
        &status.conditions,
        "Ready"
    ));
}

/// The token fixed where it is, in its Secret: the quarantined target cycles at
/// once rather than after its slowed interval (two hours here).
#[tokio::test]
async fn a_token_fixed_in_its_secret_ends_the_quarantine_without_waiting() {
    let w = World::new("quarantine-fix", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("gina", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.secret("app-credential", "token", "not-the-token").await;
    w.target(
        "app",
        &app,
        json!({"auth": {"bearerTokenSecretRef": {"name": "app-credential", "key": "token"}}}),
    )
    .await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(c.result, "Quarantined", "{c:?}");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    secrets
        .patch(
            "app-credential",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"token": app.token}})),
        )
        .await
        .unwrap();
    let c = w.wait_cycle("app", Some(&c.id)).await;
    assert_eq!((c.result.as_str(), c.created), ("Succeeded", 1), "{c:?}");
    assert_eq!(account(&app, "gina").await["active"], true);
    assert_eq!(w.target_status("app").await.quarantined_cycles, 0);
}

impl Scene {
    async fn patch_target_spec(&self, name: &str, spec: Value) {
        self.targets()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": spec})),
            )
            .await
            .unwrap();
    }
}

/// An application without PATCH, answering the way Entra-style apps do (capitalised
/// ops, string booleans), that throttles with a fractional Retry-After: every change
/// still arrives, by PUT, and a cycle with nothing to send sends nothing.
#[tokio::test]
async fn a_put_only_throttling_application_gets_every_change_and_a_quiet_cycle_sends_nothing() {
    let w = World::new(
        "ptarget-put",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    proxy.without_patch();
    proxy.entra_style();
    w.add_user("gina", false);
    w.add_user("hank", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    proxy.throttle(2, "0.5");
    w.target_at(
        "app",
        proxy.base_url().as_str(),
        &app.token,
        json!({"safety": {"maxDisablePercent": 100}}),
    )
    .await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!((c.created, c.failed), (2, 0), "{c:?}");
    assert!(!w.target_status("app").await.capabilities.unwrap().patch);

    w.set_disabled("hank", true);
    w.sync("staff").await;
    let hank_id = account(&app, "hank").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = w.cycle("app").await;
    assert_eq!(c.disabled, 1, "{c:?}");
    let hank = account(&app, "hank").await;
    assert_eq!(
        (hank["id"].as_str(), &hank["active"]),
        (Some(hank_id.as_str()), &json!(false))
    );
    assert_eq!(
        hank["emails"][0]["value"], "hank@example.org",
        "a PUT keeps the attributes"
    );
    w.set_disabled("hank", false);
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.enabled, 1);
    assert_eq!(account(&app, "hank").await["active"], true);
    let patches = proxy.seen().iter().filter(|s| s.method == "PATCH").count();
    assert_eq!(
        patches, 0,
        "no PATCH to an application that does not support it"
    );
    assert!(
        proxy.seen().iter().any(|s| s.status == 429),
        "the throttling was met and retried"
    );

    proxy.reset_counts();
    let quiet = w.cycle("app").await;
    assert_eq!(quiet.requests, 0, "{quiet:?}");
    assert!(
        proxy.seen().is_empty(),
        "a cycle with nothing to send sent {:?}",
        proxy.seen()
    );
}

/// An operator that stops in the middle of a cycle (a crash, a failover) leaves
/// some accounts created and not yet recorded; the next operator finds them by the
/// match attribute and adopts them: no duplicate, no user left out.
#[tokio::test]
async fn a_restart_in_the_middle_of_a_cycle_duplicates_nothing_and_loses_nothing() {
    let w = World::without_operator("ptarget-restart", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    let users: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    for u in &users {
        w.add_user(u, false);
    }
    let first = spawn_operator(
        &w.client,
        &w.ns.name,
        usersync::store::Backend::Kubernetes,
        &w.clock,
    );
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    proxy.slow(std::time::Duration::from_millis(400));
    w.target_at("app", proxy.base_url().as_str(), &app.token, json!({}))
        .await;
    eventually(RUN_WAIT, "the first accounts created", || async {
        let n = app.users().await.len();
        (n > 0).then_some(())
    })
    .await;
    first.abort();
    let _ = first.await;
    let created = app.users().await.len();
    assert!(
        created < users.len(),
        "the cycle was not cut off ({created} created)"
    );
    proxy.slow(std::time::Duration::ZERO);
    w.start_operator();
    let c = w.succeeded_cycle("app").await;
    assert_eq!(user_names(&app).await, users, "every user once, none twice");
    assert!(
        c.adopted as usize + c.created as usize >= users.len() - created,
        "{c:?}"
    );
    for u in &users {
        let d = w.user(u).await.status.unwrap().deliveries;
        assert_eq!(d[0].state, "Provisioned", "{u}: {d:?}");
    }
}

/// Retention through to the application: with `deprovision: Delete` the deleted
/// user's account goes; with the default it stays, disabled.
#[tokio::test]
async fn retention_deletes_the_account_only_with_deprovision_delete() {
    let w = World::new(
        "ptarget-retention",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "2h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let (deleting, keeping) = (Tenant::fresh("ptarget-del"), Tenant::fresh("ptarget-keep"));
    w.add_user("ivy", false);
    w.add_user("jo", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let safety = json!({"maxDisablePercent": 100, "maxDeletesPerCycle": 10});
    w.target(
        "del",
        &deleting,
        json!({"deprovision": "Delete", "safety": safety}),
    )
    .await;
    w.target("keep", &keeping, json!({"safety": safety})).await;
    w.wait_cycle("del", None).await;
    w.wait_cycle("keep", None).await;
    w.connected(true).await;
    w.set_disabled("ivy", true);
    w.sync("staff").await;
    w.advance(std::time::Duration::from_secs(7201)).await;
    w.sync("staff").await;
    assert_eq!(w.state("ivy").await, "Deleted/RetentionExpired");
    let c = w.cycle("del").await;
    assert_eq!((c.disabled, c.deleted), (0, 1), "{c:?}");
    assert!(
        deleting
            .users()
            .await
            .iter()
            .all(|u| u["userName"] != "ivy"),
        "ivy's account is gone"
    );
    let c = w.cycle("keep").await;
    assert_eq!((c.disabled, c.deleted), (1, 0), "{c:?}");
    assert_eq!(account(&keeping, "ivy").await["active"], false);
    // Nothing more happens to either afterwards.
    assert_eq!(w.cycle("del").await.requests, 0);
    assert_eq!(w.cycle("keep").await.requests, 0);
}

/// `usersync plan --target` shows the next cycle's requests without sending any;
/// `usersync provision` delivers one user now and prints each request and answer.
#[tokio::test]
async fn plan_and_provision_from_the_command_line() {
    use crate::support::{stderr, stdout, usersync};
    let w = World::new("ptarget-cli", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("kim", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({})).await;
    w.wait_cycle("app", None).await;
    w.add_user("lee", false);
    w.sync("staff").await;
    let lee = w.user("lee").await.metadata.name.unwrap();

    let out = usersync(["plan", "--target", "app", "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("create {lee} (lee) after looking it up")
    );
    assert_eq!(app.users().await.len(), 1, "plan sent nothing");

    let out = usersync(["provision", "lee", "--target", "app", "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(printed.contains("> GET /Users?filter="), "{printed}");
    assert!(
        printed.contains("> POST /Users") && printed.contains("< 201"),
        "{printed}"
    );
    assert!(!printed.contains(&app.token), "the token is never printed");
    assert_eq!(account(&app, "lee").await["active"], true);
    let d = w.user("lee").await.status.unwrap().deliveries;
    assert_eq!(d[0].state, "Provisioned");

    let out = usersync(["plan", "--target", "app", "-n", &w.ns.name]);
    assert!(stdout(&out).contains("nothing to send"), "{}", stdout(&out));
    let out = usersync(["provision", "nobody", "--target", "app", "-n", &w.ns.name]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("nobody is neither among the users"),
        "{}",
        stderr(&out)
    );
}

/// A fresh database `database`, and a namespace whose operator keeps its
/// registry there.
async fn postgres_world(
    database: &str,
    test: &str,
) -> (
    usersync::store::postgres::Database,
    World<'static>,
    tokio::task::JoinHandle<()>,
) {
    let (db, _) = crate::pg_support::fresh_database(database).await;
    let w = World::without_operator(test, Server::slapd(), json!({})).await;
    let operator = spawn_operator(
        &w.client,
        &w.ns.name,
        usersync::store::Backend::Postgres(db.clone()),
        &w.clock,
    );
    (db, w, operator)
}

/// With `--store=postgres` the ledger lives in the `deliveries` table: each
/// delivery is a row, and a user whose row leaves the registry still has its
/// account disabled, because the ledger entry outlives it.
#[tokio::test]
async fn with_the_postgres_store_the_ledger_is_a_table_and_outlives_the_user_row() {
    let (db, w, _) = postgres_world("e2e_ptarget", "ptarget-pg").await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("mia", false);
    w.add_user("ned", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 100}}))
        .await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(c.created, 2, "{c:?}");
    let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT d.name, d.remote_id, d.state FROM deliveries d WHERE d.namespace = $1 AND d.target = 'app' ORDER BY 1",
    )
    .bind(&w.ns.name)
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let mia_id = account(&app, "mia").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        rows.iter()
            .any(|(_, id, state)| id.as_deref() == Some(mia_id.as_str())
                && state.as_deref() == Some("Provisioned"))
    );
    assert!(
        w.users().await.is_empty(),
        "no DirectoryUser objects with the postgres store"
    );

    // An admin removes mia's row from the registry: her account is disabled.
    sqlx::query("DELETE FROM users WHERE namespace = $1 AND username = 'mia'")
        .bind(&w.ns.name)
        .execute(db.pool())
        .await
        .unwrap();
    let c = w.cycle("app").await;
    assert_eq!(c.disabled, 1, "{c:?}");
    assert_eq!(account(&app, "mia").await["active"], false);
    let state: String =
        sqlx::query_scalar("SELECT state FROM deliveries WHERE namespace = $1 AND remote_id = $2")
            .bind(&w.ns.name)
            .bind(&mia_id)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(state, "Disabled");
    // And nothing is sent again.
    assert_eq!(w.cycle("app").await.requests, 0);
}

/// A full reconcile reads the application's pages only to save requests: an
/// account a page left out is asked for by its id, and is neither created again
/// nor forgotten while the application still has it.
#[tokio::test]
async fn a_full_reconcile_asks_by_id_for_an_account_its_pages_left_out() {
    let w = World::new(
        "ptarget-pages",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    w.add_user("hal", false);
    w.add_user("ida", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let spec = json!({"safety": {"maxDisablePercent": 100}});
    w.target_at("app", proxy.base_url().as_str(), &app.token, spec)
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 2);
    w.set_disabled("ida", true);
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.disabled, 1);
    let (hal, ida) = (account(&app, "hal").await, account(&app, "ida").await);
    for id in [&hal["id"], &ida["id"]] {
        proxy.hide_in_lists(id.as_str().unwrap());
    }
    // What the id answers is used: hal, disabled in the application, is put right.
    let disable = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}],
    });
    let status = app
        .admin(
            reqwest::Method::PATCH,
            hal["id"].as_str().unwrap(),
            Some(disable),
        )
        .await;
    assert!(matches!(status, 200 | 204), "PATCH: {status}");
    proxy.reset_counts();
    // A changed spec makes the next cycle a full reconcile.
    w.patch_target_spec("app", json!({"interval": "2h"})).await;
    let before = w.target_status("app").await.last_cycle.unwrap().id;
    let c = w.wait_cycle("app", Some(&before)).await;
    assert!(c.full_reconcile, "{c:?}");
    assert_eq!(
        (c.result.as_str(), c.created, c.adopted, c.enabled),
        ("Succeeded", 0, 0, 1),
        "{c:?}"
    );
    assert_eq!(account(&app, "hal").await["active"], true);
    for (name, id) in [("hal", &hal["id"]), ("ida", &ida["id"])] {
        let path = format!("/Users/{}", id.as_str().unwrap());
        assert!(proxy.count("GET", &path) >= 1, "{name} asked for by id");
    }
    let ida_ledger = w.user("ida").await.status.unwrap().deliveries;
    assert_eq!(
        (ida_ledger.len(), ida_ledger[0].state.as_str()),
        (1, "Disabled"),
        "the disabled account is still governed: {ida_ledger:?}"
    );
    assert_eq!(app.users().await.len(), 2);
}

/// A 403 on one account is the application protecting that account, not a
/// refusal of the target's credentials: that user fails, the others go through,
/// and the target is not quarantined.
#[tokio::test]
async fn a_403_on_one_account_fails_that_user_and_never_quarantines_the_target() {
    let w = World::new(
        "ptarget-403",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    let users = ["p1", "p2", "p3", "p4", "p5"];
    for u in users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let spec = json!({"safety": {"maxDisablePercent": 100}});
    w.target_at("app", proxy.base_url().as_str(), &app.token, spec)
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 5);
    let protected = account(&app, "p1").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.forbid(&protected);
    for u in users {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!(
        (c.result.as_str(), c.disabled, c.failed),
        ("PartiallyFailed", 4, 1),
        "{c:?}"
    );
    let status = w.target_status("app").await;
    assert!(!usersync::api::condition_is_true(
        &status.conditions,
        "Quarantined"
    ));
    assert_eq!(status.quarantined_cycles, 0);
    let p1 = w.user("p1").await.status.unwrap().deliveries;
    assert!(
        p1[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("403")),
        "{p1:?}"
    );
    assert_eq!(account(&app, "p1").await["active"], true);
    assert_eq!(account(&app, "p2").await["active"], false);
}

/// The state of the RunApproval of `run_id`, once the operator decided it.
async fn approval_state(w: &World<'_>, run_id: &str) -> Option<usersync::api::ApprovalState> {
    let api: Api<usersync::api::RunApproval> = Api::namespaced(w.client.clone(), &w.ns.name);
    let all = api.list(&Default::default()).await.ok()?.items;
    let approval = all.into_iter().find(|a| a.spec.run_id == run_id)?;
    approval.status?.state
}

fn approve_target(w: &World<'_>, run_id: &str) {
    let out = crate::support::usersync(["approve", "--target", "app", run_id, "-n", &w.ns.name]);
    assert!(out.status.success(), "{}", crate::support::stderr(&out));
}

/// An approval sends the very disables it was shown: one more user disabled
/// meanwhile makes it stale and the cycle stays blocked; a dry run spends none,
/// and the first cycle that sends uses it.
#[tokio::test]
async fn an_approval_sends_only_the_steps_it_was_shown_and_a_dry_run_spends_none() {
    use usersync::api::ApprovalState;
    let w = World::new(
        "ptarget-approve",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let users = ["v1", "v2", "v3", "v4", "v5"];
    for u in users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 25}}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 5);
    for u in ["v1", "v2", "v3"] {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.result, "Blocked");
    let shown = w.target_status("app").await.blocked_cycle.unwrap();
    // One more disable before the admin approves what was shown.
    w.set_disabled("v4", true);
    w.sync("staff").await;
    approve_target(&w, &shown.run_id);
    let state = eventually(RUN_WAIT, "the approval decided", || async {
        approval_state(&w, &shown.run_id)
            .await
            .filter(|s| *s != ApprovalState::Pending)
    })
    .await;
    assert_eq!(state, ApprovalState::Stale);
    // The approval is decided before the cycle's status is written.
    let now_blocked = eventually(RUN_WAIT, "the cycle blocked under a new id", || async {
        let blocked = w.target_status("app").await.blocked_cycle?;
        (blocked.run_id != shown.run_id).then_some(blocked)
    })
    .await;
    assert_eq!(now_blocked.would_disable, 4);
    for u in ["v1", "v2", "v3", "v4"] {
        assert_eq!(account(&app, u).await["active"], true, "{u}");
    }

    // In a dry run the approval is shown but not spent.
    w.patch_target_spec("app", json!({"dryRun": true})).await;
    let before = w.target_status("app").await.last_cycle.unwrap().id;
    let c = w.wait_cycle("app", Some(&before)).await;
    assert_eq!(c.result, "DryRun", "{c:?}");
    assert_eq!(
        w.target_status("app").await.blocked_cycle.unwrap().run_id,
        now_blocked.run_id
    );
    approve_target(&w, &now_blocked.run_id);
    w.cycle("app").await;
    assert_eq!(
        approval_state(&w, &now_blocked.run_id).await,
        Some(ApprovalState::Pending)
    );
    assert_eq!(account(&app, "v1").await["active"], true);
    w.patch_target_spec("app", json!({"dryRun": false})).await;
    let c = eventually(RUN_WAIT, "the approved disables sent", || async {
        let c = w.target_status("app").await.last_cycle?;
        (c.disabled > 0).then_some(c)
    })
    .await;
    assert_eq!(c.disabled, 4, "{c:?}");
    assert_eq!(
        approval_state(&w, &now_blocked.run_id).await,
        Some(ApprovalState::Used)
    );
    for u in ["v1", "v2", "v3", "v4"] {
        assert_eq!(account(&app, u).await["active"], false, "{u}");
    }
}

/// An attribute the user no longer has goes from the account too: a mail removed
/// in the directory removes the account's emails, by PATCH and by PUT alike.
#[tokio::test]
async fn an_attribute_the_user_lost_is_removed_from_the_account() {
    let w = World::new("ptarget-remove", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let put_only = Tenant::fresh(&format!("{}-put", w.ns.name));
    let proxy = FaultProxy::start(&put_only).await;
    proxy.without_patch();
    w.add_user("jo", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({})).await;
    w.target_at("put", proxy.base_url().as_str(), &put_only.token, json!({}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 1);
    assert_eq!(w.wait_cycle("put", None).await.created, 1);
    for tenant in [&app, &put_only] {
        assert_eq!(
            account(tenant, "jo").await["emails"][0]["value"],
            "jo@example.org"
        );
    }
    w.clear_mail("jo");
    let run = w.sync("staff").await;
    let jo = w.user("jo").await;
    assert_eq!(jo.spec.email, None, "{run:?} {:?}", jo.spec);
    for (target, tenant) in [("app", &app), ("put", &put_only)] {
        let c = w.cycle(target).await;
        assert_eq!((c.updated, c.failed), (1, 0), "{target}: {c:?}");
        let jo = account(tenant, "jo").await;
        assert!(
            jo.get("emails")
                .is_none_or(|e| e.as_array().is_some_and(|a| a.is_empty())),
            "{target}: {jo}"
        );
        assert_eq!(jo["active"], true, "{target}");
    }
}

/// A full reconcile puts right what someone changed in the application: an
/// account disabled there is enabled again (on the same id), one deleted there is
/// created again.
#[tokio::test]
async fn a_full_reconcile_puts_right_what_was_changed_in_the_application() {
    let w = World::new("ptarget-drift", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("kai", false);
    w.add_user("lou", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({})).await;
    assert_eq!(w.wait_cycle("app", None).await.created, 2);
    let (kai, lou) = (account(&app, "kai").await, account(&app, "lou").await);
    let disable = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "active", "value": false}],
    });
    let kai_id = kai["id"].as_str().unwrap();
    let patch = app
        .admin(reqwest::Method::PATCH, kai_id, Some(disable))
        .await;
    assert!(matches!(patch, 200 | 204), "PATCH: {patch}");
    let delete = app
        .admin(reqwest::Method::DELETE, lou["id"].as_str().unwrap(), None)
        .await;
    assert_eq!(delete, 204);
    // An ordinary cycle trusts its ledger: nothing changed in the registry.
    assert_eq!(w.cycle("app").await.requests, 0);
    // A changed spec makes the next cycle a full reconcile.
    w.patch_target_spec("app", json!({"interval": "2h"})).await;
    let before = w.target_status("app").await.last_cycle.unwrap().id;
    let c = w.wait_cycle("app", Some(&before)).await;
    assert!(c.full_reconcile, "{c:?}");
    assert_eq!((c.enabled, c.created, c.failed), (1, 1, 0), "{c:?}");
    let kai_now = account(&app, "kai").await;
    assert_eq!(
        (kai_now["id"].as_str(), &kai_now["active"]),
        (Some(kai_id), &json!(true))
    );
    assert_eq!(account(&app, "lou").await["active"], true);
    assert_eq!(app.users().await.len(), 2);
}

/// `maxDeletesPerCycle` withholds every delete of a cycle past it; the accounts
/// stay (disabled) until an approval.
#[tokio::test]
async fn a_threshold_withholds_deletes_past_max_deletes_per_cycle() {
    let w = World::new(
        "ptarget-deletes",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "2h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let users = ["d1", "d2", "d3"];
    for u in users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let safety = json!({"maxDisablePercent": 100, "maxDeletesPerCycle": 2});
    w.target(
        "app",
        &app,
        json!({"deprovision": "Delete", "safety": safety}),
    )
    .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 3);
    w.connected(true).await;
    for u in users {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.disabled, 3);
    w.advance(std::time::Duration::from_secs(7201)).await;
    w.sync("staff").await;
    assert_eq!(w.state("d1").await, "Deleted/RetentionExpired");
    let c = w.cycle("app").await;
    assert_eq!((c.result.as_str(), c.deleted), ("Blocked", 0), "{c:?}");
    let blocked = w.target_status("app").await.blocked_cycle.unwrap();
    assert_eq!((blocked.would_delete, blocked.would_disable), (3, 0));
    assert_eq!(
        app.users().await.len(),
        3,
        "no account deleted past the limit"
    );
}

/// Users nothing can be sent for (no value for the match attribute) fail with the
/// reason in their entry, but are not the application's failures: they never
/// quarantine the target.
#[tokio::test]
async fn users_that_cannot_be_delivered_fail_alone_and_never_quarantine_the_target() {
    let w = World::new("ptarget-invalid", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let users = ["n1", "n2", "n3", "n4", "n5"];
    for u in users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let spec = json!({
        "matchAttribute": "externalId",
        "attributes": [
            {"from": "username", "to": "userName"},
            {"from": "attributes.employeeNumber", "to": "externalId"},
        ],
    });
    w.target("app", &app, spec).await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(
        (c.result.as_str(), c.failed),
        ("PartiallyFailed", 5),
        "{c:?}"
    );
    let status = w.target_status("app").await;
    assert!(!usersync::api::condition_is_true(
        &status.conditions,
        "Quarantined"
    ));
    let n1 = w.user("n1").await.status.unwrap().deliveries;
    assert!(
        n1[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("match attribute")),
        "{n1:?}"
    );
    assert!(app.users().await.is_empty());
}

/// A name freed by a rename that has not reached the application yet is not
/// taken by the new holder: its create does not adopt the account of the user
/// the ledger gives it to, and is retried after the rename.
#[tokio::test]
async fn a_new_holder_of_a_name_never_adopts_the_account_of_its_previous_holder() {
    let w = World::new("ptarget-reuse", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    w.add_user("jdoe", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target_at("app", proxy.base_url().as_str(), &app.token, json!({}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 1);
    let old = account(&app, "jdoe").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The rename fails in the application; the name is reused in the same run.
    proxy.forbid(&old);
    w.rename("jdoe", "jdoe.old");
    w.add_user("jdoe", false);
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!((c.created, c.adopted, c.failed), (0, 0, 2), "{c:?}");
    let newcomer = w.user("jdoe").await.status.unwrap().deliveries;
    assert_eq!(newcomer[0].remote_id, None, "{newcomer:?}");
    assert!(
        newcomer[0]
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("belongs to user")),
        "{newcomer:?}"
    );
    assert_eq!(app.users().await.len(), 1);
}

/// An approval of a cycle that no longer waits (its plan went back under the
/// thresholds) does nothing, and says so: it turns Stale.
#[tokio::test]
async fn an_approval_of_a_cycle_that_no_longer_waits_is_stale() {
    use usersync::api::ApprovalState;
    let w = World::new(
        "ptarget-gone-by",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    for u in ["g1", "g2", "g3", "g4"] {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 25}}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 4);
    for u in ["g1", "g2"] {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.result, "Blocked");
    let blocked = w.target_status("app").await.blocked_cycle.unwrap();
    // One comes back: a single disable is within 25 % of 4.
    w.set_disabled("g2", false);
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.disabled, 1);
    assert!(w.target_status("app").await.blocked_cycle.is_none());
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "RunApproval",
        "metadata": {"name": "late"},
        "spec": {"targetRef": "app", "runId": blocked.run_id, "approvedBy": "usersync-admin"},
    }));
    let state = eventually(RUN_WAIT, "the late approval decided", || async {
        approval_state(&w, &blocked.run_id)
            .await
            .filter(|s| *s != ApprovalState::Pending)
    })
    .await;
    assert_eq!(state, ApprovalState::Stale);
    assert_eq!(account(&app, "g2").await["active"], true);
}

/// A target deleted and created again under the same name (a GitOps tool
/// replacing it) is a new target: the earlier object's ledger is not its own. It
/// touches no account by an id it never created or adopted, forgets the entries
/// the earlier object left, and adopts the accounts by their userName as a first
/// cycle does.
#[tokio::test]
async fn a_target_created_again_under_the_same_name_starts_from_its_own_ledger() {
    let w = World::new("ptarget-again", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    w.add_user("oli", false);
    w.add_user("pam", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let url = proxy.base_url();
    let safety = json!({"safety": {"maxDisablePercent": 100}});
    w.target_at("app", url.as_str(), &app.token, safety.clone())
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 2);
    let ids: Vec<Value> = vec![
        account(&app, "oli").await["id"].clone(),
        account(&app, "pam").await["id"].clone(),
    ];
    let old_uid = w.targets().get("app").await.unwrap().metadata.uid;

    proxy.reset_counts();
    w.targets()
        .delete("app", &Default::default())
        .await
        .unwrap();
    eventually(RUN_WAIT, "the target gone", || async {
        w.targets()
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    // The new object selects nobody yet: the earlier object's accounts are not
    // its own, so it disables none of them.
    let mut spec = safety.clone();
    spec["users"] = json!({"mappings": ["nobody"]});
    w.apply_target("app", url.as_str(), spec);
    let c = w.wait_cycle("app", None).await;
    assert_ne!(w.targets().get("app").await.unwrap().metadata.uid, old_uid);
    assert_eq!((c.disabled, c.failed), (0, 0), "{c:?}");
    for u in ["oli", "pam"] {
        assert_eq!(account(&app, u).await["active"], true, "{u}");
        let ledger = w.user(u).await.status.unwrap().deliveries;
        assert!(
            ledger.is_empty(),
            "{u}: the earlier object's entry lingers: {ledger:?}"
        );
    }
    assert!(
        proxy.seen().iter().all(|s| s.method == "GET"),
        "{:?}",
        proxy.seen()
    );

    // Selecting the users again: each is looked up and adopted, none created.
    proxy.reset_counts();
    w.patch_target_spec("app", json!({"users": {"mappings": ["staff"]}}))
        .await;
    let before = w.target_status("app").await.last_cycle.unwrap().id;
    let c = w.wait_cycle("app", Some(&before)).await;
    assert_eq!((c.adopted, c.created, c.failed), (2, 0, 0), "{c:?}");
    let uid = w.targets().get("app").await.unwrap().metadata.uid;
    for (u, id) in ["oli", "pam"].into_iter().zip(&ids) {
        assert_eq!(&account(&app, u).await["id"], id, "{u}");
        let ledger = w.user(u).await.status.unwrap().deliveries;
        assert_eq!(
            (ledger[0].remote_id.as_ref(), &ledger[0].target_uid),
            (id.as_str().map(str::to_string).as_ref(), &uid),
            "{u}"
        );
    }
    assert_eq!(app.users().await.len(), 2);
}

/// Ledger entries as a version before target uids wrote them (no `targetUid`)
/// are the ledger of the target object that exists at the upgrade, since they
/// changed after it was created: it keeps delivering to the same accounts,
/// adopts and creates none, and a disable due for one of them is sent.
#[tokio::test]
async fn ledger_entries_without_a_target_uid_stay_the_targets_after_an_upgrade() {
    use usersync::api::DirectoryUser;
    let w = World::new(
        "ptarget-legacy",
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("rob", false);
    w.add_user("sue", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.target("app", &app, json!({"safety": {"maxDisablePercent": 100}}))
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 2);
    let sue_id = account(&app, "sue").await["id"].clone();

    // The entries as the earlier version wrote them, under the target's own
    // field manager.
    let users: Api<DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    let params = PatchParams::apply("usersync-target-app").force();
    for u in ["rob", "sue"] {
        let user = w.user(u).await;
        let mut entries = user.status.unwrap().deliveries;
        for e in &mut entries {
            e.target_uid = None;
        }
        let patch = json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryUser",
            "status": {"deliveries": entries},
        });
        users
            .patch_status(&user.metadata.name.unwrap(), &params, &Patch::Apply(&patch))
            .await
            .unwrap();
        let ledger = w.user(u).await.status.unwrap().deliveries;
        assert_eq!(ledger.len(), 1, "{u}: {ledger:?}");
        assert!(ledger[0].target_uid.is_none(), "{u}: {ledger:?}");
    }

    w.set_disabled("sue", true);
    w.sync("staff").await;
    let c = w.cycle("app").await;
    assert_eq!(
        (c.disabled, c.adopted, c.created, c.failed),
        (1, 0, 0, 0),
        "{c:?}"
    );
    let sue = account(&app, "sue").await;
    assert_eq!((&sue["id"], &sue["active"]), (&sue_id, &json!(false)));
    assert_eq!(account(&app, "rob").await["active"], true);
    assert_eq!(app.users().await.len(), 2);
    let uid = w.targets().get("app").await.unwrap().metadata.uid;
    let ledger = w.user("sue").await.status.unwrap().deliveries;
    assert_eq!(
        (ledger[0].state.as_str(), &ledger[0].target_uid),
        ("Disabled", &uid),
        "the entry written again names the target's uid"
    );
}

/// Five users `<prefix>1`..`<prefix>5` delivered through a fault proxy by a
/// target that may disable 25 % of them in a cycle, and a cycle blocked on
/// disabling the first three.
async fn blocked_mass_disable(
    test: &str,
    prefix: &str,
) -> (
    World<'static>,
    Tenant,
    FaultProxy,
    usersync::api::BlockedCycle,
) {
    let w = World::new(
        test,
        Server::slapd(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    let users: Vec<String> = (1..=5).map(|i| format!("{prefix}{i}")).collect();
    for u in &users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let spec = json!({"safety": {"maxDisablePercent": 25}});
    w.target_at("app", proxy.base_url().as_str(), &app.token, spec)
        .await;
    assert_eq!(w.wait_cycle("app", None).await.created, 5);
    for u in &users[..3] {
        w.set_disabled(u, true);
    }
    w.sync("staff").await;
    assert_eq!(w.cycle("app").await.result, "Blocked");
    let blocked = w.target_status("app").await.blocked_cycle.unwrap();
    (w, app, proxy, blocked)
}

/// An approval is spent by the cycle that sends what it approved. An approved
/// disable the application refuses keeps the approval in its user's entry: its
/// retry, on a later cycle, needs no second approval.
#[tokio::test]
async fn an_approved_disable_that_failed_is_retried_without_a_new_approval() {
    use usersync::api::ApprovalState;
    let (w, app, proxy, blocked) = blocked_mass_disable("ptarget-approved-retry", "w").await;
    let protected = account(&app, "w3").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    proxy.forbid(&protected);
    approve_target(&w, &blocked.run_id);
    let c = eventually(RUN_WAIT, "the approved disables sent", || async {
        let c = w.target_status("app").await.last_cycle?;
        (c.disabled > 0).then_some(c)
    })
    .await;
    assert_eq!((c.disabled, c.failed), (2, 1), "{c:?}");
    assert_eq!(
        approval_state(&w, &blocked.run_id).await,
        Some(ApprovalState::Used)
    );
    let w3 = w.user("w3").await.status.unwrap().deliveries;
    assert_eq!(
        w3[0].approved_cycle,
        Some(format!("disable:{}", blocked.run_id)),
        "{w3:?}"
    );
    assert_eq!(account(&app, "w3").await["active"], true);

    // The application lets the account be changed again; once w3's back-off has
    // passed, its disable goes without another approval, though one disable of
    // the three active accounts is past 25 %.
    proxy.allow(&protected);
    w.clock.advance(std::time::Duration::from_secs(120));
    let c = w.cycle("app").await;
    assert_eq!(
        (c.result.as_str(), c.disabled, c.failed),
        ("Succeeded", 1, 0),
        "{c:?}"
    );
    assert_eq!(account(&app, "w3").await["active"], false);
    let w3 = w.user("w3").await.status.unwrap().deliveries;
    assert_eq!(
        (w3[0].state.as_str(), &w3[0].approved_cycle),
        ("Disabled", &None),
        "{w3:?}"
    );
    assert!(w.target_status("app").await.blocked_cycle.is_none());
}

/// Credentials refused in the middle of a phase (a token revoked while a cycle
/// runs): what was delivered before is recorded as delivered, nothing more is
/// sent, and the users not reached are neither failed nor put on back-off: the
/// first cycle that gets through sends them.
#[tokio::test]
async fn a_401_in_the_middle_of_a_phase_keeps_what_was_delivered_and_fails_no_user() {
    let w = World::new("ptarget-401", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    let users: Vec<String> = (0..20).map(|i| format!("q{i:02}")).collect();
    for u in &users {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    // The probe and the capabilities (3 requests), then creates of two requests
    // each, eight at a time: a lookup and a POST. About eight go through.
    proxy.refuse_after(23);
    w.target_at("app", proxy.base_url().as_str(), &app.token, json!({}))
        .await;
    let c = w.wait_cycle("app", None).await;
    let accounts = app.users().await;
    assert_eq!(
        (c.result.as_str(), c.created as usize, c.failed),
        ("Quarantined", accounts.len(), 0),
        "{c:?}"
    );
    assert!(
        !accounts.is_empty() && accounts.len() < users.len(),
        "{c:?}"
    );
    assert!(c.message.contains("not sent"), "{}", c.message);
    // The application's 401 echoes the token: none of what the cycle reports does.
    let status = w.target_status("app").await;
    for m in std::iter::once(&c.message).chain(status.conditions.iter().map(|c| &c.message)) {
        assert!(!m.contains(app.token.as_str()), "the token in {m}");
    }
    let refused = proxy.seen().iter().filter(|s| s.status == 401).count();
    assert!(
        refused <= 8,
        "{refused} requests went after the first 401 (at most the 8 in flight)"
    );
    for u in &users {
        let ledger = w.user(u).await.status.unwrap_or_default().deliveries;
        match accounts.iter().find(|a| a["userName"] == u.as_str()) {
            Some(a) => assert_eq!(
                (ledger[0].state.as_str(), ledger[0].remote_id.as_deref()),
                ("Provisioned", a["id"].as_str()),
                "{u}"
            ),
            None => assert!(ledger.is_empty(), "{u} not sent, yet: {ledger:?}"),
        }
    }
    assert!(w.event_notes("DeliveryFailed").await.is_empty());

    // The credentials work again: the next cycle sends every user not reached,
    // and nothing twice.
    proxy.accept_again();
    let c = w.cycle("app").await;
    assert_eq!(
        (c.result.as_str(), c.created as usize, c.adopted, c.failed),
        ("Succeeded", users.len() - accounts.len(), 0, 0),
        "{c:?}"
    );
    assert_eq!(app.users().await.len(), users.len());
}

/// The reasons of the Events about target `name`, now.
async fn target_event_reasons(w: &World<'_>, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    let list = events.list(&Default::default()).await.unwrap();
    list.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("ProvisioningTarget") && r.name.as_deref() == Some(name)
            })
        })
        .filter_map(|e| e.reason)
        .collect()
}

/// A process that loses the lease in the middle of a cycle sends nothing more,
/// and writes nothing about the cycle: no ledger entry, no status, no Event. The
/// process that takes over finds the accounts it created by their userName and
/// adopts them: every user once, none twice.
#[tokio::test]
async fn a_process_that_loses_the_lease_mid_cycle_sends_nothing_more_and_the_successor_duplicates_nothing()
 {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let w = World::without_operator("ptarget-fenced", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    let users: Vec<String> = (0..16).map(|i| format!("f{i:02}")).collect();
    for u in &users {
        w.add_user(u, false);
    }
    let holding = Arc::new(AtomicBool::new(true));
    let lease = holding.clone();
    let first = crate::support::spawn_fenced_operator(
        &w.client,
        &w.ns.name,
        usersync::store::Backend::Kubernetes,
        &w.clock,
        usersync::controller::Fence::from_fn(move || lease.load(Ordering::SeqCst)),
    );
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    proxy.slow(std::time::Duration::from_millis(300));
    w.target_at("app", proxy.base_url().as_str(), &app.token, json!({}))
        .await;
    eventually(RUN_WAIT, "the first accounts created", || async {
        (!app.users().await.is_empty()).then_some(())
    })
    .await;
    holding.store(false, Ordering::SeqCst);
    // A request already on its way may still arrive; none starts afterwards.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let arrived = proxy.arrived();
    let version = w
        .targets()
        .get("app")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let reported_before = target_event_reasons(&w, "app").await.len();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        proxy.arrived(),
        arrived,
        "requests sent after the lease was lost"
    );
    let created = app.users().await.len();
    assert!(created < users.len(), "the cycle was not cut off");
    assert_eq!(
        w.targets()
            .get("app")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version,
        "the target written after the lease was lost"
    );
    for u in &users {
        let ledger = w.user(u).await.status.unwrap_or_default().deliveries;
        assert!(
            ledger.is_empty(),
            "{u}: recorded after the lease was lost: {ledger:?}"
        );
    }
    let reported = target_event_reasons(&w, "app").await;
    assert_eq!(
        reported.len(),
        reported_before,
        "Events after the lease was lost: {reported:?}"
    );

    // The successor holds the lease: it adopts what the first created.
    proxy.slow(std::time::Duration::ZERO);
    w.start_operator();
    let c = w.succeeded_cycle("app").await;
    assert_eq!(
        (c.adopted as usize, c.created as usize),
        (created, users.len() - created),
        "{c:?}"
    );
    assert_eq!(user_names(&app).await, users, "every user once, none twice");
    first.abort();
}

/// A ledger that cannot be written stops the cycle (`RegistryUnavailable`): what
/// was sent and not recorded is found again by the next cycle, which adopts the
/// accounts instead of creating them twice.
#[tokio::test]
async fn a_ledger_write_that_fails_stops_the_cycle_and_the_next_duplicates_nothing() {
    let (db, w, _) = postgres_world("e2e_ptarget_ledger", "ptarget-ledger").await;
    let app = Tenant::fresh(&w.ns.name);
    for u in ["la", "lb", "lc"] {
        w.add_user(u, false);
    }
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.sync("staff").await;
    // PostgreSQL refuses every write to the ledger.
    for statement in [
        "CREATE FUNCTION refuse_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'deliveries are read-only'; END $$",
        "CREATE TRIGGER refuse_deliveries BEFORE INSERT OR UPDATE OR DELETE ON deliveries FOR EACH ROW EXECUTE FUNCTION refuse_deliveries()",
    ] {
        sqlx::query(statement).execute(db.pool()).await.unwrap();
    }
    w.target("app", &app, json!({})).await;
    let c = w.wait_cycle("app", None).await;
    assert_eq!(c.result, "Failed", "{c:?}");
    assert!(
        c.message.contains("recording what was delivered failed"),
        "{}",
        c.message
    );
    let status = w.target_status("app").await;
    let reconciling = usersync::api::find_condition(&status.conditions, "Reconciling").unwrap();
    assert_eq!(reconciling.reason, "RegistryUnavailable", "{reconciling:?}");
    let sent = app.users().await.len();
    assert_eq!(
        sent, 3,
        "the creates went before their outcomes were refused"
    );

    sqlx::query("DROP TRIGGER refuse_deliveries ON deliveries")
        .execute(db.pool())
        .await
        .unwrap();
    let c = w.cycle("app").await;
    assert_eq!(
        (c.result.as_str(), c.adopted, c.created),
        ("Succeeded", 3, 0),
        "{c:?}"
    );
    assert_eq!(app.users().await.len(), 3, "no account twice");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE namespace = $1")
        .bind(&w.ns.name)
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(rows, 3);
}

/// Outcomes are recorded every 200 requests within a phase, not only at its end:
/// an operator stopped after more than 200 creates of one phase leaves them in
/// the ledger, and its successor looks up only the users after them.
#[tokio::test]
async fn a_restart_late_in_a_long_phase_repeats_only_the_lookups_since_the_last_record() {
    let (db, w, first) = postgres_world("e2e_ptarget_record", "ptarget-record").await;
    let app = Tenant::fresh(&w.ns.name);
    let proxy = FaultProxy::start(&app).await;
    // 250 active users of mapping staff, straight in the registry.
    let users = 250;
    sqlx::query(
        "INSERT INTO users (namespace, name, origin, connector, anchor, mapping, username, email)
         SELECT $1, 'corp-bulk-' || i, 'Directory', 'corp', 'anchor-' || i, 'staff',
                'bulk' || lpad(i::text, 3, '0'), 'bulk' || i || '@example.org'
         FROM generate_series(1, $2) AS i",
    )
    .bind(&w.ns.name)
    .bind(users)
    .execute(db.pool())
    .await
    .unwrap();
    // The probe and the capabilities (3 requests), 200 creates of a lookup and a
    // POST each, their record, then 20 creates of the next 200: there the
    // application hangs and the operator stops.
    proxy.hold_after(3 + 2 * 220);
    w.target_at("app", proxy.base_url().as_str(), &app.token, json!({}))
        .await;
    eventually(RUN_WAIT, "the application to hang", || async {
        proxy.holding().then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    first.abort();
    let _ = first.await;
    proxy.release();
    assert!(
        app.users().await.len() > 200,
        "the stop came after the first record"
    );

    proxy.reset_counts();
    spawn_operator(
        &w.client,
        &w.ns.name,
        usersync::store::Backend::Postgres(db.clone()),
        &w.clock,
    );
    let c = w.succeeded_cycle("app").await;
    let lookups = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "GET" && s.query.as_deref().is_some_and(|q| q.contains("filter=")))
        .count();
    // One of them is the probe.
    assert!(
        lookups - 1 <= users as usize - 200,
        "{lookups} lookups after a stop past the 200th create: {c:?}"
    );
    assert_eq!(app.users().await.len(), users as usize, "no account twice");
    assert_eq!(
        c.created as usize + c.adopted as usize,
        users as usize - 200,
        "{c:?}"
    );
}

/// A mapped sub-attribute the user no longer has goes from the account too (a
/// `replace` of `name` would leave it as it was), and the rest of `name` stays.
#[tokio::test]
async fn a_sub_attribute_the_user_lost_is_removed_from_the_account() {
    let w = World::new("ptarget-subremove", Server::slapd(), json!({})).await;
    let app = Tenant::fresh(&w.ns.name);
    w.add_user("kit", false);
    let modify = |change: &str| {
        w.server.modify_ldif(&format!(
            "dn: uid=kit,{}\nchangetype: modify\n{change}\n",
            w.ou.dn
        ))
    };
    modify("add: title\ntitle: Dr");
    let extra = json!({"attributes": {"extra": {"title": "title"}}});
    w.mapping("staff", &w.ou.dn.clone(), extra).await;
    let spec = json!({"attributes": [
        {"from": "username", "to": "userName"},
        {"from": "username", "to": "name.givenName"},
        {"from": "attributes.title", "to": "name.honorificPrefix"},
    ]});
    w.target("app", &app, spec).await;
    assert_eq!(w.wait_cycle("app", None).await.created, 1);
    let kit = account(&app, "kit").await;
    assert_eq!(
        (&kit["name"]["givenName"], &kit["name"]["honorificPrefix"]),
        (&json!("kit"), &json!("Dr")),
        "{kit}"
    );
    modify("delete: title");
    w.sync("staff").await;
    assert_eq!(w.user("kit").await.spec.attributes.get("title"), None);
    let c = w.cycle("app").await;
    assert_eq!((c.updated, c.failed), (1, 0), "{c:?}");
    let kit = account(&app, "kit").await;
    assert_eq!(kit["name"]["givenName"], "kit", "{kit}");
    assert!(kit["name"].get("honorificPrefix").is_none(), "{kit}");
}

/// An approved cycle cut off by a 401 leaves the approval to the approved
/// requests it did not send: once the credentials work again, the next cycle
/// sends them without a new approval, and that cycle spends it.
#[tokio::test]
async fn approved_disables_cut_off_by_a_401_go_with_the_next_cycle_without_a_new_approval() {
    use usersync::api::ApprovalState;
    let (w, app, proxy, blocked) = blocked_mass_disable("ptarget-approved-401", "y").await;
    // The probe and one disable go through; then the token stops working.
    proxy.refuse_after(2);
    approve_target(&w, &blocked.run_id);
    let c = eventually(RUN_WAIT, "the approved cycle", || async {
        let c = w.target_status("app").await.last_cycle?;
        (c.result == "Quarantined").then_some(c)
    })
    .await;
    assert_eq!((c.disabled, c.failed), (1, 0), "{c:?}");
    assert_eq!(
        approval_state(&w, &blocked.run_id).await,
        Some(ApprovalState::Pending)
    );

    proxy.accept_again();
    let c = w.cycle("app").await;
    assert_eq!(
        (c.result.as_str(), c.disabled, c.failed),
        ("Succeeded", 2, 0),
        "{c:?}"
    );
    for u in ["y1", "y2", "y3"] {
        assert_eq!(account(&app, u).await["active"], false, "{u}");
    }
    assert_eq!(
        approval_state(&w, &blocked.run_id).await,
        Some(ApprovalState::Used)
    );
    let status = w.target_status("app").await;
    assert!(status.blocked_cycle.is_none(), "{:?}", status.blocked_cycle);
}
