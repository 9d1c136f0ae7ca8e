//! Delivery to applications over SCIM 2.0 (RFC 7643, RFC 7644): the client the
//! ProvisioningTarget controller calls, and the only code that does SCIM HTTP.
//!
//! The client reads what the application supports, matches users before it
//! creates them, and sends RFC-conformant PATCH (lowercase ops, real booleans,
//! several attributes in one operation), or PUT where PATCH is missing. It reads
//! answers in the shapes real applications send, retries throttling and
//! outages, and never puts a credential in an error, a log line or an
//! [`Exchange`].

mod client;
mod config;
mod error;
mod model;
mod token;

pub use client::{Observer, ScimClient};
pub use config::{Auth, ClientConfig};
pub use error::ScimError;
pub use model::{
    Capabilities, ENTERPRISE_USER_SCHEMA, Exchange, ListPage, MatchAttribute, PatchOp, PatchOpKind,
    RemoteUser, eq_filter, patch_body,
};
