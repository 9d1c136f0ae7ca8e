//! End-to-end tests against a real kube-apiserver (tests/cluster.sh) and real
//! directories (tests/slapd.sh, tests/samba.sh), with the operator in-process.

#[path = "../argocd_support/mod.rs"]
mod argocd_support;
#[path = "../graph_emulator/mod.rs"]
mod graph_emulator;
#[path = "../ldap_support/mod.rs"]
mod ldap_support;
#[path = "../pg_support/mod.rs"]
mod pg_support;
// It loads the TLS helpers the Graph emulator loads too.
#[allow(clippy::duplicate_mod)]
#[path = "../scim_support/mod.rs"]
mod scim_support;
mod support;
mod world;

mod ad;
mod admin_actions;
mod admission;
mod approvals;
mod bounds;
mod cli;
mod conditions;
mod credentials;
mod delivery;
mod entra;
mod health;
mod lifecycle;
mod membership;
mod operations;
mod postgres;
mod push;
mod readiness;
mod warm;
