//! The CRD schema refuses bad manifests at `kubectl apply`, with a message that says why.

use crate::support::{TestNamespace, cluster, stderr, stdout};

const CONNECTOR: &str = r#"
apiVersion: usersync.dev/v1alpha1
kind: ConnectorHealth
metadata: {name: corp}
spec:
  ldap:
    url: ldap://127.0.0.1:3389
    flavor: OpenLDAP
"#;

const MAPPING: &str = r#"
apiVersion: usersync.dev/v1alpha1
kind: DirectoryMapping
metadata: {name: staff}
spec:
  connectorRef: corp
  policyRef: default
  ldap: {baseDN: "ou=Staff,dc=example,dc=org"}
"#;

const USER: &str = r#"
apiVersion: usersync.dev/v1alpha1
kind: DirectoryUser
metadata: {name: alice}
spec:
  origin: Directory
  connectorRef: corp
  anchor: 2d8b0ce6-aa32-4f31-a6e8-88343e6244a5
  username: alice
"#;

/// Apply `manifest` and expect it refused with `message` in kubectl's error.
fn assert_refused(ns: &str, manifest: &str, message: &str) {
    let out = cluster().apply(ns, manifest);
    assert!(
        !out.status.success(),
        "kubectl apply accepted an invalid manifest:\n{manifest}"
    );
    let err = stderr(&out);
    assert!(
        err.contains(message),
        "expected {message:?} in kubectl's error, got:\n{err}"
    );
}

fn assert_applied(ns: &str, manifest: &str) {
    let out = cluster().apply(ns, manifest);
    assert!(
        out.status.success(),
        "kubectl apply failed: {}\n{manifest}",
        stderr(&out)
    );
}

#[tokio::test]
async fn invalid_manifests_are_refused_by_kubectl_apply() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "admission").await;
    let ns = ns.name.as_str();

    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"ConnectorHealth","metadata":{"name":"both"},
            "spec":{"ldap":{"url":"ldap://a"},"entraID":{"tenantID":"00000000-0000-0000-0000-000000000000","clientID":"00000000-0000-0000-0000-000000000000","clientSecretRef":{"name":"s","key":"k"}}}}"#,
        "exactly one of spec.ldap or spec.entraID must be set",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"ConnectorHealth","metadata":{"name":"neither"},"spec":{}}"#,
        "exactly one of spec.ldap or spec.entraID must be set",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"ConnectorHealth","metadata":{"name":"http"},"spec":{"ldap":{"url":"http://dc1:389"}}}"#,
        "url must be ldap://host[:port] or ldaps://host[:port]",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"ConnectorHealth","metadata":{"name":"tls"},"spec":{"ldap":{"url":"ldaps://dc1:636","startTLS":true}}}"#,
        "startTLS applies to ldap:// URLs",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"ConnectorHealth","metadata":{"name":"stale"},"spec":{"ldap":{"url":"ldap://dc1"},"staleAfter":"5 minutes"}}"#,
        "staleAfter must be a duration",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"SyncPolicy","metadata":{"name":"p"},"spec":{"interval":"1.5h"}}"#,
        "interval must be a duration",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"SyncPolicy","metadata":{"name":"p"},"spec":{"preservation":{"deleteAfter":"45days"}}}"#,
        "deleteAfter must be a duration",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"SyncPolicy","metadata":{"name":"p"},"spec":{"safety":{"maxPreservePercent":150}}}"#,
        "maxPreservePercent must be between 0 and 100",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"DirectoryMapping","metadata":{"name":"m"},
            "spec":{"connectorRef":"corp","policyRef":"default","priority":-1,"ldap":{"baseDN":"dc=x"}}}"#,
        "priority must be 0 or greater",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"DirectoryMapping","metadata":{"name":"m"},
            "spec":{"connectorRef":"corp","policyRef":"default","ldap":{"baseDN":"dc=x","filter":"objectClass=user"}}}"#,
        "filter must be an LDAP filter in parentheses",
    );
    assert_refused(
        ns,
        r#"{"apiVersion":"usersync.dev/v1alpha1","kind":"DirectoryUser","metadata":{"name":"u"},"spec":{"origin":"Directory","username":"bob"}}"#,
        "a Directory user needs connectorRef and anchor",
    );

    // Immutable fields: accepted once, refused when changed.
    assert_applied(ns, CONNECTOR);
    assert_applied(ns, MAPPING);
    assert_refused(
        ns,
        &MAPPING.replace("connectorRef: corp", "connectorRef: other"),
        "connectorRef is immutable",
    );
    assert_applied(ns, USER);
    assert_refused(
        ns,
        &USER.replace("2d8b0ce6-aa32", "ffffffff-aa32"),
        "anchor is immutable once set",
    );
    assert_refused(
        ns,
        &USER.replace("connectorRef: corp", "connectorRef: other"),
        "connectorRef is immutable once set",
    );
    assert_refused(
        ns,
        &USER.replace("origin: Directory", "origin: Manual"),
        "origin is immutable",
    );
    // A change to a mutable field still goes through.
    assert_applied(ns, &USER.replace("username: alice", "username: alice2"));
}

#[tokio::test]
async fn kubectl_get_dmap_shows_the_printer_columns() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "columns").await;
    assert_applied(&ns.name, MAPPING);
    let out = cluster().kubectl(["get", "dmap", "-n", &ns.name]);
    assert!(out.status.success(), "{}", stderr(&out));
    let header = stdout(&out).lines().next().unwrap_or_default().to_string();
    for column in [
        "NAME",
        "READY",
        "LAST SYNC",
        "NEXT SYNC",
        "ACTIVE",
        "PRESERVED",
        "AGE",
    ] {
        assert!(
            header.contains(column),
            "column {column} missing from {header:?}"
        );
    }
    let out = cluster().kubectl(["get", "duser,conn,spol", "-n", &ns.name]);
    assert!(
        out.status.success(),
        "short names resolve: {}",
        stderr(&out)
    );
}

#[tokio::test]
async fn kubectl_explain_describes_the_fields() {
    // The API server publishes a new CRD's OpenAPI a little after it is established.
    let explain = |path: &'static str| async move {
        crate::support::eventually(
            std::time::Duration::from_secs(30),
            "the CRD's OpenAPI",
            || async {
                let out = cluster().kubectl(["explain", path]);
                out.status.success().then(|| stdout(&out))
            },
        )
        .await
    };
    let text = explain("directorymapping.spec.ldap").await;
    assert!(text.contains("baseDN"), "{text}");
    assert!(text.contains("The scope in an LDAP directory"), "{text}");
    let text = explain("syncpolicy.spec.preservation.deleteAfter").await;
    assert!(text.contains("measured from the moment"), "{text}");
}
