//! Whether an object's settings and references resolve, with a reason and a message
//! a person can act on; an object that does not resolve is not `Ready`.

use kube::Api;

use super::error::Result;
use super::resolve::checked_reference;
use crate::api::{
    ConnectorHealth, DirectoryMapping, SyncPolicy, SyncPolicySpec, condition_is_true,
    find_condition,
};

/// The `Ready` condition's type.
pub const READY: &str = "Ready";
/// A connector's condition: its settings and Secrets resolve (mappings can run).
pub const RESOLVED: &str = "Resolved";

/// The outcome of resolving an object's references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Whether everything resolved.
    pub ready: bool,
    /// A fixed, CamelCase reason (never built from error text).
    pub reason: &'static str,
    /// What was found and what to do about it.
    pub message: String,
}

impl Readiness {
    fn ok(message: String) -> Self {
        Self {
            ready: true,
            reason: "Resolved",
            message,
        }
    }
    /// What keeps it from resolving, if anything does.
    pub fn problem(&self) -> Option<crate::core::health::Problem<'_>> {
        (!self.ready).then_some(crate::core::health::Problem {
            reason: self.reason,
            message: &self.message,
        })
    }
    fn not(reason: &'static str, message: String) -> Self {
        Self {
            ready: false,
            reason,
            message,
        }
    }
}

/// Check the durations of a policy; the CRD already refuses bad ones, this catches
/// objects written before the CRD had the rule.
pub fn policy_readiness(spec: &SyncPolicySpec) -> Readiness {
    use crate::core::duration::{
        MIN_DELETE_AFTER, MIN_FULL_SYNC_INTERVAL, MIN_INTERVAL, check_minimum,
    };
    for (field, value, min) in [
        ("spec.interval", &spec.interval, MIN_INTERVAL),
        (
            "spec.fullSyncInterval",
            &spec.full_sync_interval,
            MIN_FULL_SYNC_INTERVAL,
        ),
        (
            "spec.preservation.deleteAfter",
            &spec.preservation.delete_after,
            MIN_DELETE_AFTER,
        ),
    ] {
        // Objects stored before the CRD had the minimums reach the operator too.
        if let Err(e) = check_minimum(field, value, min) {
            return Readiness::not("InvalidSpec", e);
        }
    }
    Readiness::ok(format!(
        "interval {}, deleteAfter {}",
        spec.interval, spec.preservation.delete_after
    ))
}

/// Resolve a mapping's policy and connector, and check that its scope fits the connector.
pub async fn mapping_readiness(
    policies: &Api<SyncPolicy>,
    connectors: &Api<ConnectorHealth>,
    mapping: &DirectoryMapping,
) -> Result<Resolution> {
    if let Err(e) = checked_reference("spec.policyRef", &mapping.spec.policy_ref) {
        return Ok(Resolution::not(Readiness::not("InvalidSpec", e)));
    }
    let policy = match policies.get_opt(&mapping.spec.policy_ref).await {
        Ok(policy) => policy,
        Err(kube::Error::SerdeError(e)) => {
            let message = format!(
                "SyncPolicy {:?} cannot be read: {e}",
                mapping.spec.policy_ref
            );
            return Ok(Resolution::not(Readiness::not("PolicyInvalid", message)));
        }
        Err(e) => return Err(e.into()),
    };
    let spec = &mapping.spec;
    if let Err(e) = checked_reference("spec.connectorRef", &spec.connector_ref) {
        return Ok(Resolution {
            policy,
            ..Resolution::not(Readiness::not("InvalidSpec", e))
        });
    }
    let connector = match connectors.get_opt(&spec.connector_ref).await {
        Ok(connector) => connector,
        Err(kube::Error::SerdeError(e)) => {
            let message = format!(
                "ConnectorHealth {:?} cannot be read: {e}",
                spec.connector_ref
            );
            return Ok(Resolution {
                policy,
                ..Resolution::not(Readiness::not("ConnectorInvalid", message))
            });
        }
        Err(e) => return Err(e.into()),
    };
    let readiness = mapping_readiness_with(mapping, policy.as_ref(), connector.as_ref());
    Ok(Resolution {
        readiness,
        policy,
        connector,
    })
}

/// A mapping's references, and whether they let it run.
pub struct Resolution {
    pub readiness: Readiness,
    pub policy: Option<SyncPolicy>,
    pub connector: Option<ConnectorHealth>,
}

impl Resolution {
    fn not(readiness: Readiness) -> Self {
        Self {
            readiness,
            policy: None,
            connector: None,
        }
    }
}

fn mapping_readiness_with(
    mapping: &DirectoryMapping,
    policy: Option<&SyncPolicy>,
    connector: Option<&ConnectorHealth>,
) -> Readiness {
    let spec = &mapping.spec;
    let Some(policy) = policy else {
        return Readiness::not(
            "PolicyNotFound",
            format!(
                "SyncPolicy {:?} not found in this namespace; create it or fix spec.policyRef",
                spec.policy_ref
            ),
        );
    };
    let policy_state = policy_readiness(&policy.spec);
    if !policy_state.ready {
        return Readiness::not(
            "PolicyInvalid",
            format!(
                "SyncPolicy {:?} is invalid: {}",
                spec.policy_ref, policy_state.message
            ),
        );
    }
    let Some(connector) = connector else {
        return Readiness::not(
            "ConnectorNotFound",
            format!(
                "ConnectorHealth {:?} not found in this namespace; create it or fix spec.connectorRef",
                spec.connector_ref
            ),
        );
    };
    match (
        &connector.spec.ldap,
        &connector.spec.entra_id,
        &spec.ldap,
        &spec.entra_id,
    ) {
        (Some(_), _, None, Some(_)) => {
            return Readiness::not(
                "InvalidSpec",
                format!(
                    "spec.entraID is set but ConnectorHealth {:?} is an LDAP connector; use spec.ldap",
                    spec.connector_ref
                ),
            );
        }
        (_, Some(_), Some(_), None) => {
            return Readiness::not(
                "InvalidSpec",
                format!(
                    "spec.ldap is set but ConnectorHealth {:?} is an Entra ID connector; use spec.entraID",
                    spec.connector_ref
                ),
            );
        }
        _ => {}
    }
    let conditions = connector
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    if !condition_is_true(conditions, RESOLVED) {
        return match find_condition(conditions, RESOLVED) {
            // Carry the connector's own reason (e.g. SecretNotFound) so the fix is one step away.
            Some(c) => Readiness {
                ready: false,
                reason: connector_reason(&c.reason),
                message: format!(
                    "ConnectorHealth {:?} does not resolve: {}",
                    spec.connector_ref, c.message
                ),
            },
            None => Readiness::not(
                "ConnectorNotReady",
                format!(
                    "ConnectorHealth {:?} has not been checked yet",
                    spec.connector_ref
                ),
            ),
        };
    }
    Readiness::ok(format!(
        "policy {:?} and connector {:?} resolve",
        spec.policy_ref, spec.connector_ref
    ))
}

/// Map a connector's reason onto the fixed set a mapping reports.
fn connector_reason(reason: &str) -> &'static str {
    match reason {
        "SecretNotFound" => "SecretNotFound",
        "SecretKeyNotFound" => "SecretKeyNotFound",
        "InvalidSpec" => "ConnectorInvalid",
        _ => "ConnectorNotReady",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_below_a_minimum_stored_before_the_rule_is_invalid_spec() {
        let mut spec = policy("24h");
        spec.preservation.delete_after = "0s".into();
        let r = policy_readiness(&spec);
        assert_eq!(r.reason, "InvalidSpec");
        assert!(
            r.message.contains("deleteAfter must be at least 1h"),
            "{}",
            r.message
        );
        assert_eq!(policy_readiness(&policy("0s")).reason, "InvalidSpec");
    }

    fn policy(interval: &str) -> SyncPolicySpec {
        serde_json::from_value(serde_json::json!({"interval": interval})).unwrap()
    }

    #[test]
    fn policy_with_valid_durations_is_ready() {
        assert!(policy_readiness(&policy("24h")).ready);
    }

    #[test]
    fn policy_with_unparsable_interval_is_invalid_spec() {
        let r = policy_readiness(&policy("soon"));
        assert!(!r.ready);
        assert_eq!(r.reason, "InvalidSpec");
        assert!(r.message.contains("spec.interval"), "{}", r.message);
    }

    #[test]
    fn connector_reasons_come_from_a_fixed_set() {
        assert_eq!(connector_reason("SecretNotFound"), "SecretNotFound");
        assert_eq!(connector_reason("anything else"), "ConnectorNotReady");
    }
}
