//! usersync: keeps a registry of user accounts in step with an organisation's
//! directories (Active Directory, OpenLDAP and other LDAP servers, Microsoft Entra ID).
//!
//! The crate is one library with a thin binary (`src/main.rs`):
//! - [`api`]: the custom resources, the only place they are defined;
//! - [`core`]: the lifecycle rules as pure functions, with the clock passed in;
//! - [`delivery`]: the applications that receive the users' lifecycle (SCIM 2.0);
//! - [`controller`]: the reconcilers that tie the resources to the rules.

pub mod api;
pub mod cli;
pub mod controller;
pub mod core;
pub mod delivery;
pub mod directory;
mod http;
pub mod secret;
pub mod server;
pub mod store;
pub mod telemetry;
