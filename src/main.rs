//! The `usersync` command: the operator (`run`) and the admin's tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use usersync::cli;
use usersync::telemetry::{self, LogFormat};

/// A run allocates and frees a small record per user, a hundred thousand or
/// more at a time, on several threads (entries are decoded on the connection's
/// task and dropped on the runner's). mimalloc's thread-local heaps avoid
/// glibc's arena contention, and it returns freed pages to the system, so the
/// operator's footprint between runs falls back instead of staying at the
/// largest run's peak.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keeps user accounts in step with Active Directory, LDAP and Entra ID.
#[derive(Parser)]
#[command(name = "usersync", version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "USERSYNC_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    /// Log filter, in RUST_LOG syntax.
    #[arg(long, env = "USERSYNC_LOG", default_value = "info", global = true)]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    Run {
        /// Watch only these namespaces (repeat the flag, or separate with commas); all when unset.
        #[arg(long = "namespace", env = "USERSYNC_NAMESPACE", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// How many mappings may sync at the same time.
        #[arg(long, env = "USERSYNC_MAX_CONCURRENT_RUNS", default_value_t = 4)]
        max_concurrent_runs: usize,
        /// Where to serve /metrics, /healthz and /readyz (e.g. 0.0.0.0:8080); off when unset.
        #[arg(long, env = "USERSYNC_METRICS_ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Sync only while holding a coordination.k8s.io Lease (for several replicas).
        #[arg(long, env = "USERSYNC_LEADER_ELECT")]
        leader_elect: bool,
        /// The Lease's name.
        #[arg(long, env = "USERSYNC_LEASE_NAME", default_value = "usersync")]
        lease_name: String,
        /// The Lease's namespace (default: POD_NAMESPACE, then the kubeconfig's namespace).
        #[arg(long, env = "USERSYNC_LEASE_NAMESPACE")]
        lease_namespace: Option<String>,
        /// The ClusterRole a namespace binds (with a RoleBinding) to let the operator
        /// read its Secrets; named in the condition of a connector whose namespace
        /// has not.
        #[arg(long, env = "USERSYNC_SECRET_READER_ROLE", default_value = usersync::controller::SECRET_READER_ROLE)]
        secret_reader_role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Ask for a sync of a mapping now (the on-demand annotation).
    Sync {
        /// The DirectoryMapping.
        mapping: String,
        /// Its namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Return once the request is recorded instead of waiting for the run.
        #[arg(long)]
        no_wait: bool,
        /// How long to wait for the run.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Approve the run of a mapping that a safety threshold blocked (a RunApproval in
    /// your name); it starts at once.
    Approve {
        /// The DirectoryMapping (or, with --target, the blocked cycle's id).
        mapping: String,
        /// The blocked run's id, as status and the DeletionsBlocked condition show it;
        /// refused if the mapping now waits for another run.
        run: Option<String>,
        /// Approve the blocked cycle of this ProvisioningTarget instead of a mapping's run.
        #[arg(long, conflicts_with = "run")]
        target: Option<String>,
        /// Its namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Why the run is approved, kept in the RunApproval.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show what a run of a mapping (or a cycle of a target) would do now, applying nothing.
    Plan {
        /// The DirectoryMapping.
        #[arg(required_unless_present = "target")]
        mapping: Option<String>,
        /// Show the requests the next cycle of this ProvisioningTarget would send.
        #[arg(long, conflicts_with = "mapping")]
        target: Option<String>,
        /// Its namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Import users of origin CSV from a file (header: username,email,displayName,…).
    ImportCsv {
        /// The CSV file.
        file: PathBuf,
        /// The namespace to import into (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Check every row, with the API server (or the database) too, and write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Why a user is in its state: the rule, its times, what its deletion still
    /// waits for, its mapping and connector, its history; for a user that is not
    /// imported, what each mapping's full read says about it.
    Explain {
        /// The user's record name, username or directory anchor.
        user: String,
        /// The namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users of a namespace (from either store).
    Users {
        /// The namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Deliver one user to a ProvisioningTarget now, printing each request and answer.
    Provision {
        /// The user's record name or username.
        user: String,
        /// The ProvisioningTarget.
        #[arg(long)]
        target: String,
        /// Its namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Preserve (suspend) a user by hand; sync never lifts it (`spec.preserve`).
    Preserve(PreserveArgs),
    /// Lift an admin's preserve; the next run re-enables the user if the directory allows.
    Unpreserve(PreserveArgs),
}

#[derive(clap::Args)]
struct PreserveArgs {
    /// The user's record name (NAME in `usersync users`, or the DirectoryUser's name).
    name: String,
    /// Its namespace (default: the kubeconfig's).
    #[arg(short, long)]
    namespace: Option<String>,
    #[command(flatten)]
    store: StoreArgs,
}

/// Where users are kept.
#[derive(clap::Args)]
struct StoreArgs {
    /// `kubernetes`: DirectoryUser objects; `postgres`: a PostgreSQL database whose
    /// connection string (postgres://user:password@host:5432/db?sslmode=verify-full)
    /// is read from the environment variable USERSYNC_POSTGRES_DSN, never from a flag;
    /// USERSYNC_POSTGRES_CA_FILE may name the CA bundle of the database's certificate.
    #[arg(long, env = "USERSYNC_STORE", value_enum, default_value = "kubernetes")]
    store: Store,
}

impl StoreArgs {
    /// Open the store; PostgreSQL's schema is brought up to date, waiting up to
    /// `wait` for the database to be reachable.
    async fn open(&self, wait: Duration) -> anyhow::Result<usersync::store::Backend> {
        use usersync::store::{Backend, postgres::Database};
        match self.store {
            Store::Kubernetes => Ok(Backend::Kubernetes),
            Store::Postgres => {
                let dsn = std::env::var("USERSYNC_POSTGRES_DSN").map_err(|_| {
                    anyhow::anyhow!(
                        "--store=postgres needs the connection string in USERSYNC_POSTGRES_DSN"
                    )
                })?;
                let ca = std::env::var_os("USERSYNC_POSTGRES_CA_FILE").map(PathBuf::from);
                let db = Database::open(&dsn, ca.as_deref(), wait).await?;
                tracing::info!("users are kept in PostgreSQL; the schema is up to date");
                Ok(Backend::Postgres(db))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Store {
    Kubernetes,
    Postgres,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Write to stdout like `print!`; a reader that went away (`usersync users | head`)
/// ends the command quietly instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => { emit(format_args!($($arg)*), false) };
}

/// `println!` through [`emit`].
macro_rules! outln {
    ($($arg:tt)*) => { emit(format_args!($($arg)*), true) };
}

fn emit(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_fmt(args)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    match written {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => panic!("writing to stdout failed: {e}"),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    usersync::core::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log);
    match cli.command {
        Command::Crd => {
            out!("{}", usersync::api::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            namespaces,
            max_concurrent_runs,
            metrics_addr,
            leader_elect,
            lease_name,
            lease_namespace,
            secret_reader_role,
            store,
        } => {
            let client = kube::Client::try_default().await?;
            let mut scope = usersync::controller::Scope {
                namespaces,
                max_concurrent_runs,
                secret_grant: usersync::controller::SecretGrant {
                    role: secret_reader_role,
                    account: usersync::controller::whoami(&client).await,
                },
                ..Default::default()
            };
            // The endpoints come up first: /healthz answers (and /readyz says not
            // ready) while the store is still being waited for, so that the
            // liveness probe does not restart a pod that is waiting for its
            // database.
            if let Some(addr) = metrics_addr {
                let health = usersync::server::Health {
                    metrics: scope.metrics.clone(),
                    ready: scope.ready.clone(),
                };
                tokio::spawn(async move {
                    if let Err(e) = usersync::server::serve(addr, health).await {
                        tracing::error!(error = %e, "the metrics endpoint stopped");
                    }
                });
            }
            scope.store = store.open(Duration::from_secs(120)).await?;
            if !leader_elect {
                usersync::controller::run(client, scope).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let namespace = lease_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .unwrap_or_else(|| client.default_namespace().to_string());
            let identity = std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
            let config = usersync::controller::leader::LeaseConfig {
                name: lease_name,
                namespace,
                identity,
                duration: Duration::from_secs(15),
                renew: Duration::from_secs(5),
                retry: Duration::from_secs(2),
            };
            // Ready while standing by: only the Lease holder syncs, and a standby that
            // is not ready would stall rollouts.
            scope
                .ready
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let guard = tokio::select! {
                guard = usersync::controller::leader::acquire(client.clone(), config) => guard,
                () = usersync::controller::shutdown_signal() => return Ok(ExitCode::SUCCESS),
            };
            // A shutdown signal stops the controllers gracefully and hands the Lease
            // back. A lost Lease ends the process at once: the runs in progress are
            // dropped mid-way (they may be waiting on an API server that no longer
            // answers), because another replica may already be syncing.
            // Every batch of writes asks first whether the Lease is still held.
            scope.fence = usersync::controller::Fence::from_fn(guard.holding());
            let controllers = usersync::controller::run_until(
                client,
                scope,
                usersync::controller::shutdown_signal(),
            );
            tokio::select! {
                result = controllers => result?,
                () = guard.lost() => {
                    tracing::error!("the lease is lost; exiting so that this replica restarts as a standby");
                    // Non-zero, so that the pod restarts and stands by again.
                    return Ok(ExitCode::from(1));
                }
            }
            guard.release().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            // With --target the one positional argument is the cycle's id.
            mapping,
            run: _,
            target: Some(target),
            namespace,
            reason,
        } => {
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let approved = cli::approve::approve_target(
                client,
                &ns,
                &target,
                Some(&mapping),
                reason.as_deref(),
            )
            .await?;
            let b = &approved.blocked;
            outln!(
                "approved cycle {} of {ns}/{target} as {} (RunApproval {}): it disables {} and deletes {} accounts (of {} active); it starts now",
                b.run_id,
                approved.approved_by,
                approved.approval,
                b.would_disable,
                b.would_delete,
                b.active_accounts
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            mapping,
            run,
            target: None,
            namespace,
            reason,
        } => {
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let approved =
                cli::approve::approve(client, &ns, &mapping, run.as_deref(), reason.as_deref())
                    .await?;
            let blocked = &approved.blocked;
            outln!(
                "approved run {} of {ns}/{mapping} as {} (RunApproval {}): it preserves {} and deletes {} users (of {} active); it starts now",
                blocked.run_id,
                approved.approved_by,
                approved.approval,
                blocked.would_preserve,
                blocked.would_delete,
                blocked.active_users
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync {
            mapping,
            namespace,
            no_wait,
            timeout,
        } => {
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let outcome =
                cli::sync::request_sync(client, &ns, &mapping, (!no_wait).then_some(timeout))
                    .await?;
            match &outcome {
                cli::sync::SyncOutcome::Requested(value) => {
                    outln!("requested a sync of {ns}/{mapping} ({value})")
                }
                cli::sync::SyncOutcome::Refused(why) => outln!("{ns}/{mapping}: {why}"),
                cli::sync::SyncOutcome::Finished(run) => {
                    outln!(
                        "{ns}/{mapping}: run {} {:?}: {}",
                        run.id,
                        run.result,
                        run.message.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::from(cli::sync::exit_code(&outcome) as u8))
        }
        Command::Plan {
            target: Some(target),
            namespace,
            output,
            store,
            ..
        } => {
            let backend = store.open(Duration::ZERO).await?;
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let steps = cli::target::plan(client, backend, &ns, &target).await?;
            match output {
                Output::Text => {
                    if steps.is_empty() {
                        outln!("{ns}/{target}: the next cycle has nothing to send");
                    }
                    for step in steps {
                        outln!("{step}");
                    }
                }
                Output::Json => outln!("{}", serde_json::to_string_pretty(&steps)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Provision {
            user,
            target,
            namespace,
            store,
        } => {
            let backend = store.open(Duration::ZERO).await?;
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let done = cli::target::provision(client, backend, &ns, &target, &user).await?;
            for e in &done.exchanges {
                outln!("> {} {}", e.method, e.path);
                if let Some(body) = &e.request {
                    outln!("{}", serde_json::to_string_pretty(body)?);
                }
                outln!("< {}", e.status);
                if let Some(body) = &e.response {
                    outln!("{}", serde_json::to_string_pretty(body)?);
                }
            }
            outln!("{}", done.outcome);
            Ok(ExitCode::from(u8::from(done.outcome.contains(" failed: "))))
        }
        Command::Plan { mapping: None, .. } => {
            anyhow::bail!("name a DirectoryMapping, or a ProvisioningTarget with --target")
        }
        Command::Plan {
            mapping: Some(mapping),
            namespace,
            output,
            store,
            ..
        } => {
            let backend = store.open(Duration::ZERO).await?;
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let plan = cli::plan::plan(client, &backend, &ns, &mapping).await?;
            match output {
                Output::Text => out!("{}", cli::plan::render(&plan)),
                Output::Json => outln!("{}", serde_json::to_string_pretty(&plan)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            user,
            namespace,
            output,
            store,
        } => {
            let backend = store.open(Duration::ZERO).await?;
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let now = jiff::Timestamp::now();
            let report = cli::explain::explain(&client, &backend, &ns, &user, now).await?;
            match output {
                Output::Text => out!("{}", cli::explain::render(&user, &report)),
                Output::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Users {
            namespace,
            output,
            store,
        } => {
            let backend = store.open(Duration::ZERO).await?;
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let users = cli::users::list(&client, &backend, &ns).await?;
            match output {
                Output::Text => out!("{}", cli::users::render(&users)),
                Output::Json => outln!("{}", serde_json::to_string_pretty(&users)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Preserve(args) => set_preserve(args, true).await,
        Command::Unpreserve(args) => set_preserve(args, false).await,
        Command::ImportCsv {
            file,
            namespace,
            dry_run,
            store,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let users = match cli::import_csv::parse(&text) {
                Ok(users) => users,
                Err(errors) => return Ok(report_rows(&file, &errors)),
            };
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let outcome = match store.open(Duration::ZERO).await? {
                usersync::store::Backend::Kubernetes => {
                    cli::import_csv::import(client, &ns, &users, dry_run).await?
                }
                usersync::store::Backend::Postgres(db) => {
                    cli::import_csv::import_postgres(&db, &ns, &users, dry_run).await?
                }
            };
            match outcome {
                Ok(_) if dry_run => outln!(
                    "{}: {} rows valid; nothing written (dry run)",
                    file.display(),
                    users.len()
                ),
                Ok(report) => outln!(
                    "{}: {} created, {} updated in {ns}",
                    file.display(),
                    report.created,
                    report.updated
                ),
                Err(errors) => return Ok(report_rows(&file, &errors)),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `usersync preserve` and `usersync unpreserve`.
async fn set_preserve(args: PreserveArgs, preserve: bool) -> anyhow::Result<ExitCode> {
    let backend = args.store.open(Duration::ZERO).await?;
    let client = kube::Client::try_default().await?;
    let ns = args
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    cli::users::set_preserve(&client, &backend, &ns, &args.name, preserve).await?;
    outln!(
        "{ns}/{}: {}; the next run of its mapping applies it (`usersync sync <mapping>` runs it now)",
        args.name,
        if preserve {
            "preserve requested"
        } else {
            "preserve lifted"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "usersync".into())
}

/// Print every bad row and fail; nothing was written.
fn report_rows(file: &std::path::Path, errors: &[cli::import_csv::RowError]) -> ExitCode {
    for e in errors {
        eprintln!("{}:{}: {}", file.display(), e.line, e.message);
    }
    eprintln!(
        "{}: {} bad rows; nothing was imported",
        file.display(),
        errors.len()
    );
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The arguments the shipped manifests pass must be ones the binary accepts.
    #[test]
    fn the_deployment_args_parse() {
        let manifest = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/base/deployment.yaml"
        ))
        .unwrap();
        let args: Vec<String> = manifest
            .lines()
            .skip_while(|l| !l.trim_start().starts_with("args:"))
            .skip(1)
            .take_while(|l| l.trim_start().starts_with("- "))
            .map(|l| {
                l.trim_start()
                    .trim_start_matches("- ")
                    .trim_matches('"')
                    .replace("$(POD_NAMESPACE)", "usersync-system")
            })
            .collect();
        assert!(args.len() > 3, "{args:?}");
        let cli = Cli::try_parse_from(std::iter::once("usersync".to_string()).chain(args.clone()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert!(matches!(
            cli.command,
            Command::Run {
                leader_elect: true,
                ..
            }
        ));
    }
}
