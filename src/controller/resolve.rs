//! Resolved, validated internal forms of a mapping's policy and connector, built once
//! per run at the boundary.

use crate::api::{ConnectorHealth, DirectoryMapping, SyncPolicy, condition_is_true};
use crate::core::duration::{MIN_DELETE_AFTER, MIN_INTERVAL, check_minimum};
use crate::core::{ConnectorGate, MappingContext, Policy, parse_duration};

/// `name`, the value of the reference `field`, when it is a DNS-1123 name: only
/// then may it go into a request path (the CRD refuses others; objects stored
/// before it did reach the operator all the same).
pub fn checked_reference<'a>(field: &str, name: &'a str) -> Result<&'a str, String> {
    if crate::api::is_dns1123_subdomain(name) {
        Ok(name)
    } else {
        Err(format!(
            "{field} {name:?} is not an object name (lowercase letters, digits, '-' and '.'); fix the reference"
        ))
    }
}

/// The core's policy from a SyncPolicy.
pub fn policy_of(policy: &SyncPolicy) -> Result<Policy, String> {
    let spec = &policy.spec;
    Ok(Policy {
        auto_preserve_unmapped: spec.auto_preserve_unmapped,
        auto_delete: spec.preservation.auto_delete,
        delete_after: check_minimum(
            "spec.preservation.deleteAfter",
            &spec.preservation.delete_after,
            MIN_DELETE_AFTER,
        )?,
        max_preserve_percent: u8::try_from(spec.safety.max_preserve_percent.min(100))
            .unwrap_or(100),
        max_deletes_per_run: spec.safety.max_deletes_per_run,
        dry_run: spec.dry_run,
        delete_manually_preserved: spec.preservation.delete_manually_preserved,
    })
}

/// The interval between scheduled runs.
pub fn interval_of(policy: &SyncPolicy) -> Result<std::time::Duration, String> {
    check_minimum("spec.interval", &policy.spec.interval, MIN_INTERVAL)
}

/// The core's view of a mapping.
pub fn mapping_context(mapping: &DirectoryMapping, policy: &SyncPolicy) -> MappingContext {
    let spec = &mapping.spec;
    MappingContext {
        name: kube::ResourceExt::name_any(mapping),
        connector: spec.connector_ref.clone(),
        priority: spec.priority,
        profile: spec.profile.clone(),
        auto_import: spec.auto_import.unwrap_or(policy.spec.auto_import),
    }
}

/// The connector gate from the ConnectorHealth as it is now (`None`: it does not exist).
pub fn gate_of(connector: Option<&ConnectorHealth>) -> ConnectorGate {
    let Some(connector) = connector else {
        return ConnectorGate::missing();
    };
    let status = connector.status.clone().unwrap_or_default();
    ConnectorGate {
        exists: true,
        connected: condition_is_true(&status.conditions, "Connected"),
        last_success: status.last_success_time.map(|t| t.0),
        // An unparsable staleAfter (refused by the CRD) counts as zero: nothing is fresh enough.
        stale_after: parse_duration(&connector.spec.stale_after).unwrap_or_default(),
        deletions_allowed: connector.spec.deletions_allowed,
    }
}
