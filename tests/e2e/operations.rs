//! Running it for real: the operator as separate processes, with leader election,
//! its metrics endpoint, and the Helm chart's ServiceAccount and RBAC.

use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use usersync::api::{ConnectorHealth, DirectoryMapping, find_condition};

use crate::ldap_support::{Server, free_port};
use crate::support::{cluster, eventually, stderr, stdout};
use crate::world::{RUN_WAIT, World};

/// One operator process; killed when dropped.
struct Operator {
    /// Its identity in the Lease (`POD_NAME`).
    name: String,
    child: Child,
    log: std::path::PathBuf,
    metrics: u16,
}

impl Operator {
    fn start(
        name: &str,
        namespace: &str,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
    ) -> Operator {
        Self::start_with(name, namespace, kubeconfig, dir, &[], &[])
    }

    /// Start with extra arguments and environment variables.
    fn start_with(
        name: &str,
        namespace: &str,
        kubeconfig: &std::path::Path,
        dir: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Operator {
        let metrics = free_port();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_usersync"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--leader-elect",
                "--lease-name",
                "usersync",
            ])
            .args([
                "--lease-namespace",
                namespace,
                "--metrics-addr",
                &format!("127.0.0.1:{metrics}"),
            ])
            .args(["--log-format", "json", "--log", "info"])
            .args(args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .stdout(Stdio::null())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("usersync starts");
        Operator {
            name: name.to_owned(),
            child,
            log,
            metrics,
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The run ids this process finished, from its JSON log.
    fn runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == "run finished")
            .filter_map(|v| v["run"].as_str().map(str::to_string))
            .collect()
    }
}

/// A plain HTTP GET on 127.0.0.1: the status code and the body.
async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of one sample in Prometheus text, by metric name and label fragments.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|f| l.contains(f)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt("usersync")
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Two operator processes with leader election: the leader and the standby.
async fn two_replicas(w: &World<'_>, dir: &std::path::Path) -> (Operator, Operator) {
    let kubeconfig = cluster().kubeconfig.clone();
    let a = Operator::start("replica-a", &w.ns.name, &kubeconfig, dir);
    let b = Operator::start("replica-b", &w.ns.name, &kubeconfig, dir);
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns.name);
    let first = eventually(RUN_WAIT, "a lease holder", || holder(&leases)).await;
    if first == a.name { (a, b) } else { (b, a) }
}

/// Wait until `standby` holds the Lease.
async fn takes_over(leases: &Api<Lease>, standby: &Operator, what: &str) {
    eventually(Duration::from_secs(40), what, || async {
        (holder(leases).await.as_deref() == Some(standby.name.as_str())).then_some(())
    })
    .await;
}

/// After a failover: a new directory user `uid` is imported by the new leader.
async fn the_new_leader_syncs(w: &World<'_>, leader: &Operator, uid: &str) {
    w.add_user(uid, false);
    let run = w.sync("staff").await;
    assert_eq!(run.imported, 1, "{run:?}");
    assert_eq!(leader.runs(), vec![run.id], "the new leader did the run");
}

#[tokio::test]
async fn graph_throttling_shows_in_the_metrics_by_connector() {
    use crate::entra::{cloud_mapping, entra_connector};
    use crate::graph_emulator::{Fault, GraphEmulator};
    let em = GraphEmulator::start().await;
    for i in 0..3 {
        em.create_user(&format!("th{i}@contoso.example"), &format!("Th{i}"));
    }
    let scene = crate::world::Scene::new("ops-throttle", json!({})).await;
    entra_connector(&scene, &em).await;
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start(
        "throttled",
        &scene.ns.name,
        &cluster().kubeconfig,
        dir.path(),
    );
    scene.connected(true).await;

    // The next two Graph requests (the run's, or a probe's) are throttled, as
    // Microsoft documents it.
    let throttled = Fault::Throttled {
        status: 429,
        retry_after: Some("2.128".into()),
    };
    em.inject(throttled, 2);
    let run = scene.mapping_with("cloud", cloud_mapping(json!({}))).await;
    assert_eq!(run.imported, 3, "{run:?}");

    let ns = format!("namespace=\"{}\"", scene.ns.name);
    let labels = [ns.as_str(), "connector=\"corp\""];
    let metrics = eventually(RUN_WAIT, "throttling in the metrics", || async {
        let (_, text) = http_get(op.metrics, "/metrics").await?;
        sample(&text, "usersync_graph_throttled_requests_total", &labels)
            .is_some_and(|n| n >= 2.0)
            .then_some(text)
    })
    .await;
    assert_eq!(
        sample(&metrics, "usersync_graph_throttled_requests_total", &labels),
        Some(2.0),
        "{metrics}"
    );
    let waited = sample(
        &metrics,
        "usersync_graph_throttled_wait_seconds_total",
        &labels,
    )
    .unwrap_or_default();
    assert!(
        (4.2..30.0).contains(&waited),
        "waited {waited}s for two Retry-After: 2.128: {metrics}"
    );
}

#[tokio::test]
async fn two_replicas_one_leader_failover_and_metrics_that_match_the_run() {
    let w = World::without_operator("ha", Server::slapd(), json!({})).await;
    for uid in ["ha1", "ha2", "ha3"] {
        w.add_user(uid, false);
    }
    w.add_user("ha4", true);
    let dir = tempfile::tempdir().unwrap();
    let (leader, standby) = two_replicas(&w, dir.path()).await;
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns.name);

    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.imported, 3, "{run:?}");
    assert_eq!(
        leader.runs(),
        vec![run.id.clone()],
        "the leader did the run"
    );
    assert!(
        standby.runs().is_empty(),
        "the standby synced while not holding the lease"
    );

    // Both replicas answer health checks; the leader's metrics match the run.
    for op in [&leader, &standby] {
        assert_eq!(
            http_get(op.metrics, "/healthz").await.map(|r| r.0),
            Some(200)
        );
        assert_eq!(
            http_get(op.metrics, "/readyz").await.map(|r| r.0),
            Some(200)
        );
    }
    let (code, metrics) = http_get(leader.metrics, "/metrics")
        .await
        .expect("metrics answer");
    assert_eq!(code, 200);
    let ns = format!("namespace=\"{}\"", w.ns.name);
    assert_eq!(
        sample(
            &metrics,
            "usersync_runs_total",
            &[&ns, "mapping=\"staff\"", "result=\"Succeeded\""]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "usersync_users", &[&ns, "state=\"Active\""]),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "usersync_users", &[&ns, "state=\"Preserved\""]),
        Some(0.0),
        "{metrics}"
    );
    let last = sample(
        &metrics,
        "usersync_last_successful_sync_timestamp_seconds",
        &[&ns],
    )
    .expect("last success");
    assert_eq!(last as i64, run.start_time.0.as_second());
    assert!(
        sample(&metrics, "usersync_run_duration_seconds_count", &[&ns]) == Some(1.0),
        "{metrics}"
    );
    eventually(RUN_WAIT, "connector_up", || async {
        let (_, m) = http_get(leader.metrics, "/metrics").await?;
        (sample(&m, "usersync_connector_up", &[&ns]) == Some(1.0)).then_some(())
    })
    .await;

    // The leader dies without giving up the lease: the standby takes over once it expires.
    leader.signal("-KILL");
    let killed = Instant::now();
    takes_over(&leases, &standby, "the standby to take the lease").await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= Duration::from_secs(25),
        "takeover took {takeover:?}; the lease lasts 15s, renewed every 5s, looked at every 2s"
    );
    eprintln!(
        "failover: the standby took the lease {:.1}s after the leader was killed",
        takeover.as_secs_f64()
    );
    the_new_leader_syncs(&w, &standby, "ha5").await;

    // A clean stop hands the lease back at once.
    standby.signal("-TERM");
    eventually(
        Duration::from_secs(10),
        "the lease to be released",
        || async { holder(&leases).await.is_none().then_some(()) },
    )
    .await;
}

/// A leader that is paused (SIGSTOP: a frozen node, a long GC-like stall) past its
/// lease loses it to the standby; when it resumes it must stop at once rather
/// than go on syncing beside the new leader.
#[tokio::test]
async fn a_paused_leader_stops_when_it_resumes_after_the_standby_took_over() {
    let w = World::without_operator("ha-pause", Server::slapd(), json!({})).await;
    w.add_user("hp1", false);
    let dir = tempfile::tempdir().unwrap();
    let (mut leader, standby) = two_replicas(&w, dir.path()).await;
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns.name);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        leader.runs(),
        vec![run.id.clone()],
        "the leader did the run"
    );

    leader.signal("-STOP");
    takes_over(
        &leases,
        &standby,
        "the standby to take the lease from the paused leader",
    )
    .await;
    leader.signal("-CONT");
    let status = tokio::time::timeout(Duration::from_secs(20), leader.child.wait())
        .await
        .expect("the resumed leader stops within 20s")
        .unwrap();
    assert!(
        !status.success(),
        "a replica that lost its lease exits non-zero, so that it is restarted as a standby"
    );
    assert_eq!(
        leader.runs(),
        vec![run.id],
        "the resumed leader finished no run after losing the lease"
    );
    let log = std::fs::read_to_string(&leader.log).unwrap();
    assert!(log.contains("stopping"), "{log}");

    the_new_leader_syncs(&w, &standby, "hp2").await;
}

#[tokio::test]
async fn a_leader_paused_mid_run_writes_no_user_after_the_standby_took_over() {
    let w = World::without_operator("ha-midrun", Server::slapd(), json!({})).await;
    let count = 1500;
    // In chunks: the client's output per entry must not fill its pipe.
    for chunk in (0..count).collect::<Vec<_>>().chunks(100) {
        let mut ldif = String::new();
        for i in chunk {
            let uid = format!("mr{i}");
            ldif.push_str(&format!(
                "dn: uid={uid},{}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {uid}@example.org\n\n",
                w.ou.dn
            ));
        }
        w.server.add_ldif(&ldif);
    }
    let dir = tempfile::tempdir().unwrap();
    let (leader, standby) = two_replicas(&w, dir.path()).await;
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns.name);
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": w.ou.dn}},
    }));
    // Paused in the middle of the import: some users are written, most are not.
    let users: Api<usersync::api::DirectoryUser> = Api::namespaced(w.client.clone(), &w.ns.name);
    eventually(RUN_WAIT, "the import to be under way", || async {
        let n = users
            .list_metadata(&Default::default())
            .await
            .ok()?
            .items
            .len();
        (n >= 50).then_some(())
    })
    .await;
    leader.signal("-STOP");
    let paused_run = {
        let m: DirectoryMapping = Api::namespaced(w.client.clone(), &w.ns.name)
            .get("staff")
            .await
            .unwrap();
        let syncing = usersync::api::find_condition(&m.status.unwrap().conditions, "Syncing")
            .cloned()
            .unwrap();
        syncing
            .message
            .split_whitespace()
            .nth(1)
            .unwrap()
            .to_string()
    };
    takes_over(&leases, &standby, "the standby to take the lease mid-run").await;
    // The new leader is paused too while the old one resumes, so that every change
    // to a user from here on is the old leader's: its writes must be stopped by its
    // Lease check, not merely refused by preconditions because the new leader got
    // to the same users first. A second lets the new leader's requests in flight
    // land before the count starts.
    standby.signal("-STOP");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let versions = || async {
        users
            .list_metadata(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|u| {
                (
                    u.name_any(),
                    u.metadata.resource_version.unwrap_or_default(),
                )
            })
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    let before = versions().await;
    assert!(before.len() < count, "the import finished before the pause");
    leader.signal("-CONT");
    let mut leader = leader;
    let stopped = tokio::time::timeout(Duration::from_secs(20), leader.child.wait()).await;
    let after = versions().await;
    standby.signal("-CONT");
    stopped
        .expect("the resumed leader stops within 20s")
        .unwrap();
    let late: Vec<_> = after
        .iter()
        .filter(|(name, version)| before.get(*name) != Some(*version))
        .collect();
    assert!(
        late.is_empty(),
        "the paused leader (run {paused_run}) wrote {} users after the takeover, e.g. {:?}",
        late.len(),
        late.first()
    );
    println!(
        "paused mid-run: {} of {count} users written before the takeover, 0 after",
        before.len()
    );
}

/// While the operator waits for its database, the liveness probe passes and the
/// readiness probe does not: a slow database must not get the pod restarted.
#[tokio::test]
async fn waiting_for_the_database_the_operator_is_alive_but_not_ready() {
    let w = World::without_operator("pg-wait", Server::slapd(), json!({})).await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there.
    let dsn = format!(
        "postgres://usersync:unused@127.0.0.1:{}/usersync",
        free_port()
    );
    let op = Operator::start_with(
        "replica-a",
        &w.ns.name,
        &cluster().kubeconfig,
        dir.path(),
        &["--store", "postgres"],
        &[("USERSYNC_POSTGRES_DSN", dsn.as_str())],
    );
    eventually(Duration::from_secs(20), "/healthz to answer", || async {
        (http_get(op.metrics, "/healthz").await?.0 == 200).then_some(())
    })
    .await;
    let ready = http_get(op.metrics, "/readyz").await.map(|r| r.0);
    assert_ne!(ready, Some(200), "ready before the store is open");
    let log = std::fs::read_to_string(&op.log).unwrap();
    assert!(!log.contains("unused"), "the password was logged: {log}");
}

/// The deletion counters and run results on `/metrics` follow what the runs did:
/// a delete withheld by `deletionsAllowed: false` counts as planned and blocked,
/// the run as Blocked; once allowed, the delete counts as planned only.
/// The metric names the chart's Grafana dashboard queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = crate::support::repo().join("charts/usersync/dashboards/usersync.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = variable["query"]["query"].as_str() {
            exprs.push(query.to_string());
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for expr in exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("usersync_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_served_after_a_run() {
    let w = World::without_operator("dashboard", Server::slapd(), json!({})).await;
    w.add_user("db1", false);
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start("replica-a", &w.ns.name, &cluster().kubeconfig, dir.path());
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(run.result, usersync::api::RunResult::Succeeded, "{run:?}");
    let wanted = dashboard_metrics();
    assert!(wanted.len() >= 8, "{wanted:?}");
    let ns = format!("namespace=\"{}\"", w.ns.name);
    let text = eventually(RUN_WAIT, "every dashboard metric", || async {
        let (_, text) = http_get(op.metrics, "/metrics").await?;
        let missing: Vec<_> = wanted
            .iter()
            .filter(|name| sample(&text, &format!("{name}{{"), &[&ns]).is_none())
            .collect();
        missing.is_empty().then_some(text)
    })
    .await;
    // A sample of this mapping, not only a family: the interval the dashboard divides by.
    assert_eq!(
        sample(
            &text,
            "usersync_sync_interval_seconds{",
            &[&ns, "mapping=\"staff\""]
        ),
        Some(86_400.0),
        "{text}"
    );
}

#[tokio::test]
async fn a_start_takes_up_existing_mappings_without_a_failed_reconcile() {
    const MAPPINGS: [&str; 6] = ["st-a", "st-b", "st-c", "st-d", "st-e", "st-f"];
    // What a restart finds: mappings and a connector that probes every 2 s, so that
    // a mapping's first reconciles (its own, and its connector's status changes)
    // come close together, the second on a cached copy from before the first wrote.
    let w = World::without_operator("start", Server::slapd(), json!({})).await;
    w.add_user("st1", false);
    for name in MAPPINGS {
        w.apply(&json!({
            "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": name},
            "spec": {"connectorRef": "corp", "policyRef": "default", "profile": name, "ldap": {"baseDN": w.ou.dn}},
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start("replica-a", &w.ns.name, &cluster().kubeconfig, dir.path());
    for name in MAPPINGS {
        w.wait_run(name, None).await;
    }
    // A few more connector probes, each a trigger of every mapping.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = std::fs::read_to_string(&op.log).unwrap();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reconcile failed"))
        .collect();
    assert!(
        failed.is_empty(),
        "a start logged failed reconciles:\n{}",
        failed.join("\n")
    );
}

#[tokio::test]
async fn metrics_count_planned_and_blocked_deletions_as_the_runs_did() {
    let w = World::without_operator(
        "metrics-del",
        Server::slapd(),
        json!({"preservation": {"deleteAfter": "1h"}, "safety": {"maxPreservePercent": 100}}),
    )
    .await;
    w.add_user("md1", false);
    w.add_user("md2", false);
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start("replica-a", &w.ns.name, &cluster().kubeconfig, dir.path());
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.set_disabled("md1", true);
    w.sync("staff").await;
    // This operator is a process of its own, on the system clock: the record says
    // it was preserved two hours ago instead.
    w.backdate_preservation("md1", Duration::from_secs(7200))
        .await;
    w.set_deletions_allowed(false).await;
    let blocked = w.sync("staff").await;
    assert_eq!(
        blocked.result,
        usersync::api::RunResult::Blocked,
        "{blocked:?}"
    );

    let ns = format!("namespace=\"{}\"", w.ns.name);
    let scrape = || async {
        let (code, text) = http_get(op.metrics, "/metrics")
            .await
            .expect("metrics answer");
        assert_eq!(code, 200);
        text
    };
    // Each expected sample: metric, extra label, value.
    let expect = |m: &str, expected: &[(&str, &str, f64)]| {
        for (metric, label, value) in expected {
            let labels: Vec<&str> = [ns.as_str(), label]
                .into_iter()
                .filter(|l| !l.is_empty())
                .collect();
            assert_eq!(
                sample(m, metric, &labels),
                Some(*value),
                "{metric}{{{label}}}:\n{m}"
            );
        }
    };
    expect(
        &scrape().await,
        &[
            ("usersync_deletions_planned_total", "", 1.0),
            ("usersync_deletions_blocked_total", "", 1.0),
            ("usersync_runs_total", "result=\"Blocked\"", 1.0),
            ("usersync_users", "state=\"Preserved\"", 1.0),
        ],
    );

    w.set_deletions_allowed(true).await;
    w.connected(true).await;
    let run = w.sync("staff").await;
    assert_eq!(run.deleted, 1, "{run:?}");
    expect(
        &scrape().await,
        &[
            ("usersync_deletions_planned_total", "", 2.0),
            ("usersync_deletions_blocked_total", "", 1.0),
            ("usersync_users", "state=\"Deleted\"", 1.0),
            ("usersync_users", "state=\"Active\"", 1.0),
        ],
    );
}

/// A TCP relay to the API server that can be frozen: connections stay open and
/// nothing more is relayed, the way a network partition or a hung API server
/// looks to a client (kube's client sets no read timeout of its own).
struct FreezableRelay {
    port: u16,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableRelay {
    async fn to(upstream: String) -> FreezableRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(relay(cr, sw, watch.clone()));
                tokio::spawn(relay(sr, cw, watch.clone()));
            }
        });
        FreezableRelay { port, frozen }
    }

    fn freeze(&self) {
        let _ = self.frozen.send(true);
    }
}

/// Copy bytes one way until the connection ends; once frozen, hold them.
async fn relay(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *frozen.borrow() {
            // Hold the connection open and silent until the test ends.
            let _ = frozen.wait_for(|f| !*f).await;
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            _ = frozen.changed() => continue,
        };
        if *frozen.borrow() {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A leader whose API server stops answering must stop syncing before its lease
/// can expire for the others, even though its renewal request never returns.
#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_its_lease_expires() {
    let w = World::without_operator("ha-cut", Server::slapd(), json!({})).await;
    w.add_user("hc1", false);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster().kubeconfig.clone();
    // The leader reaches the API server only through the relay.
    let original = std::fs::read_to_string(&kubeconfig).unwrap();
    let server = original
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .expect("the kubeconfig names its server")
        .to_owned();
    let relay = FreezableRelay::to(server.clone()).await;
    let relayed = dir.path().join("relayed-kubeconfig");
    std::fs::write(
        &relayed,
        original.replace(&server, &format!("127.0.0.1:{}", relay.port)),
    )
    .unwrap();
    let mut leader = Operator::start("replica-a", &w.ns.name, &relayed, dir.path());
    let leases: Api<Lease> = Api::namespaced(w.client.clone(), &w.ns.name);
    eventually(RUN_WAIT, "replica-a to hold the lease", || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let standby = Operator::start("replica-b", &w.ns.name, &kubeconfig, dir.path());
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(leader.runs(), vec![run.id], "the leader did the run");

    relay.freeze();
    let frozen = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(30), leader.child.wait())
        .await
        .expect("the cut-off leader stops by itself")
        .unwrap();
    let stopped = frozen.elapsed();
    assert!(
        !status.success(),
        "a replica that lost its lease exits non-zero"
    );
    // The others may take over 15s after the last renewal they saw; the leader
    // gives up 10s after its own last renewal, which was at most 5s before the freeze.
    assert!(
        stopped < Duration::from_secs(15),
        "the cut-off leader went on for {stopped:?}, past the lease's expiry"
    );
    takes_over(&leases, &standby, "the standby to take the lease").await;
    the_new_leader_syncs(&w, &standby, "hc2").await;
}

#[tokio::test]
async fn the_charts_service_account_is_enough_for_a_full_sync_and_nothing_more() {
    let w = World::without_operator("rbac", Server::slapd(), json!({})).await;
    full_sync_as_the_charts_service_account(&w, None).await;
    assert_eq!(w.state("rb1").await, "Active");
}

#[tokio::test]
async fn with_the_postgres_store_the_charts_service_account_is_enough_too() {
    let (db, dsn) = crate::pg_support::fresh_database("rbac_pg").await;
    let w = World::without_operator("rbac-pg", Server::slapd(), json!({})).await;
    let log = full_sync_as_the_charts_service_account(&w, Some(&dsn)).await;
    let active: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE namespace = $1 AND state = 'Active'")
            .bind(&w.ns.name)
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(active, 2);
    let password = url::Url::parse(&dsn)
        .unwrap()
        .password()
        .unwrap()
        .to_string();
    assert!(!log.contains(&password), "the database password was logged");
}

/// The chart installed for a world's namespace, and the operator running as the
/// chart's ServiceAccount (with a token for it). Uninstalled when dropped.
struct ChartOperator {
    op: Operator,
    ns: String,
    kubeconfig: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// `helm` with the test cluster's kubeconfig, from the repository.
fn helm(args: &[&str]) {
    let c = cluster();
    let out = std::process::Command::new(c.bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .current_dir(crate::support::repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "helm {args:?}: {}", stderr(&out));
}

impl ChartOperator {
    /// Install the chart for `w`'s namespace with `sets` (helm `--set` values) and
    /// the postgres store when a DSN is given, and start the operator as its account.
    fn start(w: &World<'_>, sets: &[String], dsn: Option<&str>) -> ChartOperator {
        let ns = w.ns.name.clone();
        let c = cluster();
        let mut install: Vec<String> = [
            "install",
            "usersync",
            "charts/usersync",
            "-n",
            &ns,
            "--set",
            &format!("watchNamespaces={{{ns}}}"),
            "--set",
            "replicas=1",
        ]
        .map(String::from)
        .into();
        for set in sets {
            install.extend(["--set".to_string(), set.clone()]);
        }
        if dsn.is_some() {
            install.extend(
                [
                    "--set",
                    "store.type=postgres",
                    "--set",
                    "store.postgres.dsnSecretRef.name=usersync-db",
                ]
                .map(String::from),
            );
        }
        helm(&install.iter().map(String::as_str).collect::<Vec<_>>());
        let token = c.kubectl(["create", "token", "usersync", "-n", &ns, "--duration", "1h"]);
        assert!(token.status.success(), "{}", stderr(&token));
        let token = stdout(&token).trim().to_string();
        let admin: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&c.kubeconfig).unwrap()).unwrap();
        let cluster_entry = admin["clusters"][0]["cluster"].clone();
        let kubeconfig = serde_yaml::to_string(&json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "sa",
            "clusters": [{"name": "test", "cluster": serde_json::to_value(&cluster_entry).unwrap()}],
            "users": [{"name": "sa", "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "test", "user": "sa", "namespace": ns}}],
        }))
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.kubeconfig");
        std::fs::write(&path, kubeconfig).unwrap();
        let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match dsn {
            Some(dsn) => (
                vec!["--store", "postgres"],
                vec![("USERSYNC_POSTGRES_DSN", dsn)],
            ),
            None => (Vec::new(), Vec::new()),
        };
        // The chart's own arguments that name its objects.
        let args = [
            &["--secret-reader-role", "usersync-secret-reader"],
            &args[..],
        ]
        .concat();
        let op = Operator::start_with("chart-sa", &ns, &path, dir.path(), &args, &env);
        ChartOperator {
            op,
            ns,
            kubeconfig: path,
            _dir: dir,
        }
    }

    /// `kubectl` as the operator's account.
    fn kubectl(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(cluster().bin.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .unwrap()
    }

    /// What the operator logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.op.log).unwrap()
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        helm(&["uninstall", "usersync", "-n", &self.ns]);
    }
}

/// Install the chart for the world's namespace (with the postgres store when a DSN
/// is given) granting its Secrets, run the operator as its ServiceAccount, sync, and
/// check it was refused nothing it needs and is refused what it must not have.
/// Returns the operator's log.
async fn full_sync_as_the_charts_service_account(w: &World<'_>, dsn: Option<&str>) -> String {
    w.add_user("rb1", false);
    w.add_user("rb2", false);
    let chart = ChartOperator::start(w, &[format!("secretNamespaces={{{}}}", w.ns.name)], dsn);

    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        (run.result, run.imported),
        (usersync::api::RunResult::Succeeded, 2),
        "{run:?}"
    );
    let log = chart.log();
    assert!(
        !log.contains("forbidden"),
        "the ServiceAccount was refused something it needs:\n{log}"
    );

    // Outside its rights: a Secret in another namespace, and Secrets cluster-wide.
    for args in [
        &["get", "secrets", "-n", "default"][..],
        &["get", "secrets", "-A"][..],
    ] {
        let out = chart.kubectl(args);
        assert!(
            !out.status.success() && stderr(&out).contains("forbidden"),
            "{}",
            stderr(&out)
        );
    }
    log
}

#[tokio::test]
async fn a_namespace_that_has_not_granted_its_secrets_is_told_the_grant_and_syncs_once_granted() {
    let w = World::without_operator("grant", Server::slapd(), json!({})).await;
    w.add_user("gr1", false);
    // Watched, but its Secrets not granted (no secretNamespaces).
    let chart = ChartOperator::start(&w, &[], None);
    let ns = w.ns.name.clone();
    let api: Api<ConnectorHealth> = Api::namespaced(w.client.clone(), &ns);
    let refused = |reason: &'static str| {
        let api = api.clone();
        move || {
            let api = api.clone();
            async move {
                let c = api.get("corp").await.ok()?;
                find_condition(&c.status?.conditions, "Resolved")
                    .filter(|c| c.status == "False" && c.reason == reason)
                    .cloned()
            }
        }
    };
    let c = eventually(
        RUN_WAIT,
        "SecretAccessNotGranted",
        refused("SecretAccessNotGranted"),
    )
    .await;
    let grant = format!(
        "kubectl create rolebinding usersync-secrets -n {ns} --clusterrole=usersync-secret-reader --serviceaccount={ns}:usersync"
    );
    assert!(c.message.contains(&grant), "{}", c.message);
    assert!(
        c.message
            .starts_with("spec.ldap.bindPasswordSecretRef: Secret \"corp-bind\" cannot be read"),
        "the cause comes first: {}",
        c.message
    );
    let ready = eventually(RUN_WAIT, "Ready=False naming the grant", || async {
        let c = api.get("corp").await.ok()?;
        find_condition(&c.status?.conditions, "Ready")
            .filter(|c| c.status == "False" && c.reason == "SecretAccessNotGranted")
            .cloned()
    })
    .await;
    assert!(ready.message.contains(&grant), "{}", ready.message);

    // The admin runs the line the condition gives, word for word.
    let words: Vec<&str> = grant.split_whitespace().skip(1).collect();
    let out = cluster().kubectl(words);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(RUN_WAIT, "Resolved once granted", || async {
        let c = api.get("corp").await.ok()?;
        find_condition(&c.status?.conditions, "Connected")
            .filter(|c| c.status == "True")
            .map(|_| ())
    })
    .await;
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(
        (run.result, run.imported),
        (usersync::api::RunResult::Succeeded, 1),
        "{run:?}"
    );

    // The granted namespace's credential Secrets are watched: with no probe due for
    // an hour, taking the label off the bind Secret is seen at once.
    let out = cluster().kubectl([
        "patch",
        "connectorhealth",
        "corp",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"probeInterval":"1h"}}"#,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = cluster().kubectl([
        "label",
        "secret",
        "corp-bind",
        "-n",
        &ns,
        "usersync.dev/credential-",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    eventually(
        Duration::from_secs(10),
        "SecretNotPermitted after the label went",
        refused("SecretNotPermitted"),
    )
    .await;
    drop(chart);
}

#[tokio::test]
async fn a_run_interrupted_by_failover_is_redone_by_the_new_leader() {
    // A directory that accepts connections and never answers keeps a run going
    // until the connector's timeout: long enough to kill the leader mid-run.
    let port = crate::support::silent_server().await;
    let scene = crate::world::Scene::new("failover-run", json!({})).await;
    scene.apply(&json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "ConnectorHealth", "metadata": {"name": "corp"},
        "spec": {"ldap": {"url": format!("ldap://127.0.0.1:{port}"), "flavor": "OpenLDAP", "timeout": "8s"}, "probeInterval": "1h"}}));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster().kubeconfig.clone();
    let a = Operator::start("replica-a", &scene.ns.name, &kubeconfig, dir.path());
    let leases: Api<Lease> = Api::namespaced(scene.client.clone(), &scene.ns.name);
    eventually(RUN_WAIT, "replica-a to lead", || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Operator::start("replica-b", &scene.ns.name, &kubeconfig, dir.path());
    scene.apply(&json!({"apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": "dc=example,dc=org"}}}));
    let mappings: Api<usersync::api::DirectoryMapping> =
        Api::namespaced(scene.client.clone(), &scene.ns.name);
    eventually(RUN_WAIT, "the first run to start", || async {
        mappings
            .get("staff")
            .await
            .ok()?
            .status?
            .sync_in_progress
            .then_some(())
    })
    .await;
    a.signal("-KILL");
    assert!(a.runs().is_empty(), "the run was meant to be cut off");
    // The new leader finds the schedule still due (a run counts once it has
    // finished) and runs the mapping itself.
    let run = eventually(Duration::from_secs(60), "the new leader's run", || async {
        let status = mappings.get("staff").await.ok()?.status?;
        status.last_run.filter(|_| !status.sync_in_progress)
    })
    .await;
    assert_eq!(
        b.runs(),
        vec![run.id.clone()],
        "the run was not redone by the new leader"
    );
    assert_eq!(run.trigger, usersync::api::RunTrigger::Schedule);
}

#[tokio::test]
async fn a_restart_neither_skips_nor_doubles_a_due_run() {
    let w = World::without_operator("restart", Server::slapd(), json!({"interval": "1m"})).await;
    w.add_user("ria", false);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster().kubeconfig.clone();
    let a = Operator::start("first", &w.ns.name, &kubeconfig, dir.path());
    let first = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    a.signal("-TERM");
    // Restarted well before the next run is due: the new process must not run at once.
    let b = Operator::start("second", &w.ns.name, &kubeconfig, dir.path());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        b.runs().is_empty(),
        "a restart doubled a run that was not due"
    );
    // The run that falls due while it is up happens once, on time.
    let next = w.wait_run("staff", Some(&first.id)).await;
    let gap = next.start_time.0.duration_since(first.start_time.0);
    assert!(
        gap >= jiff::SignedDuration::from_secs(60),
        "the next run came early: {gap:?}"
    );
    assert!(
        gap < jiff::SignedDuration::from_secs(66),
        "a due run was skipped or late: {gap:?}"
    );
    drop(b);

    // Down across a due time: the restarted process runs the due run at once, once.
    // The status says the last run started past an interval ago.
    w.backdate_last_sync("staff", Duration::from_secs(61)).await;
    let c = Operator::start("third", &w.ns.name, &kubeconfig, dir.path());
    let caught_up = w.wait_run("staff", Some(&next.id)).await;
    assert_eq!(c.runs(), vec![caught_up.id.clone()]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(c.runs().len(), 1, "the catch-up run was doubled");
}

#[tokio::test]
async fn a_run_left_in_progress_by_a_stopped_operator_is_closed_when_one_starts() {
    let w = World::without_operator("stale-run", Server::slapd(), json!({})).await;
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": w.ou.dn}},
    }));
    // What a leader that died mid-run leaves behind; its last run started just now,
    // so nothing is due.
    let mappings: Api<usersync::api::DirectoryMapping> =
        Api::namespaced(w.client.clone(), &w.ns.name);
    let now = jiff::Timestamp::now().to_string();
    let stale = json!({"status": {
        "syncInProgress": true,
        "lastSyncTime": now,
        "conditions": [{
            "type": "Syncing", "status": "True", "reason": "RunInProgress",
            "message": "run 20261123-000000-dead started", "lastTransitionTime": now,
        }],
    }});
    mappings
        .patch_status(
            "staff",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&stale),
        )
        .await
        .unwrap();

    w.start_operator();
    let status = eventually(RUN_WAIT, "the interrupted run to be closed", || async {
        let status = mappings.get("staff").await.ok()?.status?;
        (!status.sync_in_progress).then_some(status)
    })
    .await;
    let syncing = usersync::api::find_condition(&status.conditions, "Syncing").unwrap();
    assert_eq!(
        (syncing.status.as_str(), syncing.reason.as_str()),
        ("False", "Interrupted")
    );
    assert!(
        syncing.message.contains("20261123-000000-dead"),
        "{}",
        syncing.message
    );
    assert!(
        status.last_run.is_none(),
        "no run was due: {:?}",
        status.last_run
    );
}

#[tokio::test]
async fn push_channels_show_in_the_metrics_open_lost_and_the_changes_they_reported() {
    let private = crate::ldap_support::PrivateSlapd::start("pushmetrics");
    let w =
        World::without_operator("push-metrics", &private.server, crate::push::push_policy()).await;
    w.add_user("pm1", false);
    let dir = tempfile::tempdir().unwrap();
    let op = Operator::start("replica-a", &w.ns.name, &cluster().kubeconfig, dir.path());
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.push_condition("staff", "Listening").await;
    w.quiet("staff").await;

    let ns = format!("namespace=\"{}\"", w.ns.name);
    let labels = [ns.as_str(), "mapping=\"staff\""];
    // The value of `metric` for the mapping once it is `wanted`.
    let becomes = |metric: &'static str, wanted: fn(f64) -> bool| async move {
        eventually(RUN_WAIT, metric, || async {
            let (_, text) = http_get(op.metrics, "/metrics").await?;
            sample(&text, metric, &labels).filter(|v| wanted(*v))
        })
        .await
    };
    becomes("usersync_push_open", |v| v == 1.0).await;
    w.set_disabled("pm1", true);
    w.state_becomes("pm1", "Preserved/DisabledInDirectory")
        .await;
    becomes("usersync_push_changes_total", |v| v >= 1.0).await;

    private.server.script(&["down"], None);
    w.push_condition("staff", "PushDisconnected").await;
    becomes("usersync_push_open", |v| v == 0.0).await;
    becomes("usersync_push_lost_total", |v| v >= 1.0).await;
    private.server.script(&["up"], None);
    w.push_condition("staff", "Listening").await;
    becomes("usersync_push_open", |v| v == 1.0).await;
}
