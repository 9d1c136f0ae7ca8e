//! End-to-end tests against a real kube-apiserver (tests/cluster.sh) and real
//! directories (tests/slapd.sh, tests/samba.sh), with the operator in-process.

#[path = "../ldap_support/mod.rs"]
mod ldap_support;
mod support;
mod world;

mod admission;
mod cli;
mod lifecycle;
mod operations;
mod readiness;
