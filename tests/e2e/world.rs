//! A small world for lifecycle tests: a namespace with the operator running, a
//! connector to a real directory, a policy, and the test's own OU in that directory.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use usersync::api::{
    ConnectorHealth, DirectoryMapping, DirectoryUser, ReadMode, RunResult, RunSummary,
    SYNC_REQUESTED_ANNOTATION, condition_is_true,
};

use crate::ldap_support::{Server, TestOu, ldif_line};
use crate::support::{
    Kstatus, TestClock, TestNamespace, cluster, eventually, start_operator_clocked, stderr,
};

/// How long a run may take in these tests.
pub const RUN_WAIT: Duration = Duration::from_secs(60);

/// A namespace with usersync's objects, whatever the directory: the API-side
/// helpers every lifecycle test uses.
pub struct Scene {
    pub client: Client,
    pub ns: TestNamespace,
    /// The time the scene's operator reads.
    pub clock: TestClock,
}

/// A scene whose connector `corp` reads a real LDAP directory, with the test's own OU.
pub struct World<'a> {
    pub scene: Scene,
    pub ou: TestOu<'a>,
    pub server: &'a Server,
}

impl std::ops::Deref for World<'_> {
    type Target = Scene;
    fn deref(&self) -> &Scene {
        &self.scene
    }
}

impl Scene {
    /// A fresh namespace with a policy `default` of `policy` (a JSON object of spec
    /// fields) over a 24h interval, so runs happen on demand; no operator yet.
    pub async fn new(test: &str, policy: serde_json::Value) -> Scene {
        let client = cluster().client().await;
        let ns = TestNamespace::new(&client, test).await;
        let scene = Scene {
            client,
            ns,
            clock: TestClock::default(),
        };
        let mut spec = serde_json::json!({"interval": "24h"});
        spec.as_object_mut()
            .unwrap()
            .extend(policy.as_object().cloned().unwrap_or_default());
        scene.apply(&serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "SyncPolicy", "metadata": {"name": "default"}, "spec": spec,
        }));
        scene
    }

    /// Run the operator in-process for this namespace.
    pub fn start_operator(&self) {
        start_operator_clocked(
            &self.client,
            &self.ns.name,
            usersync::store::Backend::Kubernetes,
            &self.clock,
        );
    }

    /// Move the operator's time forward by `by`, then wait until the connector has
    /// probed successfully by the new time (so the deletion gate sees a fresh probe).
    pub async fn advance(&self, by: Duration) {
        self.clock.advance(by);
        let since = self.clock.now();
        let api: Api<ConnectorHealth> = Api::namespaced(self.client.clone(), &self.ns.name);
        eventually(RUN_WAIT, "a probe after moving the clock", || async {
            let status = api.get("corp").await.ok()?.status?;
            let fresh = status.last_success_time.is_some_and(|t| t.0 >= since);
            (fresh && condition_is_true(&status.conditions, "Connected")).then_some(())
        })
        .await;
    }

    /// The note of an Event of this namespace with `reason`, once there is one.
    pub async fn event_note(&self, reason: &str) -> String {
        eventually(RUN_WAIT, &format!("a {reason} Event"), || async {
            self.event_notes(reason).await.into_iter().next()
        })
        .await
    }

    /// The notes of this namespace's Events with `reason`, now.
    pub async fn event_notes(&self, reason: &str) -> Vec<String> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.ns.name);
        let list = events.list(&Default::default()).await.unwrap();
        list.items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .collect()
    }

    /// kstatus's verdict on `kind/name` in this namespace, as Flux and kpt read it now.
    pub async fn kstatus(&self, kind: &str, name: &str) -> Kstatus {
        cluster().kstatus(kind, &self.ns.name, name).await
    }

    /// Wait until kstatus (Flux, kpt) and Argo CD's health script (the chart's) read
    /// `kind/name` as `kstatus` and `argocd`; return Argo CD's message.
    pub async fn health_is(&self, kind: &str, name: &str, kstatus: &str, argocd: &str) -> String {
        let deadline = tokio::time::Instant::now() + RUN_WAIT;
        loop {
            let verdict = self.kstatus(kind, name).await;
            let out = cluster().kubectl(["get", kind, name, "-n", &self.ns.name, "-o", "json"]);
            let obj: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            let argo = crate::argocd_support::argocd_health(&obj);
            if verdict.status == kstatus && argo.status == argocd {
                return argo.message;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{kind}/{name}: wanted kstatus {kstatus} and Argo CD {argocd}; last {verdict:?} and {argo:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Create a Secret with one string key, marked as a credential connectors may use.
    pub async fn secret(&self, name: &str, key: &str, value: &str) {
        self.secret_with(
            name,
            key,
            value,
            serde_json::json!({"labels": {"usersync.dev/credential": "true"}}),
        )
        .await;
    }

    /// Create a Secret with one string key and this metadata (labels, annotations).
    pub async fn secret_with(&self, name: &str, key: &str, value: &str, meta: serde_json::Value) {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns.name);
        let mut metadata = serde_json::json!({"name": name});
        metadata
            .as_object_mut()
            .unwrap()
            .extend(meta.as_object().cloned().unwrap_or_default());
        let secret: Secret = serde_json::from_value(serde_json::json!({
            "metadata": metadata,
            "stringData": {key: value},
        }))
        .unwrap();
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }
}

impl<'a> World<'a> {
    /// A namespace with the operator, a connector `corp` to `server` (OpenLDAP
    /// flavor unless the server is Samba), and a policy `default` with `policy`.
    pub async fn new(test: &str, server: &'a Server, policy: serde_json::Value) -> World<'a> {
        let world = Self::without_operator(test, server, policy).await;
        world.start_operator();
        world
    }

    /// The same world, with no operator running (tests start their own processes).
    pub async fn without_operator(
        test: &str,
        server: &'a Server,
        policy: serde_json::Value,
    ) -> World<'a> {
        let scene = Scene::new(test, policy).await;
        scene
            .secret("corp-bind", "password", server.bind_password())
            .await;
        let ca = String::from_utf8(server.ca_pem.clone()).expect("the CA is PEM");
        scene.secret("corp-ca", "ca.crt", &ca).await;
        let ou = server.test_ou(test);
        let flavor = if server.base_dn.to_ascii_lowercase().contains("dc=corp") {
            "ActiveDirectory"
        } else {
            "OpenLDAP"
        };
        scene.apply(&serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
            "spec": {
                "ldap": {
                    // The bind password crosses the network only inside TLS.
                    "url": server.url, "startTLS": true, "caSecretRef": {"name": "corp-ca", "key": "ca.crt"},
                    "flavor": flavor, "bindDN": server.bind_dn,
                    "bindPasswordSecretRef": {"name": "corp-bind", "key": "password"}, "pageSize": 50, "timeout": "10s",
                },
                "probeInterval": "2s", "staleAfter": "1m",
            }
        }));
        World { scene, ou, server }
    }

    /// Create mapping `name` over `base_dn` (with extra spec fields) and wait for its
    /// first, scheduled run.
    pub async fn mapping(&self, name: &str, base_dn: &str, extra: serde_json::Value) -> RunSummary {
        let mut spec = serde_json::json!({
            "connectorRef": "corp", "policyRef": "default", "profile": name,
            "ldap": {"baseDN": base_dn},
        });
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.mapping_with(name, spec).await
    }

    /// Create mapping `name` over the test OU for the members of `groups` (DNs),
    /// and wait for its first run.
    pub async fn group_mapping(&self, name: &str, groups: &[&str]) -> RunSummary {
        let base = self.ou.dn.clone();
        let scope = serde_json::json!({"ldap": {"baseDN": base, "memberOf": groups}});
        self.mapping(name, &base, scope).await
    }
}

/// A policy under which only incremental runs come round (no full read for a
/// day) and no preserve threshold is in the way.
pub fn incremental_only_policy() -> serde_json::Value {
    serde_json::json!({"fullSyncInterval": "24h", "safety": {"maxPreservePercent": 100}})
}

/// The run succeeded and read only the changes since the last one.
pub fn succeeded_incrementally(run: &RunSummary) {
    assert_eq!(
        (run.result, run.read),
        (RunResult::Succeeded, Some(ReadMode::Incremental)),
        "{run:?}"
    );
}

impl Scene {
    /// `kubectl apply` of one object into the namespace.
    pub fn apply(&self, object: &serde_json::Value) {
        let out = cluster().apply(&self.ns.name, &object.to_string());
        assert!(
            out.status.success(),
            "kubectl apply failed: {}\n{object}",
            stderr(&out)
        );
    }

    /// Create mapping `name` with `spec` and wait for its first, scheduled run.
    pub async fn mapping_with(&self, name: &str, spec: serde_json::Value) -> RunSummary {
        self.apply(&serde_json::json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": name}, "spec": spec,
        }));
        self.wait_run(name, None).await
    }

    fn mappings(&self) -> Api<DirectoryMapping> {
        Api::namespaced(self.client.clone(), &self.ns.name)
    }

    /// Wait until the mapping has a finished run other than `after`.
    pub async fn wait_run(&self, mapping: &str, after: Option<&str>) -> RunSummary {
        let api = self.mappings();
        eventually(RUN_WAIT, &format!("a run of {mapping}"), || async {
            let m = api.get(mapping).await.ok()?;
            let status = m.status?;
            let run = status.last_run?;
            (!status.sync_in_progress && Some(run.id.as_str()) != after).then_some(run)
        })
        .await
    }

    /// Wait until the mapping's `Push` condition has `reason`; its message.
    pub async fn push_condition(&self, mapping: &str, reason: &str) -> String {
        let api = self.mappings();
        eventually(RUN_WAIT, &format!("Push condition {reason}"), || async {
            let status = api.get(mapping).await.ok()?.status?;
            let push = usersync::api::find_condition(&status.conditions, "Push")?;
            (push.reason == reason).then(|| push.message.clone())
        })
        .await
    }

    /// Wait until no run of the mapping has been in progress for two seconds
    /// (the run a push channel starts when it opens has come and gone).
    pub async fn quiet(&self, mapping: &str) {
        let api = self.mappings();
        let deadline = tokio::time::Instant::now() + RUN_WAIT;
        let mut idle_since = tokio::time::Instant::now();
        loop {
            let busy = api
                .get(mapping)
                .await
                .ok()
                .and_then(|m| m.status)
                .is_none_or(|s| s.sync_in_progress);
            let now = tokio::time::Instant::now();
            if busy {
                idle_since = now;
            } else if now - idle_since >= Duration::from_secs(2) {
                return;
            }
            assert!(
                now < deadline,
                "{mapping} had runs in progress for {RUN_WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Ask for a run through the on-demand annotation and wait for its outcome.
    pub async fn sync(&self, mapping: &str) -> RunSummary {
        let api = self.mappings();
        let (before, value) = self.request_sync(mapping).await;
        let outcome = eventually(RUN_WAIT, "the on-demand request to be handled", || async {
            let request = api.get(mapping).await.ok()?.status?.last_sync_request?;
            (request.value == value).then_some(request.outcome)
        })
        .await;
        assert!(
            outcome.starts_with("Started run"),
            "on-demand sync of {mapping} was not started: {outcome}"
        );
        self.wait_run(mapping, before.as_deref()).await
    }

    /// Ask for a run through the on-demand annotation, without waiting: the id of
    /// the last run before it, and the request's value.
    pub async fn request_sync(&self, mapping: &str) -> (Option<String>, String) {
        let before = self.last_run(mapping).await.map(|r| r.id);
        let value = jiff::Timestamp::now().as_nanosecond().to_string();
        self.annotate(mapping, SYNC_REQUESTED_ANNOTATION, &value)
            .await;
        (before, value)
    }

    /// The mapping's last run, as its status reports it.
    pub async fn last_run(&self, mapping: &str) -> Option<RunSummary> {
        self.mappings()
            .get(mapping)
            .await
            .unwrap()
            .status
            .and_then(|s| s.last_run)
    }

    /// Set an annotation on a mapping, as an admin would.
    pub async fn annotate(&self, mapping: &str, key: &str, value: &str) {
        let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
        self.mappings()
            .patch(mapping, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// The admin's freeze switch on connector `corp`: `deletionsAllowed`.
    pub async fn set_deletions_allowed(&self, allowed: bool) {
        self.patch_connector(serde_json::json!({"deletionsAllowed": allowed}))
            .await;
    }

    /// A merge patch of connector `corp`'s spec, e.g. `{"ldap": {"maxEntries": 2}}`.
    pub async fn patch_connector(&self, spec: serde_json::Value) {
        let api: Api<ConnectorHealth> = Api::namespaced(self.client.clone(), &self.ns.name);
        let patch = serde_json::json!({ "spec": spec });
        api.patch("corp", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Move a preserved user's `preservedAt` back by `by`, as if it had been
    /// preserved that long ago (for operators on the system clock).
    pub async fn backdate_preservation(&self, username: &str, by: Duration) {
        let user = self.user(username).await;
        let at = user
            .status
            .as_ref()
            .and_then(|s| s.preserved_at.clone())
            .unwrap()
            .0;
        let patch = serde_json::json!({"status": {"preservedAt": at - jiff::SignedDuration::try_from(by).unwrap()}});
        let api: Api<DirectoryUser> = Api::namespaced(self.client.clone(), &self.ns.name);
        api.patch_status(
            &user.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
    }

    /// Move a mapping's `lastSyncTime` back by `by` (no operator may be running).
    pub async fn backdate_last_sync(&self, mapping: &str, by: Duration) {
        let m = self.mappings().get(mapping).await.unwrap();
        let at = m.status.unwrap().last_sync_time.unwrap().0;
        let patch = serde_json::json!({"status": {"lastSyncTime": at - jiff::SignedDuration::try_from(by).unwrap()}});
        self.mappings()
            .patch_status(mapping, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// Wait until the connector has (or has not) probed successfully.
    pub async fn connected(&self, want: bool) {
        let api: Api<ConnectorHealth> = Api::namespaced(self.client.clone(), &self.ns.name);
        eventually(RUN_WAIT, &format!("Connected={want}"), || async {
            let c = api.get("corp").await.ok()?;
            (condition_is_true(&c.status?.conditions, "Connected") == want).then_some(())
        })
        .await;
    }

    /// Every DirectoryUser of the namespace.
    pub async fn users(&self) -> Vec<DirectoryUser> {
        let api: Api<DirectoryUser> = Api::namespaced(self.client.clone(), &self.ns.name);
        api.list(&ListParams::default()).await.unwrap().items
    }

    /// The DirectoryUsers with this username.
    pub async fn named(&self, username: &str) -> Vec<DirectoryUser> {
        self.users()
            .await
            .into_iter()
            .filter(|u| u.spec.username.as_deref() == Some(username))
            .collect()
    }

    /// The one DirectoryUser with this username.
    pub async fn user(&self, username: &str) -> DirectoryUser {
        let mut found = self.named(username).await;
        assert_eq!(
            found.len(),
            1,
            "expected one user named {username}, found {:?}",
            found.iter().map(|u| u.name_any()).collect::<Vec<_>>()
        );
        found.remove(0)
    }

    /// A user's lifecycle state and reason, as strings (`"Active"`, `"Preserved/Unmapped"`).
    pub async fn state(&self, username: &str) -> String {
        state_of(&self.user(username).await)
    }

    /// Wait until the one user named `username` is in state `want` (as [`Self::state`]).
    pub async fn state_becomes(&self, username: &str, want: &str) {
        eventually(RUN_WAIT, &format!("{username} to be {want}"), || async {
            match self.named(username).await.as_slice() {
                [one] => (state_of(one) == want).then_some(()),
                _ => None,
            }
        })
        .await;
    }
}

impl World<'_> {
    // --- the directory side ---

    /// An OU below the test's OU (for a second mapping's scope).
    pub fn sub_ou(&self, name: &str) -> String {
        let dn = format!("ou={name},{}", self.ou.dn);
        self.server
            .add_ldif(&format!("dn: {dn}\nobjectClass: organizationalUnit\n"));
        dn
    }

    /// Add an OpenLDAP user `uid` under `parent` (the test OU when `None`).
    pub fn add_user_in(&self, parent: &str, uid: &str, disabled: bool) {
        let mut ldif = format!("dn: uid={uid},{parent}\nobjectClass: inetOrgPerson\n");
        for (a, v) in [
            ("uid", uid),
            ("cn", uid),
            ("sn", uid),
            ("displayName", &format!("User {uid}")),
            ("mail", &format!("{uid}@example.org")),
        ] {
            ldif.push_str(&ldif_line(a, v));
        }
        if disabled {
            ldif.push_str("pwdAccountLockedTime: 000001010000Z\n");
        }
        self.server.add_ldif(&ldif);
    }

    pub fn add_user(&self, uid: &str, disabled: bool) {
        self.add_user_in(&self.ou.dn.clone(), uid, disabled);
    }

    fn dn(&self, uid: &str) -> String {
        format!("uid={uid},{}", self.ou.dn)
    }

    pub fn set_disabled(&self, uid: &str, disabled: bool) {
        let change = if disabled {
            "replace: pwdAccountLockedTime\npwdAccountLockedTime: 000001010000Z\n"
        } else {
            "delete: pwdAccountLockedTime\n"
        };
        self.server.modify_ldif(&format!(
            "dn: {}\nchangetype: modify\n{change}",
            self.dn(uid)
        ));
    }

    pub fn set_mail(&self, uid: &str, mail: &str) {
        self.server.modify_ldif(&format!(
            "dn: {}\nchangetype: modify\nreplace: mail\nmail: {mail}\n",
            self.dn(uid)
        ));
    }

    /// The user has no mail any more.
    pub fn clear_mail(&self, uid: &str) {
        self.server.modify_ldif(&format!(
            "dn: {}\nchangetype: modify\ndelete: mail\n",
            self.dn(uid)
        ));
    }

    /// Rename: a new RDN (and uid) for the same entry, which keeps its entryUUID.
    pub fn rename(&self, uid: &str, new_uid: &str) {
        self.server.modify_ldif(&format!(
            "dn: {}\nchangetype: modrdn\nnewrdn: uid={new_uid}\ndeleteoldrdn: 1\n",
            self.dn(uid)
        ));
    }

    /// Move an entry under another parent (same entryUUID).
    pub fn move_to(&self, dn: &str, new_parent: &str) {
        let rdn = dn.split(',').next().unwrap();
        self.server.modify_ldif(&format!("dn: {dn}\nchangetype: modrdn\nnewrdn: {rdn}\ndeleteoldrdn: 1\nnewsuperior: {new_parent}\n"));
    }

    /// Remove the entry from the directory.
    pub fn remove(&self, uid: &str) {
        self.server.as_admin("ldapdelete", &[&self.dn(uid)], None);
    }
}

/// A user's lifecycle state and reason, as strings.
fn state_of(user: &DirectoryUser) -> String {
    let status = user.status.clone().unwrap_or_default();
    match (status.state, status.reason) {
        (Some(s), Some(r)) => format!("{s:?}/{r:?}"),
        (Some(s), None) => format!("{s:?}"),
        _ => "none".into(),
    }
}
