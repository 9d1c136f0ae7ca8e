//! Downstream delivery (DESIGN section 5b): the registry's users and their
//! lifecycle, sent to applications over SCIM 2.0.
//!
//! - [`select`]: which users a target receives;
//! - [`resource`]: a user as a SCIM User resource, and its digest;
//! - [`plan`](mod@plan): desired + delivered (+ actual) → one cycle's requests;
//! - [`scim`]: the SCIM 2.0 client, the only part that does HTTP.
//!
//! All but the client are pure, like `core`.

pub mod plan;
pub mod resource;
pub mod scim;
pub mod select;
