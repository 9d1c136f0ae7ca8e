//! Microsoft Entra ID, read through Microsoft Graph with an app-only token.
//!
//! - [`cloud`]: the national clouds and their login and Graph hosts;
//! - [`settings`]: the plain, validated settings and scope types;
//! - [`user`]: one Graph user → a [`DirectoryEntry`](crate::core::DirectoryEntry);
//! - [`source`]: [`GraphSource`] — probe, full read and lookup;
//! - [`delta`]: incremental reads with the delta query, and [`DeltaOutcome`];
//! - [`membership`]: the groups delta that brings membership changes to them;
//! - [`error`]: [`GraphError`] and its condition reasons;
//! - `transport`, `token`, `assertion`, `api`, `query` (internal): HTTP with
//!   retries and backoff, the token cache, certificate client assertions,
//!   authenticated requests and paging, and URL building.
//!
//! The app registration needs the application permissions `User.Read.All`,
//! and `GroupMember.Read.All` for mappings scoped by groups.

mod api;
mod assertion;
pub mod cloud;
pub mod delta;
pub mod error;
pub mod membership;
mod query;
pub mod settings;
pub mod source;
mod token;
mod transport;
pub mod user;

pub use cloud::Cloud;
pub use delta::{DeltaLink, DeltaOutcome};
pub use error::{GraphError, Permission, REASONS};
pub use settings::{
    Credential, DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_READ_BUDGET, DEFAULT_TIMEOUT, Endpoints,
    GraphAttributes, GraphScope, GraphSettings, RetryPolicy,
};
pub use source::{CONCURRENCY, GraphRead, GraphSource, ProbeReport};
pub use token::{TokenCache, TokenFingerprint};
pub use transport::Throttling;
