//! Pure lifecycle logic: the rules of DESIGN sections 2–4 as functions of plain
//! values. Nothing here knows Kubernetes, LDAP or HTTP, and nothing reads the
//! clock: every time-based rule takes `now` as a parameter, so each one is
//! tested without waiting.
//!
//! - [`duration`]: the API's durations (`30s`, `45d`, `1h30m`) and their pattern;
//! - [`attributes`]: a user's extra attributes, compact;
//! - [`model`]: the planner's inputs — records, the directory view, mapping, policy;
//! - [`gate`]: the connector check before any delete;
//! - [`health`]: Ready, Reconciling or Stalled, as GitOps tools read an object;
//! - [`ownership`]: which mapping owns a user, and the lookups that decide it;
//! - [`naming`]: stable record names from connector and anchor;
//! - [`retention`]: when a preserved user is due for deletion;
//! - [`safety`]: thresholds and approvals;
//! - [`plan`](mod@plan): snapshot + view + policy + now → ordered transitions;
//! - [`apply`](mod@apply): a plan applied to a snapshot, in memory;
//! - [`schedule`]: interval and on-demand runs.

pub mod apply;
pub mod attributes;
pub mod duration;
pub mod gate;
pub mod health;
pub mod model;
pub mod naming;
pub mod ownership;
pub mod plan;
pub mod reads;
pub mod retention;
pub mod safety;
pub mod schedule;

#[cfg(test)]
pub(crate) mod testkit;

pub use apply::apply;
pub use attributes::Attributes;
pub use duration::{ApiDuration, DURATION_PATTERN, DurationError, format_duration, parse_duration};
pub use gate::{ConnectorGate, GateRefusal};
pub use model::{
    Claim, DirectoryEntry, DirectoryView, MappingContext, Origin, OtherClaims, Policy, ReadKind,
    Reason, State, UserFields, UserRecord,
};
pub use naming::record_name;
pub use ownership::{claim_lookups_needed, owner};
pub use plan::{
    Blocked, Collision, CollisionField, Notice, Plan, PlanCounts, PlanFailure, PlanInput,
    PlanOutcome, Skip, SkipCause, Transition, TransitionKind, plan, tally,
};
pub use reads::{anchors_in_scope, full_read_needed};
pub use retention::{deletion_deadline, orphan_deletions, retention_due};
pub use safety::{
    Approval, ThresholdBreach, ThresholdVerdict, allowed_preserves, check_thresholds,
};
pub use schedule::{
    FIRST_RETRY, OnDemand, is_due, next_run, on_demand, requeue_after, run_spacing,
};
