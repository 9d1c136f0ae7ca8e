//! The operator resolves references into a `Ready` condition that follows the
//! referenced objects as they appear, change and go away.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use usersync::api::{ConnectorHealth, DirectoryMapping, find_condition};

use crate::support::{TestNamespace, cluster, eventually, start_operator, stderr};

const WAIT: Duration = Duration::from_secs(30);

/// Wait until the object's Ready condition has this status and reason; return its message.
async fn ready_is<K>(
    api: &Api<K>,
    name: &str,
    status: &str,
    reason: &str,
    conditions: fn(&K) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> String
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    condition_is(api, name, "Ready", status, reason, conditions).await
}

/// Wait until the object's condition `type_` has this status and reason; return its message.
async fn condition_is<K>(
    api: &Api<K>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
    conditions: fn(&K) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
) -> String
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    eventually(
        WAIT,
        &format!("{name} {type_}={status}/{reason}"),
        || async {
            let obj = api.get_opt(name).await.ok()??;
            let conds = conditions(&obj);
            let c = find_condition(&conds, type_)?;
            (c.status == status && c.reason == reason).then(|| c.message.clone())
        },
    )
    .await
}

fn mapping_conditions(
    m: &DirectoryMapping,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    m.status.clone().unwrap_or_default().conditions
}

fn connector_conditions(
    c: &ConnectorHealth,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    c.status.clone().unwrap_or_default().conditions
}

fn apply(ns: &str, manifest: &str) {
    let out = cluster().apply(ns, manifest);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn mapping_ready_follows_its_policy_and_connector() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "ready").await;
    let ns = ns.name.as_str();
    start_operator(&client, ns);
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), ns);

    apply(
        ns,
        r#"
apiVersion: usersync.dev/v1alpha1
kind: DirectoryMapping
metadata: {name: staff}
spec:
  connectorRef: corp
  policyRef: default
  ldap: {baseDN: "ou=Staff,dc=example,dc=org"}
"#,
    );
    let message = ready_is(
        &mappings,
        "staff",
        "False",
        "PolicyNotFound",
        mapping_conditions,
    )
    .await;
    assert!(
        message.contains("SyncPolicy \"default\" not found"),
        "{message}"
    );
    // Only a person can help: GitOps tools read it as failed, not as in progress.
    condition_is(
        &mappings,
        "staff",
        "Stalled",
        "True",
        "PolicyNotFound",
        mapping_conditions,
    )
    .await;

    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: SyncPolicy, metadata: {name: default}, spec: {interval: 1h}}",
    );
    let message = ready_is(
        &mappings,
        "staff",
        "False",
        "ConnectorNotFound",
        mapping_conditions,
    )
    .await;
    assert!(
        message.contains("ConnectorHealth \"corp\" not found"),
        "{message}"
    );

    // A connector whose bind password Secret is missing: both objects say so. Its
    // port is free (nothing listens: below, the probe is refused), not a default
    // a developer's directory may be using.
    let port = crate::ldap_support::free_port();
    apply(
        ns,
        &format!(
            r#"
apiVersion: usersync.dev/v1alpha1
kind: ConnectorHealth
metadata: {{name: corp}}
spec:
  ldap:
    url: ldap://127.0.0.1:{port}
    allowPlaintextBind: true
    flavor: OpenLDAP
    bindDN: cn=usersync,ou=Service,dc=example,dc=org
    bindPasswordSecretRef: {{name: corp-bind, key: password}}
"#
        ),
    );
    let connectors: Api<ConnectorHealth> = Api::namespaced(client.clone(), ns);
    let message = ready_is(
        &connectors,
        "corp",
        "False",
        "SecretNotFound",
        connector_conditions,
    )
    .await;
    assert!(
        message.contains("Secret \"corp-bind\" not found"),
        "{message}"
    );
    condition_is(
        &connectors,
        "corp",
        "Stalled",
        "True",
        "SecretNotFound",
        connector_conditions,
    )
    .await;
    ready_is(
        &mappings,
        "staff",
        "False",
        "SecretNotFound",
        mapping_conditions,
    )
    .await;

    // The Secret appears, with the wrong key first, then the right one.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "corp-bind", "labels": {"usersync.dev/credential": "true"}}, "stringData": {"pass": "s3cret-value"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let message = ready_is(
        &connectors,
        "corp",
        "False",
        "SecretKeyNotFound",
        connector_conditions,
    )
    .await;
    assert!(message.contains("has no key \"password\""), "{message}");
    assert!(
        !message.contains("s3cret-value"),
        "a Secret value reached a status message"
    );
    secrets
        .delete("corp-bind", &DeleteParams::default())
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "corp-bind", "labels": {"usersync.dev/credential": "true"}}, "stringData": {"password": "s3cret-value"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    condition_is(
        &connectors,
        "corp",
        "Resolved",
        "True",
        "Resolved",
        connector_conditions,
    )
    .await;
    // Nothing listens on the connector's port: the connector and the mapping's runs
    // fail, which is retried (Reconciling), not a reference problem.
    condition_is(
        &connectors,
        "corp",
        "Reconciling",
        "True",
        "Unreachable",
        connector_conditions,
    )
    .await;
    let message = condition_is(
        &mappings,
        "staff",
        "Reconciling",
        "True",
        "RunFailed",
        mapping_conditions,
    )
    .await;
    assert!(!message.contains("s3cret-value"));

    // The policy goes away: the mapping notices without polling.
    let out = cluster().kubectl(["delete", "spol", "default", "-n", ns]);
    assert!(out.status.success(), "{}", stderr(&out));
    ready_is(
        &mappings,
        "staff",
        "False",
        "PolicyNotFound",
        mapping_conditions,
    )
    .await;
}

#[tokio::test]
async fn mapping_scope_must_fit_the_connector_kind() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "kind").await;
    let ns = ns.name.as_str();
    start_operator(&client, ns);
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: SyncPolicy, metadata: {name: default}, spec: {}}",
    );
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: ConnectorHealth, metadata: {name: corp}, spec: {ldap: {url: 'ldap://127.0.0.1:3389'}}}",
    );
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: DirectoryMapping, metadata: {name: cloud}, spec: {connectorRef: corp, policyRef: default, entraID: {groups: [g1]}}}",
    );
    let mappings: Api<DirectoryMapping> = Api::namespaced(client.clone(), ns);
    let message = ready_is(
        &mappings,
        "cloud",
        "False",
        "InvalidSpec",
        mapping_conditions,
    )
    .await;
    assert!(message.contains("is an LDAP connector"), "{message}");
}

#[tokio::test]
async fn status_is_written_under_the_operator_field_manager_only() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "ssa").await;
    let ns = ns.name.as_str();
    start_operator(&client, ns);
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: SyncPolicy, metadata: {name: default}, spec: {interval: 2h}}",
    );
    let policies: Api<usersync::api::SyncPolicy> = Api::namespaced(client.clone(), ns);
    let policy = eventually(WAIT, "policy Ready", || async {
        let p = policies.get("default").await.ok()?;
        p.status
            .as_ref()
            .filter(|s| !s.conditions.is_empty())
            .map(|_| p.clone())
    })
    .await;
    let managed = policy.metadata.managed_fields.clone().unwrap_or_default();
    let ours: Vec<_> = managed
        .iter()
        .filter(|m| m.manager.as_deref() == Some("usersync"))
        .collect();
    assert!(
        !ours.is_empty(),
        "no fields managed by usersync: {managed:#?}"
    );
    for entry in ours {
        assert_eq!(
            entry.subresource.as_deref(),
            Some("status"),
            "usersync wrote outside status: {entry:#?}"
        );
        assert_eq!(
            entry.operation.as_deref(),
            Some("Apply"),
            "usersync must use server-side apply"
        );
    }
    assert_eq!(policy.spec.interval, "2h", "the admin's spec is untouched");
}

#[tokio::test]
async fn a_policy_counts_the_mappings_that_use_it() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "count").await;
    let ns = ns.name.as_str();
    start_operator(&client, ns);
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: SyncPolicy, metadata: {name: default}, spec: {}}",
    );
    for name in ["a", "b"] {
        apply(
            ns,
            &format!(
                "{{apiVersion: usersync.dev/v1alpha1, kind: DirectoryMapping, metadata: {{name: {name}}}, spec: {{connectorRef: corp, policyRef: default, ldap: {{baseDN: 'dc=x'}}}}}}"
            ),
        );
    }
    let policies: Api<usersync::api::SyncPolicy> = Api::namespaced(client.clone(), ns);
    let count = |want: u32| {
        let policies = policies.clone();
        async move {
            eventually(WAIT, &format!("mappings = {want}"), || async {
                (policies.get("default").await.ok()?.status?.mappings == want).then_some(())
            })
            .await
        }
    };
    count(2).await;
    let out = cluster().kubectl(["delete", "dmap", "b", "-n", ns, "--wait=false"]);
    assert!(out.status.success(), "{}", stderr(&out));
    count(1).await;
}

#[tokio::test]
async fn an_object_the_operator_cannot_read_does_not_stop_the_controller() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "unreadable").await;
    let ns = ns.name.as_str();
    start_operator(&client, ns);
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: ConnectorHealth, metadata: {name: bad}, spec: {ldap: {url: 'ldap://127.0.0.1:1'}, probeInterval: 1h}}",
    );
    // Another tool writes a status value the schema allows but the operator's types do not.
    let out = cluster().kubectl([
        "patch",
        "conn",
        "bad",
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"consecutiveFailures":99999999999}}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    apply(
        ns,
        "{apiVersion: usersync.dev/v1alpha1, kind: ConnectorHealth, metadata: {name: good}, spec: {ldap: {url: 'ldap://127.0.0.1:1'}, probeInterval: 1h}}",
    );
    let connectors: Api<ConnectorHealth> = Api::namespaced(client.clone(), ns);
    condition_is(
        &connectors,
        "good",
        "Resolved",
        "True",
        "Resolved",
        connector_conditions,
    )
    .await;
    let raw = eventually(WAIT, "bad to report InvalidSpec", || async {
        let out = cluster().kubectl([
            "get",
            "conn",
            "bad",
            "-n",
            ns,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}",
        ]);
        let reason = crate::support::stdout(&out);
        (reason == "InvalidSpec").then_some(reason)
    })
    .await;
    assert_eq!(raw, "InvalidSpec");
}

/// GitOps tools own the spec, metadata and annotations of what they apply; the
/// operator owns only status (and the mapping's finalizer). After a full sync,
/// every field that an operator field manager holds on the mapping, the policy
/// and the connector is under `status` or is the finalizer, and each object's
/// Ready condition is True for its current generation, so Argo CD and Flux
/// report health from it.
#[tokio::test]
async fn after_a_sync_the_operator_owns_only_status_and_the_finalizer() {
    use crate::ldap_support::Server;
    use crate::world::World;
    use usersync::api::SyncPolicy;

    let w = World::new("gitops", Server::slapd(), serde_json::json!({})).await;
    w.add_user("go1", false);
    w.mapping("staff", &w.ou.dn.clone(), serde_json::json!({}))
        .await;

    fn check<K>(
        obj: &K,
        conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
        observed: Option<i64>,
    ) where
        K: kube::Resource,
    {
        let meta = obj.meta();
        let name = meta.name.clone().unwrap_or_default();
        let managed = meta.managed_fields.clone().unwrap_or_default();
        let ours: Vec<_> = managed
            .iter()
            .filter(|m| {
                m.manager
                    .as_deref()
                    .is_some_and(|n| n.starts_with("usersync"))
            })
            .collect();
        assert!(
            !ours.is_empty(),
            "{name}: no fields managed by the operator: {managed:#?}"
        );
        for entry in ours {
            let fields = entry
                .fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            let only_finalizers = fields
                .as_object()
                .is_some_and(|top| top.keys().all(|k| k == "f:metadata"))
                && fields["f:metadata"]
                    .as_object()
                    .is_some_and(|m| m.keys().all(|k| k == "f:finalizers"));
            assert!(
                entry.subresource.as_deref() == Some("status") || only_finalizers,
                "{name}: the operator holds fields outside status: {entry:#?}"
            );
            assert_eq!(
                entry.operation.as_deref(),
                Some("Apply"),
                "{name}: {entry:#?}"
            );
        }
        let ready = find_condition(conditions, "Ready").expect("a Ready condition");
        assert_eq!(ready.status, "True", "{name}: {ready:?}");
        assert_eq!(
            ready.observed_generation, meta.generation,
            "{name}: {ready:?}"
        );
        assert_eq!(
            observed, meta.generation,
            "{name}: status.observedGeneration"
        );
    }

    let mappings: Api<DirectoryMapping> = Api::namespaced(w.client.clone(), &w.ns.name);
    // The run's outcome is written first; the health that sums it up follows.
    ready_is(&mappings, "staff", "True", "Synced", mapping_conditions).await;
    let mapping = mappings.get("staff").await.unwrap();
    let status = mapping.status.clone().unwrap();
    check(&mapping, &status.conditions, status.observed_generation);
    assert_eq!(
        mapping.metadata.finalizers.as_deref(),
        Some(&["usersync.dev/users".to_owned()][..])
    );
    let policies: Api<SyncPolicy> = Api::namespaced(w.client.clone(), &w.ns.name);
    let policy = policies.get("default").await.unwrap();
    let status = policy.status.clone().unwrap();
    check(&policy, &status.conditions, status.observed_generation);
    let connectors: Api<ConnectorHealth> = Api::namespaced(w.client.clone(), &w.ns.name);
    let connector = connectors.get("corp").await.unwrap();
    let status = connector.status.clone().unwrap();
    check(&connector, &status.conditions, status.observed_generation);
}
