//! The `usersync` command: the operator (`run`) and the admin's tools.

use clap::{Parser, Subcommand};
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
        /// Watch only this namespace (default: all namespaces).
        #[arg(long, env = "USERSYNC_NAMESPACE")]
        namespace: Option<String>,
        /// How many mappings may sync at the same time.
        #[arg(long, env = "USERSYNC_MAX_CONCURRENT_RUNS", default_value_t = 4)]
        max_concurrent_runs: usize,
    },
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => {
            print!("{}", usersync::api::crds_yaml());
            Ok(())
        }
        Command::Run {
            namespace,
            max_concurrent_runs,
        } => {
            telemetry::init(cli.log_format, &cli.log);
            let client = kube::Client::try_default().await?;
            usersync::controller::run(
                client,
                usersync::controller::Scope {
                    namespace,
                    max_concurrent_runs,
                },
            )
            .await
        }
    }
}
