//! Types shared by several resources.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The API group of every usersync resource.
pub const GROUP: &str = "usersync.dev";
/// The one API version served so far.
pub const VERSION: &str = "v1alpha1";

/// Durations in the API are Go-style plus days (`30s`, `15m`, `24h`, `45d`, `1h30m`); the
/// CRD checks them with the same pattern the core's parser accepts.
pub use crate::core::duration::DURATION_PATTERN;

/// The CEL rule that a duration field carries; `field` names it in the message.
pub(crate) fn duration_rule(field: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.matches('{DURATION_PATTERN}')")).message(kube::core::Message::Message(format!(
        "{field} must be a duration such as 30s, 15m, 24h or 45d (digits followed by ms, s, m, h or d)"
    )))
}

/// A reference to one key of a Secret in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the object that refers to it.
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0").message("secret name must not be empty"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key within the Secret's data whose value is used.
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0").message("secret key must not be empty"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// The condition of the given type in a condition list, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Build a condition, keeping `lastTransitionTime` from `previous` when the status
/// did not change (the Kubernetes convention: the time marks a transition, not a write).
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    previous: Option<&Condition>,
    now: jiff::Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    }
}

/// Put a condition into a list in place of the one of its type (keeping that one's
/// `lastTransitionTime` when the status holds), in a stable order by type.
#[allow(clippy::too_many_arguments)]
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let new = condition(
        type_,
        status,
        reason,
        message,
        observed_generation,
        find_condition(conditions, type_),
        now,
    );
    conditions.retain(|c| c.type_ != type_);
    conditions.push(new);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}
