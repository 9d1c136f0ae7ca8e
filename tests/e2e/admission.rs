//! The CRD schema refuses bad manifests at `kubectl apply`, with a message that says why.

use serde_json::{Value, json};

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

/// A usersync object of `kind` named `name` with `spec`, as kubectl reads it.
fn object(kind: &str, name: &str, spec: Value) -> String {
    json!({"apiVersion": "usersync.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec})
        .to_string()
}

/// A valid ProvisioningTarget spec with `extra` merged into it.
fn target(extra: Value) -> Value {
    let mut spec = json!({
        "endpoint": "https://app.example/scim/v2",
        "auth": {"bearerTokenSecretRef": {"name": "app-token", "key": "token"}},
        "users": {"mappings": ["staff"]},
    });
    for (k, v) in extra.as_object().expect("an object") {
        spec[k] = v.clone();
    }
    spec
}

#[tokio::test]
async fn invalid_provisioning_targets_are_refused_by_kubectl_apply() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "ptarget-admission").await;
    let ns = ns.name.as_str();
    let refused = |extra: Value, message: &str| {
        assert_refused(
            ns,
            &object("ProvisioningTarget", "app", target(extra)),
            message,
        )
    };
    refused(
        json!({"endpoint": "http://app.example/scim"}),
        "needs allowInsecureHttp: true",
    );
    refused(
        json!({"endpoint": "https://app.example/scim?x=1"}),
        "endpoint must be an http(s) URL with no query or fragment",
    );
    refused(
        json!({"users": {}}),
        "users must name at least one of mappings, profiles or selector",
    );
    refused(
        json!({"users": {"mappings": ["Staff"]}}),
        "spec.users.mappings[0]",
    );
    refused(
        json!({"auth": {}}),
        "auth must set exactly one of bearerTokenSecretRef or oauth2",
    );
    refused(
        json!({"auth": {
            "bearerTokenSecretRef": {"name": "t", "key": "k"},
            "oauth2": {"tokenURL": "https://login.example/token", "clientID": "c", "clientSecretRef": {"name": "s", "key": "k"}},
        }}),
        "auth must set exactly one of bearerTokenSecretRef or oauth2",
    );
    refused(
        json!({"auth": {"oauth2": {"tokenURL": "http://login.example/token", "clientID": "c", "clientSecretRef": {"name": "s", "key": "k"}}}}),
        "tokenURL must be an https:// URL",
    );
    refused(
        json!({"attributes": [{"from": "email", "to": "emails[type eq \"work\"].value"}]}),
        "attributes must map some field to userName",
    );
    refused(
        json!({"attributes": [{"from": "username", "to": "userName"}, {"from": "email", "to": "userName"}]}),
        "each SCIM path may appear only once",
    );
    refused(
        json!({"attributes": [{"from": "username", "to": "userName"}, {"from": "password", "to": "password"}]}),
        "from must be username, email",
    );
    refused(
        json!({"attributes": [{"from": "username", "to": "userName"}, {"from": "email", "to": "active"}]}),
        "to must not be id, meta, schemas or active",
    );
    refused(
        json!({"attributes": [{"from": "username", "to": "userName"}, {"from": "email", "to": "emails[type eq work].value"}]}),
        "to must be a SCIM path",
    );
    refused(json!({"deprovision": "Purge"}), "Unsupported value");
    refused(
        json!({"safety": {"maxDisablePercent": 101}}),
        "maxDisablePercent must be between 0 and 100",
    );
    refused(json!({"matchAttribute": "email"}), "Unsupported value");

    // The opt-in admits plain http; the defaults fill in the rest.
    assert_applied(
        ns,
        &object(
            "ProvisioningTarget",
            "local",
            target(json!({
                "endpoint": "http://127.0.0.1:8080/scim/v2",
                "allowInsecureHttp": true,
                "attributes": [
                    {"from": "username", "to": "userName"},
                    {"from": "attributes.employeeNumber", "to": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber"},
                    {"from": "email", "to": "emails[type eq \"work\"].value"},
                ],
            })),
        ),
    );
    let out = cluster().kubectl(["-n", ns, "get", "ptarget", "local", "-o", "jsonpath={.spec.deprovision} {.spec.matchAttribute} {.spec.interval} {.spec.safety.maxDisablePercent}"]);
    assert_eq!(stdout(&out), "Disable userName 5m 10");
    // Its accounts' ids belong to the application at its endpoint, which stays.
    assert_refused(
        ns,
        &object(
            "ProvisioningTarget",
            "local",
            target(json!({
                "endpoint": "http://127.0.0.1:8081/scim/v2",
                "allowInsecureHttp": true,
            })),
        ),
        "endpoint cannot change",
    );
}

/// An LDAP connector spec with `extra` merged into `spec` and `ldap` into `spec.ldap`.
fn ldap_connector(ldap: Value, extra: Value) -> Value {
    let mut spec = json!({"ldap": {"url": "ldap://dc1"}});
    spec["ldap"]
        .as_object_mut()
        .unwrap()
        .extend(ldap.as_object().cloned().unwrap_or_default());
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().cloned().unwrap_or_default());
    spec
}

/// An Entra ID connector spec with `entra` merged into `spec.entraID`.
fn entra_connector(entra: Value) -> Value {
    let mut spec = json!({"entraID": {
        "tenantID": "00000000-0000-0000-0000-000000000000",
        "clientID": "00000000-0000-0000-0000-000000000000",
        "clientSecretRef": {"name": "graph-app", "key": "secret"},
    }});
    spec["entraID"]
        .as_object_mut()
        .unwrap()
        .extend(entra.as_object().cloned().unwrap_or_default());
    spec
}

#[tokio::test]
async fn durations_below_their_minimum_are_refused() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "minimums").await;
    let ns = ns.name.as_str();

    // (a spec with the field set to `value`, the message when it is too short,
    //  values just below the minimum, values at or above it); the sums and the
    //  days check the rule's arithmetic, not only its single groups.
    type Spec = fn(&str) -> (&'static str, Value);
    let cases: [(Spec, &str, &[&str], &[&str]); 9] = [
        (
            |v| ("ProvisioningTarget", target(json!({"interval": v}))),
            "interval must be at least 10s",
            &["9s", "9999ms", "0s"],
            &["10s", "5s5s", "5m"],
        ),
        (
            |v| {
                (
                    "ProvisioningTarget",
                    target(json!({"fullReconcileInterval": v})),
                )
            },
            "fullReconcileInterval must be at least 1m",
            &["59s"],
            &["1m", "24h"],
        ),
        (
            |v| ("SyncPolicy", json!({"interval": v})),
            "interval must be at least 1m",
            &["59s", "59999ms", "30s29s999ms", "0d", "0s"],
            &["1m", "60000ms", "30s30s", "0d1m", "24h", "45d"],
        ),
        (
            |v| ("SyncPolicy", json!({"fullSyncInterval": v})),
            "fullSyncInterval must be at least 1m",
            &["2s", "59s999ms"],
            &["1m", "59s1000ms"],
        ),
        (
            |v| ("SyncPolicy", json!({"preservation": {"deleteAfter": v}})),
            "deleteAfter must be at least 1h",
            &["1s", "2s", "59m59s", "3599999ms", "0d59m"],
            &["1h", "3600s", "59m60s", "0d1h", "1d", "45d"],
        ),
        (
            |v| {
                (
                    "ConnectorHealth",
                    ldap_connector(json!({}), json!({"probeInterval": v})),
                )
            },
            "probeInterval must be at least 1s",
            &["0s", "999ms"],
            &["1s", "1000ms", "2s", "1h"],
        ),
        (
            |v| {
                (
                    "ConnectorHealth",
                    ldap_connector(json!({}), json!({"staleAfter": v})),
                )
            },
            "staleAfter must be at least 1s",
            &["0s", "500ms499ms"],
            &["1s", "500ms500ms", "1m"],
        ),
        (
            |v| {
                (
                    "ConnectorHealth",
                    ldap_connector(json!({"timeout": v}), json!({})),
                )
            },
            "timeout must be at least 1s",
            &["0ms", "999ms"],
            &["1s", "8s", "30s"],
        ),
        (
            |v| ("ConnectorHealth", entra_connector(json!({"timeout": v}))),
            "timeout must be at least 1s",
            &["0s", "999ms"],
            &["1s", "10s"],
        ),
    ];
    for (spec, message, below, at_or_above) in cases {
        for value in below {
            let (kind, spec) = spec(value);
            assert_refused(ns, &object(kind, "short", spec), message);
        }
        for value in at_or_above {
            let (kind, spec) = spec(value);
            assert_applied(ns, &object(kind, "long-enough", spec));
        }
    }
    // A malformed value gets the grammar's message, not the minimum's as well.
    let out = cluster().apply(ns, &object("SyncPolicy", "p", json!({"interval": "1.5s"})));
    let err = stderr(&out);
    assert!(err.contains("interval must be a duration"), "{err}");
    assert!(!err.contains("at least"), "{err}");
}

#[tokio::test]
async fn entra_hosts_are_scheme_host_and_port_only() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "entra-hosts").await;
    let ns = ns.name.as_str();

    for host in [
        "https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000/oauth2/v2.0/token",
        "https://login.example/base",
        "https://login.example/?x=1",
        "https://login.example#top",
        "http://login.example",
    ] {
        assert_refused(
            ns,
            &object(
                "ConnectorHealth",
                "c",
                entra_connector(json!({"authorityHost": host})),
            ),
            "authorityHost must be https://host[:port] with no path, query or fragment",
        );
    }
    assert_refused(
        ns,
        &object(
            "ConnectorHealth",
            "c",
            entra_connector(json!({"graphHost": "https://graph.example/v1.0"})),
        ),
        "graphHost must be https://host[:port] with no path, query or fragment",
    );
    for host in [
        "https://login.example",
        "https://login.example:8443/",
        "http://127.0.0.1:8080/",
    ] {
        assert_applied(
            ns,
            &object(
                "ConnectorHealth",
                "c",
                entra_connector(json!({"authorityHost": host, "graphHost": host})),
            ),
        );
    }
}

#[tokio::test]
async fn names_longer_than_a_label_value_are_refused() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "long-names").await;
    let ns = ns.name.as_str();

    let mapping =
        json!({"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": "dc=x"}});
    let connector = ldap_connector(json!({}), json!({}));
    let longest = "a".repeat(63);
    let too_long = "a".repeat(64);
    assert_refused(
        ns,
        &object("DirectoryMapping", &too_long, mapping.clone()),
        "a DirectoryMapping name must be at most 63 characters: it becomes the value of the usersync.dev/mapping label",
    );
    assert_refused(
        ns,
        &object("ConnectorHealth", &too_long, connector.clone()),
        "a ConnectorHealth name must be at most 63 characters: it becomes the value of the usersync.dev/connector label",
    );
    assert_applied(ns, &object("DirectoryMapping", &longest, mapping));
    assert_applied(ns, &object("ConnectorHealth", &longest, connector));
}

#[tokio::test]
async fn references_must_be_dns_names() {
    let client = cluster().client().await;
    let ns = TestNamespace::new(&client, "references").await;
    let ns = ns.name.as_str();

    let bad_names = [
        "../../victim/secrets/db",
        "db?namespace=victim",
        "Corp",
        "corp/x",
        "",
    ];
    let mapping = |connector: &str, policy: &str| {
        object(
            "DirectoryMapping",
            "m",
            json!({"connectorRef": connector, "policyRef": policy, "ldap": {"baseDN": "dc=x"}}),
        )
    };
    let user = |connector: &str, mapping: &str| {
        object(
            "DirectoryUser",
            "u",
            json!({"origin": "Directory", "connectorRef": connector, "mappingRef": mapping,
                   "anchor": "2d8b0ce6-aa32-4f31-a6e8-88343e6244a5"}),
        )
    };
    let secret = |name: &str| {
        object(
            "ConnectorHealth",
            "c",
            ldap_connector(
                json!({"bindDN": "cn=svc", "bindPasswordSecretRef": {"name": name, "key": "password"}}),
                json!({}),
            ),
        )
    };
    for bad in bad_names {
        for (manifest, message) in [
            (
                mapping(bad, "default"),
                "connectorRef must be a valid ConnectorHealth name",
            ),
            (
                mapping("corp", bad),
                "policyRef must be a valid SyncPolicy name",
            ),
            (
                user(bad, "staff"),
                "connectorRef must be a valid ConnectorHealth name",
            ),
            (
                user("corp", bad),
                "mappingRef must be a valid DirectoryMapping name",
            ),
            (secret(bad), "secret name must be a valid Secret name"),
        ] {
            assert_refused(ns, &manifest, message);
        }
    }
    assert_refused(
        ns,
        &object(
            "ConnectorHealth",
            "e",
            entra_connector(json!({"clientSecretRef": {"name": "../graph-app", "key": "secret"}})),
        ),
        "secret name must be a valid Secret name",
    );
    assert_applied(ns, &mapping("corp.example", "default-v2"));
    assert_applied(ns, &user("corp.example", "staff"));
    assert_applied(ns, &secret("corp-bind.v2"));
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

/// Installing the CRDs prints nothing but what it did: the API server warns about
/// schemas it does not fully understand (an unknown `format`) when a CRD is created,
/// which is what `kubectl apply -f crds/` and `helm install` do on a fresh cluster.
/// The committed CRDs are created here under another group, in a dry run.
#[test]
fn creating_the_crds_prints_no_warnings() {
    let committed = std::fs::read_to_string(crate::support::repo().join("crds/usersync.dev.yaml"))
        .expect("the committed CRDs are readable");
    let group = format!("warnings-{}.usersync.test", std::process::id());
    let renamed = committed.replace("usersync.dev", &group);
    let file = std::env::temp_dir().join(format!("{group}.yaml"));
    std::fs::write(&file, renamed).unwrap();
    let out = cluster().kubectl([
        "create".as_ref(),
        "--dry-run=server".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
    ]);
    std::fs::remove_file(&file).ok();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 6, "{}", stdout(&out));
    assert_eq!(stderr(&out), "", "creating the CRDs warned");
}
