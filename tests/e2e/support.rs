//! The harness of the end-to-end tests: a real control plane (tests/cluster.sh),
//! the CRDs installed with the built kubectl, one namespace per test, and the
//! operator running in-process against that namespace.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

/// The running control plane: where its kubeconfig and tools are.
pub struct Cluster {
    pub kubeconfig: PathBuf,
    pub bin: PathBuf,
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run `tests/<script> <command>`; what it printed on stdout.
fn script(script: &str, command: &str) -> String {
    let out = Command::new("bash")
        .arg(repo().join("tests").join(script))
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("bash runs tests/{script}: {e}"));
    assert!(
        out.status.success(),
        "tests/{script} {command} failed:\n{}",
        stderr(&out)
    );
    stdout(&out)
}

/// Start (or reuse) the control plane once per test binary and install the CRDs.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let exports = script("cluster.sh", "up");
        let var = |name: &str| {
            exports
                .lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches(['\'', '"']).to_string())
                .unwrap_or_else(|| panic!("tests/cluster.sh up printed no {name}:\n{exports}"))
        };
        let kubeconfig = PathBuf::from(var("KUBECONFIG"));
        let path = var("PATH");
        let bin = PathBuf::from(path.split(':').next().expect("PATH has a first entry"));
        let cluster = Cluster { kubeconfig, bin };
        let out = cluster.kubectl(["apply", "--server-side", "--force-conflicts", "-f", "crds/"]);
        assert!(
            out.status.success(),
            "installing the CRDs failed: {}",
            stderr(&out)
        );
        let out = cluster.kubectl([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=usersync",
        ]);
        assert!(
            out.status.success(),
            "the CRDs did not become established: {}",
            stderr(&out)
        );
        // The admission policy that holds a RunApproval to its creator's name.
        let out = cluster.kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "deploy/base/admission-policy.yaml",
        ]);
        assert!(
            out.status.success(),
            "installing the admission policy failed: {}",
            stderr(&out)
        );
        cluster
    })
}

impl Cluster {
    /// Run the built kubectl against the cluster, from the repository root.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Command::new(self.bin.join("kubectl"))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .current_dir(repo())
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl apply -f -` of a manifest.
    pub fn apply(&self, namespace: &str, manifest: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(self.bin.join("kubectl"))
            .args(["apply", "-n", namespace, "-f", "-"])
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(manifest.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// A client for the cluster.
    pub async fn client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig readable");
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig valid");
        Client::try_from(config).expect("client builds")
    }
}

/// kstatus's verdict on one object: the health Flux, kpt and cli-utils read
/// (`sigs.k8s.io/cli-utils/pkg/kstatus/status`, through tests/kstatus).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct Kstatus {
    /// InProgress, Failed, Current, Terminating, Unknown, or NotFound.
    pub status: String,
    pub message: String,
}

/// The kstatus tool: `USERSYNC_KSTATUS` when set (tests/run.sh builds it first),
/// else built once per test binary by `tests/kstatus.sh build` (cached).
fn kstatus_tool() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| match std::env::var_os("USERSYNC_KSTATUS") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(script("kstatus.sh", "build").trim()),
    })
}

impl Cluster {
    /// kstatus's verdict on the object `kind/namespace/name` as the API server
    /// returns it now (`kind` as kubectl takes it: a kind, plural or short name).
    pub async fn kstatus(&self, kind: &str, namespace: &str, name: &str) -> Kstatus {
        let object = format!("{kind}/{namespace}/{name}");
        let out = tokio::process::Command::new(kstatus_tool())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg(&object)
            .output()
            .await
            .expect("kstatus runs");
        assert!(
            out.status.success(),
            "kstatus {object} failed: {}",
            stderr(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("kstatus {object} printed {:?}: {e}", stdout(&out)))
    }
}

/// A test's own namespace, deleted (without waiting) when the test ends.
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    /// Create a namespace named after the test, with a random suffix.
    pub async fn new(client: &Client, test: &str) -> Self {
        let name = format!("{}-{:08x}", test.replace('_', "-"), rand_u32());
        let name = name
            .trim_start_matches('-')
            .chars()
            .rev()
            .take(63)
            .collect::<String>()
            .chars()
            .rev()
            .collect::<String>();
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace created");
        Self {
            name,
            client: client.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // The test's runtime is shutting down here, so ask kubectl, without waiting
        // for the namespace to go.
        let c = cluster();
        let _ = c.kubectl(["delete", "namespace", &self.name, "--wait=false"]);
        // The test's operator is gone with it: a mapping's finalizer would hold the
        // namespace in Terminating for good, and the namespace controller, which
        // retries every such namespace, would fall behind for the rest of the suite.
        let listed = c.kubectl(["get", "directorymappings", "-n", &self.name, "-o", "name"]);
        for mapping in String::from_utf8_lossy(&listed.stdout).lines() {
            let _ = c.kubectl([
                "patch",
                "-n",
                &self.name,
                mapping,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ]);
        }
        let _ = &self.client;
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() as u32
}

/// The time the in-process operator reads: the system clock plus whatever a test
/// moved it forward by, so retention and backoff are tested without waiting.
#[derive(Clone, Default)]
pub struct TestClock {
    ahead_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
}

impl TestClock {
    /// The operator's clock reading this one.
    pub fn clock(&self) -> usersync::controller::Clock {
        let ahead = self.ahead_ms.clone();
        usersync::controller::Clock::from_fn(move || {
            let ms = ahead.load(std::sync::atomic::Ordering::SeqCst);
            jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms)
        })
    }

    /// Move the operator's time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap();
        self.ahead_ms
            .fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }

    /// The operator's time now.
    pub fn now(&self) -> jiff::Timestamp {
        self.clock().now()
    }
}

/// Start the operator in-process, watching one namespace; it stops with the test's runtime.
pub fn start_operator(client: &Client, namespace: &str) {
    start_operator_with(client, namespace, usersync::store::Backend::Kubernetes);
}

/// Start the operator in-process for one namespace, keeping users in `store`.
pub fn start_operator_with(client: &Client, namespace: &str, store: usersync::store::Backend) {
    start_operator_clocked(client, namespace, store, &TestClock::default());
}

/// Start the operator in-process for one namespace, reading the time from `clock`.
pub fn start_operator_clocked(
    client: &Client,
    namespace: &str,
    store: usersync::store::Backend,
    clock: &TestClock,
) {
    spawn_operator(client, namespace, store, clock);
}

/// Start the operator in-process like [`start_operator_clocked`]; aborting the handle
/// stops it as a crash would, in the middle of whatever it was doing.
pub fn spawn_operator(
    client: &Client,
    namespace: &str,
    store: usersync::store::Backend,
    clock: &TestClock,
) -> tokio::task::JoinHandle<()> {
    spawn_fenced_operator(
        client,
        namespace,
        store,
        clock,
        usersync::controller::Fence::open(),
    )
}

/// Start the operator in-process like [`spawn_operator`], holding the Lease while
/// `fence` says so (the leader election's answer, which the test decides).
pub fn spawn_fenced_operator(
    client: &Client,
    namespace: &str,
    store: usersync::store::Backend,
    clock: &TestClock,
    fence: usersync::controller::Fence,
) -> tokio::task::JoinHandle<()> {
    let scope = usersync::controller::Scope {
        namespaces: vec![namespace.to_string()],
        max_concurrent_runs: 4,
        store,
        clock: clock.clock(),
        fence,
        ..Default::default()
    };
    let client = client.clone();
    tokio::spawn(async move {
        usersync::controller::run_until(client, scope, std::future::pending())
            .await
            .expect("operator runs")
    })
}

/// Poll `check` until it returns `Some`, or fail after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// kubectl's stderr, as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// kubectl's stdout, as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the built `usersync` binary against the cluster.
pub fn usersync<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(env!("CARGO_BIN_EXE_usersync"))
        .args(args)
        .env("KUBECONFIG", &cluster().kubeconfig)
        .env("USERSYNC_LOG", "warn")
        .current_dir(repo())
        .output()
        .expect("usersync runs")
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers (a hung
/// directory); its port. It lives as long as the test's runtime.
pub async fn silent_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    port
}

/// What a [`recording_server`] received: every byte of every connection, in order.
#[derive(Clone, Default)]
pub struct Recording(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Recording {
    /// How many times `needle` occurs in what the server received.
    pub fn count(&self, needle: &str) -> usize {
        let bytes = self.0.lock().unwrap();
        let needle = needle.as_bytes();
        bytes.windows(needle.len()).filter(|w| *w == needle).count()
    }

    /// How many bytes the server received.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// A TCP server on 127.0.0.1 that accepts connections, records every byte it is
/// sent and never answers (a fake directory or token endpoint that only listens):
/// its port and what it received. It lives as long as the test's runtime.
pub async fn recording_server() -> (u16, Recording) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let recording = Recording::default();
    let sink = recording.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.0.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, recording)
}

/// A TCP relay on 127.0.0.1 to `upstream` that can be held: while held, it accepts
/// connections and relays nothing on them until released. A test holds it to stop
/// a run at a known point of its read.
pub struct HeldRelay {
    pub port: u16,
    hold: tokio::sync::watch::Sender<bool>,
    waiting: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HeldRelay {
    pub async fn start(upstream: std::net::SocketAddr) -> HeldRelay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hold, held) = tokio::sync::watch::channel(false);
        let waiting = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = waiting.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut held = held.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    if *held.borrow() {
                        count.fetch_add(1, Ordering::SeqCst);
                        let _ = held.wait_for(|h| !h).await;
                        count.fetch_sub(1, Ordering::SeqCst);
                    }
                    if let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        HeldRelay {
            port,
            hold,
            waiting,
        }
    }

    /// Hold every connection opened from now on.
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Relay the held connections and every later one.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// How many connections are held now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A TCP relay on 127.0.0.1 to `upstream` that can be cut, as a restart of the
/// server behind it would: the connections open are closed, and new ones are
/// closed at once, until it is restored.
pub struct CutRelay {
    pub port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl CutRelay {
    pub async fn start(upstream: std::net::SocketAddr) -> CutRelay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cuts) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if *cuts.borrow() {
                    continue;
                }
                let mut cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        CutRelay { port, cut }
    }

    /// Close every connection, and each new one, until [`Self::restore`].
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

/// The operator's side of the wire to the API server: every request its client
/// sends, as the server receives it, and a switch that holds back what the
/// server's watches of DirectoryUsers deliver (as a slow or stalled watch would).
#[derive(Clone, Default)]
pub struct Wire {
    requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    held: std::sync::Arc<std::sync::Mutex<Hold>>,
}

#[derive(Default)]
struct Hold {
    on: bool,
    waiting: Vec<std::task::Waker>,
}

impl Wire {
    /// A client that talks to the API server through this wire.
    pub fn client(&self, direct: &Client) -> Client {
        let service = WireService {
            inner: direct.clone(),
            wire: self.clone(),
        };
        Client::new(service, direct.default_namespace().to_string())
    }

    /// From now on, nothing a watch of DirectoryUsers delivers reaches the client.
    pub fn hold_watches(&self) {
        self.held.lock().unwrap().on = true;
    }

    /// Deliver what the watches held back, and what comes after.
    pub fn release_watches(&self) {
        let mut held = self.held.lock().unwrap();
        held.on = false;
        for waker in held.waiting.drain(..) {
            waker.wake();
        }
    }

    /// Forget the requests sent so far.
    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }

    /// The requests about DirectoryUsers sent since the last [`Wire::clear`], as
    /// `METHOD path?query`.
    pub fn user_requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("/directoryusers"))
            .cloned()
            .collect()
    }

    /// The lists of DirectoryUsers among them (a GET of the collection that is not a watch).
    pub fn user_lists(&self) -> Vec<String> {
        self.user_requests()
            .into_iter()
            .filter(|r| {
                let (path, query) = r.split_once('?').unwrap_or((r, ""));
                path.starts_with("GET ")
                    && path.ends_with("/directoryusers")
                    && !query.split('&').any(|q| q == "watch=true")
            })
            .collect()
    }

    /// The watches of DirectoryUsers among them.
    pub fn user_watches(&self) -> Vec<String> {
        self.user_requests()
            .into_iter()
            .filter(|r| r.starts_with("GET ") && r.contains("watch=true"))
            .collect()
    }

    /// The writes of DirectoryUsers among them.
    pub fn user_writes(&self) -> Vec<String> {
        self.user_requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }
}

/// Records each request, then sends it through the direct client.
struct WireService {
    inner: Client,
    wire: Wire,
}

impl tower::Service<http::Request<kube::client::Body>> for WireService {
    type Response = http::Response<HeldBody>;
    type Error = kube::Error;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let line = format!(
            "{} {}",
            request.method(),
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("")
        );
        let watch = line.contains("/directoryusers") && line.contains("watch=true");
        self.wire.requests.lock().unwrap().push(line);
        let inner = self.inner.clone();
        let held = watch.then(|| self.wire.held.clone());
        Box::pin(async move {
            let response = inner.send(request).await?;
            Ok(response.map(|body| HeldBody { body, held }))
        })
    }
}

/// A response body that a [`Wire`] may hold back (a watch's).
struct HeldBody {
    body: kube::client::Body,
    held: Option<std::sync::Arc<std::sync::Mutex<Hold>>>,
}

impl http_body::Body for HeldBody {
    type Data = bytes::Bytes;
    type Error = kube::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Some(held) = &self.held {
            let mut held = held.lock().unwrap();
            if held.on {
                held.waiting.push(cx.waker().clone());
                return std::task::Poll::Pending;
            }
        }
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }
}
