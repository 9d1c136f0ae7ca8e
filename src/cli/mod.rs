//! The admin's commands: `sync`, `approve`, `plan`, `explain`, `import-csv`, `users`, `preserve` and
//! `unpreserve`. Each is a thin layer over the library, so what the CLI shows is
//! what the operator does.

pub mod approve;
pub mod explain;
pub mod import_csv;
pub mod plan;
pub mod sync;
pub mod target;
pub mod users;

/// Who runs a command, for the audit log of the PostgreSQL store.
pub(crate) fn whoami() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown user".into())
}
