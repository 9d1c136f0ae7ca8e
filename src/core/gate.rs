//! The connector gate: the last check before anything is deleted (rule 5).
//!
//! Deletion is the one transition that cannot be undone, so it needs fresh
//! evidence that the directory is reachable and an admin has not frozen it.
//! Imports, updates, preserves and re-enables do not pass through the gate.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::duration::format_duration;

/// A snapshot of the connector's health, taken immediately before planning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectorGate {
    /// The ConnectorHealth object exists.
    pub exists: bool,
    /// Its `Connected` condition is True.
    pub connected: bool,
    /// `status.lastSuccessTime`.
    pub last_success: Option<Timestamp>,
    /// `spec.staleAfter`.
    pub stale_after: Duration,
    /// `spec.deletionsAllowed`.
    pub deletions_allowed: bool,
}

impl ConnectorGate {
    /// The gate when no ConnectorHealth object exists: it refuses deletions.
    pub fn missing() -> Self {
        Self {
            exists: false,
            connected: false,
            last_success: None,
            stale_after: Duration::ZERO,
            deletions_allowed: false,
        }
    }

    /// Whether deletions may go ahead at `now`, and if not, why.
    ///
    /// The reasons are checked in the order an admin would fix them: a missing
    /// object, an explicit freeze, then the connection's health.
    pub fn deletions_permitted(&self, now: Timestamp) -> Result<(), GateRefusal> {
        if !self.exists {
            return Err(GateRefusal::MissingConnectorHealth);
        }
        if !self.deletions_allowed {
            return Err(GateRefusal::DeletionsFrozen);
        }
        if !self.connected {
            return Err(GateRefusal::NotConnected);
        }
        let Some(last_success) = self.last_success else {
            return Err(GateRefusal::NeverSucceeded);
        };
        // A success stamped in the future (clock skew) counts as just now.
        let age = now
            .duration_since(last_success)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if age >= self.stale_after {
            return Err(GateRefusal::Stale {
                last_success,
                age,
                limit: self.stale_after,
            });
        }
        Ok(())
    }
}

/// Why the connector gate refused deletions, in words an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GateRefusal {
    #[error("no ConnectorHealth exists for this connector, so nothing is deleted; create it")]
    MissingConnectorHealth,
    #[error("deletions are frozen on the connector (deletionsAllowed: false)")]
    DeletionsFrozen,
    #[error("the connector is not connected (its Connected condition is not True)")]
    NotConnected,
    #[error("the connector has never completed a successful probe")]
    NeverSucceeded,
    #[error(
        "the connector's last successful probe was {} ago, at {last_success}; deletions need one younger than staleAfter ({})",
        format_duration(*age),
        format_duration(*limit)
    )]
    Stale {
        last_success: Timestamp,
        age: Duration,
        limit: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-03-01T12:00:00Z".parse().unwrap()
    }

    fn healthy() -> ConnectorGate {
        ConnectorGate {
            exists: true,
            connected: true,
            last_success: Some("2025-03-01T11:59:00Z".parse().unwrap()),
            stale_after: Duration::from_secs(300),
            deletions_allowed: true,
        }
    }

    #[test]
    fn healthy_connector_permits_deletions() {
        assert_eq!(healthy().deletions_permitted(now()), Ok(()));
    }

    #[test]
    fn missing_connector_health_refuses() {
        assert_eq!(
            ConnectorGate::missing().deletions_permitted(now()),
            Err(GateRefusal::MissingConnectorHealth)
        );
    }

    #[test]
    fn disconnected_connector_refuses() {
        let gate = ConnectorGate {
            connected: false,
            ..healthy()
        };
        assert_eq!(
            gate.deletions_permitted(now()),
            Err(GateRefusal::NotConnected)
        );
    }

    #[test]
    fn frozen_connector_refuses() {
        let gate = ConnectorGate {
            deletions_allowed: false,
            ..healthy()
        };
        let refusal = gate.deletions_permitted(now()).unwrap_err();
        assert_eq!(refusal, GateRefusal::DeletionsFrozen);
        assert!(refusal.to_string().contains("deletionsAllowed: false"));
    }

    #[test]
    fn never_succeeded_connector_refuses() {
        let gate = ConnectorGate {
            last_success: None,
            ..healthy()
        };
        assert_eq!(
            gate.deletions_permitted(now()),
            Err(GateRefusal::NeverSucceeded)
        );
    }

    #[test]
    fn stale_success_refuses_with_age_and_limit() {
        let gate = ConnectorGate {
            last_success: Some("2025-03-01T11:50:00Z".parse().unwrap()),
            ..healthy()
        };
        let refusal = gate.deletions_permitted(now()).unwrap_err();
        assert!(matches!(
            refusal,
            GateRefusal::Stale { age, limit, .. }
                if age == Duration::from_secs(600) && limit == Duration::from_secs(300)
        ));
        let message = refusal.to_string();
        assert!(
            message.contains("10m ago") && message.contains("(5m)"),
            "{message}"
        );
    }

    #[test]
    fn success_exactly_stale_after_ago_is_stale() {
        let gate = ConnectorGate {
            last_success: Some("2025-03-01T11:55:00Z".parse().unwrap()),
            ..healthy()
        };
        assert!(matches!(
            gate.deletions_permitted(now()),
            Err(GateRefusal::Stale { .. })
        ));
    }

    #[test]
    fn success_stamped_in_the_future_counts_as_fresh() {
        let gate = ConnectorGate {
            last_success: Some("2025-03-01T12:01:00Z".parse().unwrap()),
            ..healthy()
        };
        assert_eq!(gate.deletions_permitted(now()), Ok(()));
    }
}
