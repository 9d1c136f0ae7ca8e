//! The `usersync` command: the operator (`run`) and the admin's tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use usersync::cli;
use usersync::telemetry::{self, LogFormat};

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
    /// Show what a run of a mapping would do now, applying nothing.
    Plan {
        /// The DirectoryMapping.
        mapping: String,
        /// Its namespace (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Import users of origin CSV from a file (header: username,email,displayName,…).
    ImportCsv {
        /// The CSV file.
        file: PathBuf,
        /// The namespace to import into (default: the kubeconfig's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Check every row, with the API server too, and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
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
            print!("{}", usersync::api::crds_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            namespaces,
            max_concurrent_runs,
        } => {
            let client = kube::Client::try_default().await?;
            let scope = usersync::controller::Scope {
                namespaces,
                max_concurrent_runs,
            };
            usersync::controller::run(client, scope).await?;
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
                    println!("requested a sync of {ns}/{mapping} ({value})")
                }
                cli::sync::SyncOutcome::Refused(why) => println!("{ns}/{mapping}: {why}"),
                cli::sync::SyncOutcome::Finished(run) => {
                    println!(
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
            mapping,
            namespace,
            output,
        } => {
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            let plan = cli::plan::plan(client, &ns, &mapping).await?;
            match output {
                Output::Text => print!("{}", cli::plan::render(&plan)),
                Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::ImportCsv {
            file,
            namespace,
            dry_run,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
            let users = match cli::import_csv::parse(&text) {
                Ok(users) => users,
                Err(errors) => return Ok(report_rows(&file, &errors)),
            };
            let client = kube::Client::try_default().await?;
            let ns = namespace.unwrap_or_else(|| client.default_namespace().to_string());
            match cli::import_csv::import(client, &ns, &users, dry_run).await? {
                Ok(_) if dry_run => println!(
                    "{}: {} rows valid; nothing written (dry run)",
                    file.display(),
                    users.len()
                ),
                Ok(report) => println!(
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
