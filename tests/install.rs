//! Installing usersync for real: the Helm chart (charts/usersync) and the kustomize
//! base (deploy/), checked with the built `helm` and `kubectl` against the real
//! control plane of tests/cluster.sh. Pods never run there (no kubelet), so these
//! tests check what the API server admits and what the operator's account may do.

#[path = "e2e/support.rs"]
#[allow(dead_code)]
mod support;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;
use support::{cluster, repo, stderr, stdout};

const CHART: &str = "charts/usersync";
const REPO_CRDS: &str = "crds/usersync.dev.yaml";
/// Where the kustomize base puts everything namespaced.
const DEPLOY_NAMESPACE: &str = "usersync-system";

// ---------------------------------------------------------------------------
// Files that must not drift apart.

#[test]
fn chart_crds_are_the_repository_crds() {
    assert_same_file(REPO_CRDS, "charts/usersync/crds/usersync.dev.yaml");
}

#[test]
fn kustomize_crds_are_the_repository_crds() {
    assert_same_file(REPO_CRDS, "deploy/base/crds/usersync.dev.yaml");
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart: Value = yaml_docs(&read(&format!("{CHART}/Chart.yaml"))).remove(0);
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(
        chart["appVersion"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion must be the crate version"
    );
}

#[test]
fn kustomize_rbac_matches_the_chart() {
    // deploy/ is the chart's default (all namespaces, kubernetes store) written out.
    let chart = helm_template("usersync", "usersync-system", &[]);
    let base = kustomize_build();
    for kind in ["ClusterRole", "Role"] {
        assert_eq!(
            rules_by_name(&chart, kind),
            rules_by_name(&base, kind),
            "the {kind} rules of deploy/ and of the chart differ"
        );
    }
}

#[test]
fn kustomize_single_namespace_is_the_charts_namespace_mode_for_its_own_namespace() {
    // deploy/single-namespace/ is the chart with watchNamespaces and secretNamespaces
    // set to the release namespace, written out.
    let ns = DEPLOY_NAMESPACE;
    let chart = helm_template(
        "usersync",
        ns,
        &[
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            &format!("secretNamespaces={{{ns}}}"),
        ],
    );
    let overlay = kustomize_build_of("deploy/single-namespace/");
    assert_eq!(
        rules_by_name(&chart, "Role")["usersync"],
        rules_by_name(&overlay, "Role")["usersync"],
        "the Role rules of deploy/single-namespace/ and of the chart differ"
    );
    assert_eq!(
        rules_by_name(&chart, "ClusterRole")["usersync-secret-reader"],
        rules_by_name(&overlay, "ClusterRole")["usersync-secret-reader"],
    );
    assert!(kinds(&overlay, "ClusterRoleBinding").is_empty());
    let bindings: Vec<_> = overlay
        .iter()
        .filter(|d| d["kind"] == "RoleBinding")
        .map(|d| {
            format!(
                "{}/{}->{}",
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap(),
                d["roleRef"]["name"].as_str().unwrap()
            )
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        bindings,
        [
            format!("{ns}/usersync->usersync"),
            format!("{ns}/usersync-leader-election->usersync-leader-election"),
            format!("{ns}/usersync-secrets->usersync-secret-reader"),
        ]
    );
    let args =
        strings(&only(&overlay, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.iter().any(|a| a == "--namespace=$(POD_NAMESPACE)"),
        "{args:?}"
    );
    assert!(
        args.iter()
            .any(|a| a == "--secret-reader-role=usersync-secret-reader"),
        "{args:?}"
    );
}

#[test]
fn image_builds_with_the_crates_toolchain_and_runs_as_the_pods_user() {
    // No container engine here: check what the Dockerfile says, not what it builds.
    let dockerfile = read("Dockerfile");
    let value = |prefix: &str| {
        dockerfile
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .next_back()
            .unwrap_or_else(|| panic!("the Dockerfile has no `{prefix}`"))
            .trim()
            .to_string()
    };
    assert_eq!(
        value("ARG RUST_VERSION="),
        env!("CARGO_PKG_RUST_VERSION"),
        "the Dockerfile's RUST_VERSION is not Cargo.toml's rust-version"
    );
    assert!(dockerfile.contains("cargo build --release --locked"));
    let user = value("USER ");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0, "the image runs as root");
    assert_eq!(value("ENTRYPOINT "), r#"["/usr/local/bin/usersync"]"#);
    assert_eq!(value("CMD "), r#"["run"]"#);
    for (source, docs) in [
        ("the chart", helm_template("usersync", "ops", &[])),
        ("deploy/", kustomize_build()),
    ] {
        let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(
            pod["securityContext"]["runAsUser"], uid,
            "{source} runs the pod as another user than the image's"
        );
        assert_eq!(
            pod["containers"][0]["args"][0], "run",
            "{source}: the image's entrypoint is usersync; its first argument is the subcommand"
        );
    }
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l.trim() == "target/"));
}

// ---------------------------------------------------------------------------
// The chart on its own.

#[test]
fn helm_lint_is_clean() {
    for values in [
        &[][..],
        &["--set", "watchNamespaces={team-a,team-b}"],
        &[
            "--set",
            "store.type=postgres",
            "--set",
            "store.postgres.dsnSecretRef.name=usersync-db",
        ],
        &["--set", "metrics.serviceMonitor.enabled=true"],
        &[
            "--set",
            "replicas=1",
            "--set",
            "leaderElection.enabled=false",
        ],
    ] {
        for strict in [false, true] {
            let mut args = vec!["lint", CHART];
            if strict {
                args.push("--strict");
            }
            args.extend_from_slice(values);
            let out = helm(&args);
            assert!(
                out.status.success(),
                "helm {args:?} failed:\n{}{}",
                stdout(&out),
                stderr(&out)
            );
            let report = stdout(&out);
            assert!(
                !report.contains("[WARNING]") && !report.contains("[ERROR]"),
                "helm {args:?} is not clean:\n{report}"
            );
        }
    }
}

#[test]
fn chart_refuses_invalid_values() {
    for (values, why) in [
        (vec!["store.type=mysql"], "must be one of"),
        (vec!["watchNamespaces={Team_A}"], "does not match pattern"),
        (vec!["watchNamespaces={a,a}"], "items at"),
        (vec!["store.type=postgres"], "dsnSecretRef/name"),
        (vec!["logFormat=xml"], "must be one of"),
        (vec!["maxConcurrentRuns=0"], "minimum"),
        (vec!["metrics.port=70000"], "maximum"),
        (vec!["imag.tag=1"], "additional properties"),
        (
            vec!["replicas=2", "leaderElection.enabled=false"],
            "needs leaderElection.enabled",
        ),
        (vec!["secretNamespaces={Team_A}"], "does not match pattern"),
        (vec!["image.digest=latest"], "image/digest"),
        (vec!["networkPolicy.enabled=yes"], "networkPolicy/enabled"),
        (
            vec!["watchNamespaces={a}", "secretNamespaces={a,b}"],
            "secretNamespaces: b is not one of watchNamespaces",
        ),
    ] {
        let mut args = vec!["template", "usersync", CHART];
        for v in &values {
            args.extend(["--set", v]);
        }
        let out = helm(&args);
        assert!(!out.status.success(), "helm accepted {values:?}");
        assert!(
            stderr(&out).contains(why),
            "helm refused {values:?} without saying `{why}`:\n{}",
            stderr(&out)
        );
    }
}

#[test]
fn default_install_watches_all_namespaces_with_two_replicas_and_a_lease() {
    let docs = helm_template("usersync", "ops", &[]);
    let deployment = only(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("ghcr.io/usersync/usersync:{}", env!("CARGO_PKG_VERSION")),
        "the image tag defaults to the appVersion"
    );
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    assert!(
        !args.iter().any(|a| a.starts_with("--namespace")),
        "{args:?}"
    );
    for expected in [
        "--store=kubernetes",
        "--max-concurrent-runs=4",
        "--log-format=json",
        "--log=info",
        "--metrics-addr=0.0.0.0:8080",
        "--secret-reader-role=usersync-secret-reader",
        "--leader-elect",
        "--lease-name=usersync",
        "--lease-namespace=$(POD_NAMESPACE)",
    ] {
        assert!(
            args.iter().any(|a| a == expected),
            "{expected} not in {args:?}"
        );
    }
    assert_eq!(
        kinds(&docs, "ClusterRole"),
        ["usersync", "usersync-approver", "usersync-secret-reader"]
    );
    // The custom resources everywhere, and Secrets nowhere until a namespace grants them.
    assert_eq!(kinds(&docs, "ClusterRoleBinding"), ["usersync"]);
    assert!(
        kinds(&docs, "RoleBinding")
            .iter()
            .all(|b| b == "usersync-leader-election")
    );
    assert_eq!(
        kinds(&docs, "ValidatingAdmissionPolicy"),
        ["usersync-ops-runapproval-approver"]
    );
    assert_eq!(kinds(&docs, "Role"), ["usersync-leader-election"]);
    assert!(kinds(&docs, "ServiceMonitor").is_empty(), "off by default");
}

#[test]
fn several_namespaces_get_a_role_each_and_one_flag_each() {
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "watchNamespaces={a,b}",
            "--set",
            "secretNamespaces={b}",
        ],
    );
    let args =
        strings(&only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]);
    let namespaces: Vec<_> = args
        .iter()
        .filter(|a| a.starts_with("--namespace"))
        .collect();
    assert_eq!(namespaces, ["--namespace=a", "--namespace=b"]);
    // The one ClusterRole is bound only in the namespace that grants its Secrets.
    assert_eq!(kinds(&docs, "ClusterRole"), ["usersync-secret-reader"]);
    assert!(kinds(&docs, "ClusterRoleBinding").is_empty());
    let roles: BTreeSet<_> = docs
        .iter()
        .filter(|d| d["kind"] == "Role" || d["kind"] == "RoleBinding")
        .map(|d| {
            format!(
                "{}/{}/{}",
                d["kind"].as_str().unwrap(),
                d["metadata"]["namespace"].as_str().unwrap(),
                d["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    let expected: BTreeSet<_> = [
        "Role/a/usersync",
        "Role/a/usersync-approver",
        "RoleBinding/a/usersync",
        "Role/b/usersync",
        "Role/b/usersync-approver",
        "RoleBinding/b/usersync",
        "RoleBinding/b/usersync-secret-reader",
        "Role/ops/usersync-leader-election",
        "RoleBinding/ops/usersync-leader-election",
    ]
    .map(String::from)
    .into();
    assert_eq!(roles, expected);
}

#[test]
fn postgres_store_reads_its_dsn_from_a_secret_and_needs_no_user_rights() {
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "store.type=postgres",
            "--set",
            "store.postgres.dsnSecretRef.name=usersync-db",
        ],
    );
    let container = &only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args = strings(&container["args"]);
    assert!(args.iter().any(|a| a == "--store=postgres"), "{args:?}");
    assert!(
        !args.iter().any(|a| a.contains("postgres://")),
        "the DSN is never an argument"
    );
    let dsn = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "USERSYNC_POSTGRES_DSN")
        .expect("USERSYNC_POSTGRES_DSN is set");
    assert_eq!(dsn["valueFrom"]["secretKeyRef"]["name"], "usersync-db");
    assert_eq!(dsn["valueFrom"]["secretKeyRef"]["key"], "dsn");
    // The operator's own ClusterRole (the approvers' example role and the secret
    // reader are the others).
    let operator: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "usersync")
        .collect();
    assert_eq!(operator.len(), 1, "one operator ClusterRole");
    let rules = &operator[0]["rules"];
    assert!(
        !rules.to_string().contains("directoryusers"),
        "the postgres store needs no DirectoryUser rights: {rules}"
    );
}

/// Values for the PostgreSQL store with a private CA.
const POSTGRES_WITH_CA: &[&str] = &[
    "--set",
    "store.type=postgres",
    "--set",
    "store.postgres.dsnSecretRef.name=usersync-db",
    "--set",
    "store.postgres.caSecretRef.name=db-ca",
];

/// What the chart hands the container is what the binary takes: for each kind
/// of install, the rendered arguments (with `$(VAR)` references resolved as the
/// kubelet would) are accepted by `usersync`, which is asked only for its help so
/// that nothing runs.
#[test]
fn the_charts_arguments_are_ones_the_binary_accepts() {
    let installs: [&[&str]; 4] = [
        &[],
        &[
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "logFormat=text",
        ],
        POSTGRES_WITH_CA,
        &[
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicas=1",
        ],
    ];
    for values in installs {
        let docs = helm_template("usersync", "ops", values);
        let container = &only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
        let mut args = match &container["command"] {
            Value::Null => Vec::new(),
            command => strings(command),
        };
        args.extend(strings(&container["args"]));
        // The image's entrypoint is the binary; a command, if set, names it.
        if args.first().is_some_and(|a| a.ends_with("usersync")) {
            args.remove(0);
        }
        let resolved: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("$(POD_NAMESPACE)", "ops")
                    .replace("$(POD_NAME)", "usersync-0")
            })
            .collect();
        assert!(
            !resolved.iter().any(|a| a.contains("$(")),
            "an unresolved reference in {resolved:?}"
        );
        assert_eq!(
            resolved.first().map(String::as_str),
            Some("run"),
            "{resolved:?}"
        );
        assert!(resolved.len() > 3, "{resolved:?}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_usersync"))
            .args(&resolved)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm template {values:?}: usersync refuses {resolved:?}:\n{}",
            stderr(&out)
        );
    }
}

#[test]
fn postgres_ca_is_mounted_read_only_and_named_to_the_operator() {
    let docs = helm_template("usersync", "ops", POSTGRES_WITH_CA);
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let ca = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "USERSYNC_POSTGRES_CA_FILE")
        .expect("USERSYNC_POSTGRES_CA_FILE is set");
    assert_eq!(ca["value"], "/etc/usersync/postgres-ca/ca.crt");
    assert_eq!(
        container["volumeMounts"][0]["mountPath"],
        "/etc/usersync/postgres-ca"
    );
    assert_eq!(container["volumeMounts"][0]["readOnly"], true);
    assert_eq!(pod["volumes"][0]["secret"]["secretName"], "db-ca");

    // Without a CA Secret, nothing is mounted.
    let plain = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "store.type=postgres",
            "--set",
            "store.postgres.dsnSecretRef.name=usersync-db",
        ],
    );
    let pod = &only(&plain, "Deployment")["spec"]["template"]["spec"];
    assert!(pod["volumes"].is_null(), "{}", pod["volumes"]);
}

#[test]
fn the_dashboard_is_an_opt_in_config_map_the_grafana_sidecar_finds() {
    let docs = helm_template("usersync", "ops", &[]);
    assert!(kinds(&docs, "ConfigMap").is_empty(), "off by default");
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "dashboard.enabled=true",
            "--set",
            "dashboard.namespace=monitoring",
            "--set",
            "dashboard.annotations.grafana_folder=Identity",
        ],
    );
    let map = only(&docs, "ConfigMap");
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Identity");
    // The file itself, whole, and a dashboard Grafana can load.
    let shipped = read(&format!("{CHART}/dashboards/usersync.json"));
    let data = map["data"]["usersync.json"].as_str().unwrap();
    assert_eq!(data.trim_end(), shipped.trim_end());
    let dashboard: Value = serde_json::from_str(data).unwrap();
    assert_eq!(dashboard["uid"], "usersync-overview");
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for wanted in [
        "Runs by result",
        "Users by state per mapping",
        "Last success against the interval",
        "Deletions blocked",
        "Connector health",
        "Read and write durations (p95)",
    ] {
        assert!(
            titles.contains(&wanted),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    // Another sidecar label.
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "dashboard.enabled=true",
            "--set",
            "dashboard.label=grafana-dashboards",
            "--set-string",
            "dashboard.labelValue=usersync",
        ],
    );
    assert_eq!(
        only(&docs, "ConfigMap")["metadata"]["labels"]["grafana-dashboards"],
        "usersync"
    );
}

#[test]
fn service_monitor_is_optional() {
    let docs = helm_template(
        "usersync",
        "ops",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    let monitor = only(&docs, "ServiceMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    let service = only(&docs, "Service");
    let selected = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (k, v) in selected {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the ServiceMonitor does not select the metrics Service"
        );
    }
    assert_eq!(service["spec"]["ports"][0]["name"], "metrics");
}

#[test]
fn operator_pods_are_hardened() {
    let chart = helm_template("usersync", "ops", &[]);
    let base = kustomize_build();
    for (source, docs) in [("the chart", &chart), ("deploy/", &base)] {
        let pod = &only(docs, "Deployment")["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let why = |what: &str| format!("{source}: {what}");
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"],
            true,
            "{}",
            why("runAsNonRoot")
        );
        assert_ne!(
            pod["securityContext"]["runAsUser"],
            0,
            "{}",
            why("runAsUser")
        );
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault",
            "{}",
            why("pod seccompProfile")
        );
        let sc = &c["securityContext"];
        assert_eq!(
            sc["readOnlyRootFilesystem"],
            true,
            "{}",
            why("readOnlyRootFilesystem")
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"],
            false,
            "{}",
            why("allowPrivilegeEscalation")
        );
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{}",
            why("capabilities")
        );
        assert_eq!(
            sc["seccompProfile"]["type"],
            "RuntimeDefault",
            "{}",
            why("seccompProfile")
        );
        for kind in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    c["resources"][kind][resource].is_string(),
                    "{}",
                    why(&format!("resources.{kind}.{resource}"))
                );
            }
        }
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"],
            "/healthz",
            "{}",
            why("liveness")
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"],
            "/readyz",
            "{}",
            why("readiness")
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
        assert_eq!(c["ports"][0]["name"], "metrics");
        let env = c["env"].as_array().unwrap();
        for (name, field) in [
            ("POD_NAME", "metadata.name"),
            ("POD_NAMESPACE", "metadata.namespace"),
        ] {
            let var = env
                .iter()
                .find(|e| e["name"] == name)
                .unwrap_or_else(|| panic!("{}", why(&format!("no {name}"))));
            assert_eq!(var["valueFrom"]["fieldRef"]["fieldPath"], field);
        }
    }
}

#[test]
fn every_rbac_rule_says_why() {
    // The sources a reviewer reads...
    let mut sources = vec![format!("{CHART}/templates/_rbac.tpl")];
    sources.extend(
        [
            "all-namespaces/rbac.yaml",
            "single-namespace/role.yaml",
            "base/secret-reader.yaml",
            "base/approver-rbac.yaml",
            "base/leader-election.yaml",
        ]
        .map(|f| format!("deploy/{f}")),
    );
    for path in &sources {
        assert_rules_commented(path, &read(path));
    }
    // ...and what helm renders from them, in both modes.
    for values in [&[][..], &["--set", "watchNamespaces={a,b}"]] {
        let rendered = helm_template_text("usersync", "ops", values);
        assert_rules_commented(&format!("helm template {values:?}"), &rendered);
        assert!(rendered.contains("- apiGroups:"), "no rules rendered");
    }
}

// ---------------------------------------------------------------------------
// Against the API server.

#[test]
fn rendered_chart_applies_server_side_for_all_namespaces() {
    let ns = Namespaces::create("install-all", 1);
    let release = unique("all");
    let digest = format!("image.digest=sha256:{}", "0123456789abcdef".repeat(4));
    let rendered = helm_template_text(
        &release,
        &ns[0],
        &[
            "--include-crds",
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            &digest,
        ],
    );
    let out = kubectl_stdin(["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert_applied(&out, "the all-namespaces chart");
    for object in [
        format!("clusterrole.rbac.authorization.k8s.io/{release}-usersync"),
        format!("networkpolicy.networking.k8s.io/{release}-usersync"),
        format!("poddisruptionbudget.policy/{release}-usersync"),
    ] {
        assert!(stdout(&out).contains(&object), "{object}: {}", stdout(&out));
    }
}

#[test]
fn the_chart_offers_a_metrics_only_network_policy_a_disruption_budget_and_a_pinned_image() {
    // Off by default: a NetworkPolicy that nobody configured would cut the scrape.
    let docs = helm_template("usersync", "ops", &[]);
    assert!(kinds(&docs, "NetworkPolicy").is_empty());
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            "networkPolicy.enabled=true",
            "--set",
            "networkPolicy.metricsFrom.namespaceSelector.matchLabels.team=monitoring",
            "--set",
            "networkPolicy.metricsFrom.podSelector.matchLabels.app=prometheus",
        ],
    );
    let policy = &only(&docs, "NetworkPolicy")["spec"];
    assert_eq!(
        policy["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        "usersync"
    );
    // Ingress only (the operator's own connections are not restricted), one rule:
    // the metrics port, from the configured scraper.
    assert_eq!(policy["policyTypes"], serde_json::json!(["Ingress"]));
    let rules = policy["ingress"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(
        rules[0]["ports"],
        serde_json::json!([{"port": "metrics", "protocol": "TCP"}])
    );
    assert_eq!(
        rules[0]["from"],
        serde_json::json!([{
            "namespaceSelector": {"matchLabels": {"team": "monitoring"}},
            "podSelector": {"matchLabels": {"app": "prometheus"}},
        }])
    );
    let pod = &only(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["ports"][0]["name"], "metrics");

    // A disruption budget with a standby to keep, and none for a single pod.
    let docs = helm_template("usersync", "ops", &[]);
    let pdb = &only(&docs, "PodDisruptionBudget")["spec"];
    assert_eq!(pdb["minAvailable"], 1);
    assert_eq!(
        pdb["selector"]["matchLabels"],
        only(&docs, "Deployment")["spec"]["selector"]["matchLabels"]
    );
    let single = helm_template("usersync", "ops", &["--set", "replicas=1"]);
    assert!(kinds(&single, "PodDisruptionBudget").is_empty());

    // A digest pins the image, and the tag is not used.
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    let docs = helm_template(
        "usersync",
        "ops",
        &[
            "--set",
            &format!("image.digest={digest}"),
            "--set",
            "image.tag=latest",
        ],
    );
    assert_eq!(
        only(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/usersync/usersync@{digest}")
    );
}

#[test]
fn rendered_chart_applies_server_side_for_two_namespaces() {
    let ns = Namespaces::create("install-two", 3);
    let release = unique("two");
    let watch = format!("watchNamespaces={{{},{}}}", ns[1], ns[2]);
    let rendered = helm_template_text(&release, &ns[0], &["--include-crds", "--set", &watch]);
    let out = kubectl_stdin(["apply", "--dry-run=server", "-f", "-"], &rendered);
    assert_applied(&out, "the two-namespace chart");
    // One Role for each watched namespace, besides the leader-election Role.
    let role =
        format!("role.rbac.authorization.k8s.io/{release}-usersync created (server dry run)");
    let roles = stdout(&out).lines().filter(|l| *l == role).count();
    assert_eq!(roles, 2, "{}", stdout(&out));
    // The one ClusterRole is the secret reader, bound nowhere cluster-wide.
    let cluster_wide: Vec<_> = stdout(&out)
        .lines()
        .filter(|l| l.starts_with("clusterrole"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        cluster_wide,
        [format!(
            "clusterrole.rbac.authorization.k8s.io/{release}-usersync-secret-reader created (server dry run)"
        )],
        "{}",
        stdout(&out)
    );
}

#[test]
fn helm_install_for_one_namespace_grants_least_privilege() {
    // ns[0]: the release, ns[1]: watched, ns[2]: someone else's.
    let ns = Namespaces::create("install-one", 3);
    let (home, watched, other) = (&ns[0], &ns[1], &ns[2]);
    let release = unique("one");
    let _release = Release::install(
        &release,
        home,
        &[
            "--set",
            &format!("watchNamespaces={{{watched}}}"),
            "--set",
            &format!("secretNamespaces={{{watched}}}"),
        ],
    );
    let sa = format!("system:serviceaccount:{home}:{release}-usersync");
    let lease = format!("leases/{release}-usersync");
    let can = |args: &[&str]| can_i(&sa, args);

    // What it needs, in the watched namespace: it watches the users, a run writes
    // them by server-side apply and reads one by name after a conflicting write;
    // it never deletes one.
    for verb in ["get", "list", "watch", "create", "patch"] {
        assert!(
            can(&[verb, "directoryusers.usersync.dev", "-n", watched]),
            "{verb} users"
        );
    }
    for verb in ["delete", "deletecollection", "update"] {
        assert!(
            !can(&[verb, "directoryusers.usersync.dev", "-n", watched]),
            "{verb} users is more than the operator needs"
        );
    }
    assert!(can(&[
        "patch",
        "directoryusers.usersync.dev",
        "--subresource=status",
        "-n",
        watched
    ]));
    for kind in ["directorymappings", "connectorhealths", "syncpolicies"] {
        let kind = format!("{kind}.usersync.dev");
        assert!(can(&["watch", &kind, "-n", watched]), "watch {kind}");
        assert!(
            can(&["patch", &kind, "--subresource=status", "-n", watched]),
            "{kind} status"
        );
    }
    // Secrets only where a namespace granted them: here, by the chart's secretNamespaces.
    assert!(can(&["get", "secrets", "-n", watched]));
    assert!(can(&["watch", "secrets", "-n", watched]));
    assert!(can(&["create", "events", "-n", watched]));
    // Its Lease, and only its Lease, at home.
    assert!(can(&["create", "leases.coordination.k8s.io", "-n", home]));
    assert!(can(&["get", &lease, "-n", home]));
    assert!(can(&["update", &lease, "-n", home]));
    assert!(!can(&["update", "leases/someone-elses", "-n", home]));
    assert!(!can(&["delete", &lease, "-n", home]));

    // Nothing more.
    assert!(!can(&[
        "delete",
        "directoryusers.usersync.dev",
        "-n",
        watched
    ]));
    assert!(!can(&[
        "update",
        "directorymappings.usersync.dev",
        "-n",
        watched
    ]));
    assert!(!can(&["create", "secrets", "-n", watched]));
    assert!(
        !can(&["get", "secrets", "-n", other]),
        "secrets of an unwatched namespace"
    );
    assert!(
        !can(&["get", "secrets", "-n", home]),
        "the release namespace is not watched"
    );
    assert!(
        !can(&["list", "secrets", "--all-namespaces"]),
        "secrets cluster-wide"
    );
    assert!(!can(&[
        "list",
        "directoryusers.usersync.dev",
        "--all-namespaces"
    ]));
    assert!(!can(&["patch", "directoryusers.usersync.dev", "-n", other]));
    assert!(!can(&[
        "create",
        "leases.coordination.k8s.io",
        "-n",
        watched
    ]));
    assert!(!can(&[
        "get",
        "customresourcedefinitions.apiextensions.k8s.io"
    ]));
    assert!(!can(&["list", "namespaces"]));

    // The chart's objects are all there, in the right places.
    let role = kubectl(["get", "role", &format!("{release}-usersync"), "-n", watched]);
    assert!(role.status.success(), "{}", stderr(&role));
    let deployment = kubectl([
        "get",
        "deployment",
        &format!("{release}-usersync"),
        "-n",
        home,
    ]);
    assert!(deployment.status.success(), "{}", stderr(&deployment));
    let cluster_role = kubectl(["get", "clusterrole", &format!("{release}-usersync")]);
    assert!(
        !cluster_role.status.success(),
        "no ClusterRole in namespace mode"
    );
}

#[test]
fn helm_install_for_all_namespaces_uses_a_cluster_role() {
    let ns = Namespaces::create("install-cluster", 1);
    let release = unique("cluster");
    let installed = Release::install(&release, &ns[0], &[]);
    let sa = format!("system:serviceaccount:{}:{release}-usersync", ns[0]);
    let can = |args: &[&str]| can_i(&sa, args);
    assert!(can(&[
        "list",
        "directorymappings.usersync.dev",
        "--all-namespaces"
    ]));
    assert!(can(&[
        "patch",
        "directoryusers.usersync.dev",
        "-n",
        "default"
    ]));
    // Watching every namespace does not mean reading every Secret: none at first,
    let grant = ns[0].clone();
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(!can(&["get", "secrets", "-n", "kube-system"]));
    assert!(!can(&["get", "secrets", "-n", &grant]));
    // then those of a namespace that runs the README's one-line grant, and no others.
    let out = kubectl([
        "create",
        "rolebinding",
        "usersync-secrets",
        "-n",
        &grant,
        &format!("--clusterrole={release}-usersync-secret-reader"),
        &format!("--serviceaccount={grant}:{release}-usersync"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(can(&["get", "secrets", "-n", &grant]));
    assert!(can(&["watch", "secrets", "-n", &grant]));
    assert!(!can(&["get", "secrets", "-n", "kube-system"]));
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(!can(&[
        "delete",
        "directoryusers.usersync.dev",
        "--all-namespaces"
    ]));
    assert!(!can(&["create", "secrets", "--all-namespaces"]));
    assert!(!can(&[
        "create",
        "leases.coordination.k8s.io",
        "-n",
        "default"
    ]));

    // Uninstalling removes the cluster-wide objects; the CRDs stay (Helm never
    // deletes CRDs, and other installs may use them).
    drop(installed);
    let gone = kubectl(["get", "clusterrole", &format!("{release}-usersync")]);
    assert!(
        !gone.status.success(),
        "the ClusterRole outlived the release"
    );
    let crd = kubectl(["get", "crd", "directoryusers.usersync.dev"]);
    assert!(crd.status.success(), "{}", stderr(&crd));
}

/// `examples/` is what a GitOps tool is pointed at: it must build, and the API
/// server (with the CRDs' schemas and CEL rules) must accept every object in it.
#[test]
fn the_examples_are_a_kustomization_the_api_server_accepts() {
    let ns = Namespaces::create("examples", 1);
    let out = kubectl(["apply", "-k", "examples/", "-n", &ns[0], "--dry-run=server"]);
    assert_applied(&out, "kubectl apply -k examples/ --dry-run=server");
    let applied = stdout(&out);
    for object in [
        "connectorhealth.usersync.dev/openldap",
        "syncpolicy.usersync.dev/default",
        "directorymapping.usersync.dev/staff",
        "directorymapping.usersync.dev/contractors",
    ] {
        assert!(
            applied.contains(object),
            "{object} missing from:\n{applied}"
        );
    }
}

#[test]
fn kustomize_base_installs_for_real() {
    // The CRDs are shared with every other test: never apply a stale copy.
    assert_same_file(REPO_CRDS, "deploy/base/crds/usersync.dev.yaml");
    let objects = kustomize_build();
    let _cleanup = KustomizeCleanup::new(&objects);

    // A previous run's namespace may still be terminating.
    let out = kubectl([
        "wait",
        "--for=delete",
        &format!("namespace/{DEPLOY_NAMESPACE}"),
        "--timeout=120s",
    ]);
    assert!(
        out.status.success() || stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
    // A server-side dry run needs the namespace its objects go to.
    let out = kubectl(["apply", "-f", "deploy/base/namespace.yaml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kubectl(["apply", "-k", "deploy/", "--dry-run=server"]);
    assert_applied(&out, "kubectl apply -k deploy/ --dry-run=server");
    let out = kubectl(["apply", "-k", "deploy/"]);
    assert_applied(&out, "kubectl apply -k deploy/");

    let deployment = kubectl([
        "get",
        "deployment",
        "usersync",
        "-n",
        DEPLOY_NAMESPACE,
        "-o",
        "json",
    ]);
    assert!(deployment.status.success(), "{}", stderr(&deployment));
    let deployment: Value = serde_json::from_slice(&deployment.stdout).unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/usersync/usersync:{}", env!("CARGO_PKG_VERSION"))
    );

    let sa = format!("system:serviceaccount:{DEPLOY_NAMESPACE}:usersync");
    let can = |args: &[&str]| can_i(&sa, args);
    assert!(can(&[
        "list",
        "directorymappings.usersync.dev",
        "--all-namespaces"
    ]));
    assert!(can(&[
        "create",
        "directoryusers.usersync.dev",
        "-n",
        "default"
    ]));
    assert!(can(&["update", "leases/usersync", "-n", DEPLOY_NAMESPACE]));
    assert!(!can(&["update", "leases/usersync", "-n", "default"]));
    assert!(!can(&["delete", "secrets", "--all-namespaces"]));
    assert!(!can(&[
        "delete",
        "directoryusers.usersync.dev",
        "--all-namespaces"
    ]));
    // No Secret anywhere until a namespace binds usersync-secret-reader.
    assert!(!can(&["get", "secrets", "-n", "default"]));
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
    assert!(!can(&["get", "secrets", "-n", DEPLOY_NAMESPACE]));
    let reader = kubectl(["get", "clusterrole", "usersync-secret-reader"]);
    assert!(reader.status.success(), "{}", stderr(&reader));

    // The other mode, over the first: its own namespace only, Secrets there.
    let out = kubectl(["delete", "clusterrolebinding", "usersync"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = kubectl(["apply", "-k", "deploy/single-namespace/"]);
    assert_applied(&out, "kubectl apply -k deploy/single-namespace/");
    assert!(can(&[
        "list",
        "directorymappings.usersync.dev",
        "-n",
        DEPLOY_NAMESPACE
    ]));
    assert!(!can(&[
        "list",
        "directorymappings.usersync.dev",
        "--all-namespaces"
    ]));
    assert!(!can(&[
        "create",
        "directoryusers.usersync.dev",
        "-n",
        "default"
    ]));
    assert!(can(&["get", "secrets", "-n", DEPLOY_NAMESPACE]));
    assert!(!can(&["get", "secrets", "-n", "default"]));
    assert!(!can(&["list", "secrets", "--all-namespaces"]));
}

// ---------------------------------------------------------------------------
// Helpers.

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn assert_same_file(original: &str, copy: &str) {
    assert!(
        std::fs::read(repo().join(original)).unwrap() == std::fs::read(repo().join(copy)).unwrap(),
        "{copy} differs from {original}: run `cp {original} {copy}`"
    );
}

/// Every rule item (`- apiGroups:`) must follow a `#` comment line.
fn assert_rules_commented(what: &str, text: &str) {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = 0;
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            rules += 1;
            let previous = lines[..i]
                .iter()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim_start())
                .unwrap_or_default();
            assert!(
                previous.starts_with('#'),
                "{what}: the rule on line {} has no comment saying why",
                i + 1
            );
        }
    }
    assert!(rules > 0, "{what}: no rules found");
}

/// All YAML documents of a stream, empty ones dropped.
fn yaml_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn only<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|d| d["kind"] == kind);
    let first = found.next().unwrap_or_else(|| panic!("no {kind}"));
    assert!(found.next().is_none(), "more than one {kind}");
    first
}

/// The names of the objects of `kind`, sorted.
fn kinds(docs: &[Value], kind: &str) -> Vec<String> {
    let mut names: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| d["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// A name no other test run uses.
fn unique(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{prefix}-{:08x}", h.finish() as u32)
}

/// Helm's own state (cache, config, data) in a private directory, so that a
/// developer's repositories and plugins play no part.
fn helm_home() -> &'static PathBuf {
    static HOME: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &HOME
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let path = dir.path().to_path_buf();
            (dir, path)
        })
        .1
}

fn helm<S: AsRef<OsStr>>(args: &[S]) -> Output {
    let home = helm_home();
    Command::new(cluster().bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo())
        .output()
        .expect("helm runs")
}

fn helm_template_text(release: &str, namespace: &str, values: &[&str]) -> String {
    let mut args = vec!["template", release, CHART, "--namespace", namespace];
    args.extend_from_slice(values);
    let out = helm(&args);
    assert!(out.status.success(), "helm {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn helm_template(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    yaml_docs(&helm_template_text(release, namespace, values))
}

fn kubectl<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    cluster().kubectl(args)
}

fn kubectl_stdin<I, S>(args: I, input: &str) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut child = Command::new(cluster().bin.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn kustomize_build() -> Vec<Value> {
    kustomize_build_of("deploy/")
}

/// What `kubectl kustomize dir` builds.
fn kustomize_build_of(dir: &str) -> Vec<Value> {
    let out = kubectl(["kustomize", dir]);
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        stderr(&out)
    );
    yaml_docs(&stdout(&out))
}

/// The rules of each object of `kind`, by name.
fn rules_by_name(docs: &[Value], kind: &str) -> std::collections::BTreeMap<String, Value> {
    docs.iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| {
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            (name.to_string(), d["rules"].clone())
        })
        .collect()
}

/// The apply succeeded, and the restricted Pod Security Standard had nothing to say.
fn assert_applied(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        stdout(out),
        stderr(out)
    );
    assert!(
        !stderr(out).contains("PodSecurity"),
        "{what}: the operator's pod breaks the restricted Pod Security Standard:\n{}",
        stderr(out)
    );
}

/// `kubectl auth can-i ... --as=<user>`: yes or no.
fn can_i(user: &str, args: &[&str]) -> bool {
    let out = kubectl(
        ["auth", "can-i"]
            .iter()
            .chain(args)
            .copied()
            .chain([format!("--as={user}").as_str()]),
    );
    match stdout(&out).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl auth can-i {args:?} said {other:?}: {}",
            stderr(&out)
        ),
    }
}

/// Namespaces of one test, deleted (without waiting) when it ends. They enforce the
/// restricted Pod Security Standard, which the operator's pod must meet.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn create(prefix: &str, count: usize) -> Self {
        let names: Vec<String> = (0..count).map(|_| unique(prefix)).collect();
        let this = Self(names);
        for name in &this.0 {
            let out = kubectl(["create", "namespace", name]);
            assert!(out.status.success(), "{}", stderr(&out));
            let out = kubectl([
                "label",
                "namespace",
                name,
                "pod-security.kubernetes.io/enforce=restricted",
            ]);
            assert!(out.status.success(), "{}", stderr(&out));
        }
        this
    }
}

impl std::ops::Index<usize> for Namespaces {
    type Output = String;
    fn index(&self, i: usize) -> &String {
        &self.0[i]
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let mut args = vec!["delete", "namespace", "--wait=false", "--ignore-not-found"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = kubectl(args);
    }
}

/// A Helm release, uninstalled when dropped (that removes its cluster-scoped
/// objects, which deleting the namespace would not).
struct Release {
    name: String,
    namespace: String,
}

impl Release {
    fn install(name: &str, namespace: &str, values: &[&str]) -> Self {
        // No --wait: nothing runs pods here, so the Deployment never becomes available.
        let mut args = vec!["install", name, CHART, "--namespace", namespace];
        args.extend_from_slice(values);
        let out = helm(&args);
        let release = Self {
            name: name.to_string(),
            namespace: namespace.to_string(),
        };
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(
            !stderr(&out).contains("PodSecurity"),
            "the operator's pod breaks the restricted Pod Security Standard:\n{}",
            stderr(&out)
        );
        release
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let out = helm(&["uninstall", &self.name, "--namespace", &self.namespace]);
        if !out.status.success() && !std::thread::panicking() {
            panic!("helm uninstall {}: {}", self.name, stderr(&out));
        }
    }
}

/// Deletes what `kubectl apply -k deploy/` created, except the CRDs: every other
/// test uses them. Namespaced objects go with their namespace.
struct KustomizeCleanup(Vec<String>);

impl KustomizeCleanup {
    fn new(objects: &[Value]) -> Self {
        let targets = objects
            .iter()
            .filter(|o| o["kind"] != "CustomResourceDefinition")
            .filter(|o| o["metadata"]["namespace"].is_null())
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap().to_lowercase(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>();
        assert!(
            targets.contains(&format!("namespace/{DEPLOY_NAMESPACE}")),
            "deploy/ no longer creates {DEPLOY_NAMESPACE}: {targets:?}"
        );
        Self(targets)
    }
}

impl Drop for KustomizeCleanup {
    fn drop(&mut self) {
        let mut args = vec!["delete", "--wait=false", "--ignore-not-found"];
        args.extend(self.0.iter().map(String::as_str));
        let _ = kubectl(args);
    }
}
