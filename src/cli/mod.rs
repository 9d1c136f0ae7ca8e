//! The admin's commands: `sync`, `plan` and `import-csv`. Each is a thin layer over
//! the library, so what the CLI shows is what the operator does.

pub mod import_csv;
pub mod plan;
pub mod sync;
