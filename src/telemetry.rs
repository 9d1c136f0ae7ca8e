//! Logging setup: structured logs through `tracing`, as text or JSON.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Install the global subscriber. `filter` uses the `RUST_LOG` syntax (e.g. `info,usersync=debug`).
pub fn init(format: LogFormat, filter: &str) {
    // PostgreSQL's NOTICE messages (say, "relation already exists, skipping" while
    // migrating) are not news; an explicit sqlx directive in the filter still wins.
    let filter = if filter.contains("sqlx") {
        filter.to_string()
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
