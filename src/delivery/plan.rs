//! The desired/delivered diff of one ProvisioningTarget cycle (DESIGN section 5b),
//! as a pure function: what each user should be in the application (from the
//! registry), what was last delivered (the ledger), and, on a full reconcile, what
//! the application holds, become the ordered requests of one cycle.
//!
//! The rules:
//! - an Active user is created (matched first, by the executor) or updated; a user
//!   that was disabled is re-enabled on the same account, never re-created;
//! - a Preserved user, a user the target no longer selects and a user that left
//!   the registry are disabled, and a Deleted one is deleted only with
//!   `deprovision: Delete`; with `None` nothing is sent;
//! - only accounts in the ledger (created or adopted by this target) are touched;
//! - updates, renames among them, come before creates, so a reused `userName`
//!   never collides with its previous holder; disables and deletes come last;
//! - disables and deletes over the thresholds are withheld, all of them, until
//!   an admin approves that very set of steps (by its fingerprint); an approved
//!   step that failed carries the approval in its entry, and its retries are
//!   sent without counting against the thresholds again;
//! - a user whose last attempt failed waits for its back-off.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::core::{State, UserRecord, allowed_preserves};

/// What deprovisioning does (`spec.deprovision`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deprovision {
    Disable,
    Delete,
    Leave,
}

/// What was last delivered of a user: the ledger's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveredState {
    /// The account exists and was last set active.
    Provisioned,
    /// The account exists and was last set inactive.
    Disabled,
    /// This target deleted the account.
    Deleted,
}

impl DeliveredState {
    /// The API's spelling, as in `status.deliveries[].state`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveredState::Provisioned => "Provisioned",
            DeliveredState::Disabled => "Disabled",
            DeliveredState::Deleted => "Deleted",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "Provisioned" => DeliveredState::Provisioned,
            "Disabled" => DeliveredState::Disabled,
            "Deleted" => DeliveredState::Deleted,
            _ => return None,
        })
    }
}

/// One user's entry in a target's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The account's id in the application, once created or adopted.
    pub remote_id: Option<String>,
    /// What was last delivered successfully; `None` before the first success.
    pub state: Option<DeliveredState>,
    /// [`super::resource::digest`] of the attributes last delivered.
    pub digest: String,
    pub time: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Failed attempts in a row.
    pub failures: u32,
    pub retry_after: Option<Timestamp>,
    /// The blocked cycle whose approval covered this user's disable or delete,
    /// while that step has not succeeded: its retries need no new approval.
    pub approved: Option<String>,
}

/// What a user should be in the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Active,
    Disabled,
    Gone,
    /// Deprovision None: whatever the account is, it is left so.
    Leave,
}

/// What `record` (or a user gone from the registry, `None`) should be in the
/// application.
pub fn want(record: Option<&UserRecord>, selected: bool, deprovision: Deprovision) -> Want {
    let off = match deprovision {
        Deprovision::Leave => Want::Leave,
        _ => Want::Disabled,
    };
    match record.map(|r| r.state) {
        Some(State::Active) if selected => Want::Active,
        Some(State::Deleted) if deprovision == Deprovision::Delete => Want::Gone,
        _ => off,
    }
}

/// One user as the planner sees it.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The record's name in the registry.
    pub name: String,
    pub want: Want,
    /// The SCIM resource the registry wants ([`super::resource::resource`]).
    pub resource: Value,
    /// Its digest.
    pub digest: String,
    /// The value of the match attribute in `resource`.
    pub match_value: Option<String>,
    pub delivered: Option<Delivered>,
}

/// An account as a full reconcile read it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// `None` when the application does not say.
    pub active: Option<bool>,
    /// The value of the match attribute the application holds.
    pub match_value: Option<String>,
}

/// One request of a cycle (or, for `Forget`, a ledger change alone).
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Change an existing account's attributes; with `enable`, also set it active.
    Update {
        name: String,
        remote_id: String,
        resource: Value,
        digest: String,
        enable: bool,
    },
    /// Find the account by the match attribute and adopt it, or create it.
    Create {
        name: String,
        resource: Value,
        digest: String,
        match_value: String,
    },
    Disable {
        name: String,
        remote_id: String,
    },
    Delete {
        name: String,
        remote_id: String,
    },
    /// The application no longer has the account and none is wanted: drop it
    /// from the ledger.
    Forget {
        name: String,
    },
}

impl Step {
    pub fn name(&self) -> &str {
        match self {
            Step::Update { name, .. }
            | Step::Create { name, .. }
            | Step::Disable { name, .. }
            | Step::Delete { name, .. }
            | Step::Forget { name } => name,
        }
    }

    /// Steps of one phase are independent; a phase starts when the previous ended.
    pub fn phase(&self) -> u8 {
        match self {
            Step::Update { .. } | Step::Forget { .. } => 0,
            Step::Create { .. } => 1,
            Step::Disable { .. } => 2,
            Step::Delete { .. } => 3,
        }
    }

    fn withheld_by_thresholds(&self) -> bool {
        matches!(self, Step::Disable { .. } | Step::Delete { .. })
    }

    /// What a user's entry keeps when blocked cycle `cycle`'s approval covered
    /// this step and it is to be sent again: the step's kind and the cycle, so
    /// only a retry of that kind counts as approved. `None` for a step the
    /// thresholds never withhold.
    pub fn approval_marker(&self, cycle: &str) -> Option<String> {
        match self {
            Step::Disable { .. } => Some(format!("disable:{cycle}")),
            Step::Delete { .. } => Some(format!("delete:{cycle}")),
            _ => None,
        }
    }

    /// Whether an entry's approval marker covers this step.
    fn approved_by(&self, marker: &str) -> bool {
        self.approval_marker("")
            .is_some_and(|kind| marker.starts_with(kind.as_str()))
    }
}

/// The numbers of a cycle the thresholds stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    pub would_disable: usize,
    pub would_delete: usize,
    /// Accounts delivered active before the cycle.
    pub active: usize,
    pub allowed_disables: usize,
    pub max_deletes: u32,
    /// A fingerprint of the withheld steps (which users, which request).
    pub digest: String,
}

impl std::fmt::Display for Blocked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the cycle would disable {} of {} active accounts (limit {}) and delete {} (limit {})",
            self.would_disable,
            self.active,
            self.allowed_disables,
            self.would_delete,
            self.max_deletes
        )
    }
}

/// The settings a cycle plans with.
#[derive(Clone, Debug)]
pub struct Settings<'a> {
    pub max_disable_percent: u8,
    pub max_deletes: u32,
    pub now: Timestamp,
    /// The fingerprint ([`Blocked::digest`]) of the blocked cycle an admin
    /// approved, if one: the same withheld steps are sent, any other set waits.
    pub approved: Option<&'a str>,
}

/// One cycle's plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The steps to take, by phase.
    pub steps: Vec<Step>,
    /// Disables and deletes the thresholds withheld.
    pub withheld: Vec<Step>,
    pub blocked: Option<Blocked>,
    /// Users waiting for their back-off after a failure.
    pub deferred: usize,
    /// Users that cannot be delivered, and why (for their ledger entry).
    pub invalid: Vec<(String, String)>,
    /// Whether the thresholds withheld the disables and deletes and the
    /// approval let them through.
    pub approved: bool,
    /// Users wanted active whose entry still keeps an approval: it is spent, and
    /// their entry drops it.
    pub unapproved: Vec<String>,
}

/// The cycle's plan. `actual` is the application's accounts by id, on a full
/// reconcile only; there, an account of the ledger that the application no longer
/// has is created again (when wanted) or forgotten.
pub fn plan(entries: &[Entry], actual: Option<&HashMap<String, Remote>>, s: &Settings<'_>) -> Plan {
    let mut out = Plan::default();
    let mut active = 0;
    let holders = holders(entries);
    let mut retries = HashMap::new();
    for e in entries {
        let d = e.delivered.as_ref();
        let state = d.and_then(|d| d.state);
        if let Some(marker) = d.and_then(|d| d.approved.as_deref()) {
            if e.want == Want::Active {
                out.unapproved.push(e.name.clone());
            } else {
                retries.insert(e.name.as_str(), marker);
            }
        }
        if state == Some(DeliveredState::Provisioned) {
            active += 1;
        }
        if d.and_then(|d| d.retry_after).is_some_and(|at| at > s.now) {
            out.deferred += 1;
            continue;
        }
        let remote_id = d.and_then(|d| d.remote_id.clone());
        let remote = match (&remote_id, actual) {
            (Some(id), Some(actual)) => Some(actual.get(id)),
            _ => None,
        };
        let name = e.name.clone();
        // The account is gone from the application (a full reconcile says so).
        if remote == Some(None) && state != Some(DeliveredState::Deleted) {
            match e.want {
                Want::Active => create(e, &holders, &mut out),
                _ => out.steps.push(Step::Forget { name }),
            }
            continue;
        }
        let seen = remote.flatten();
        match (e.want, remote_id, state) {
            (_, Some(_), Some(DeliveredState::Deleted)) => {}
            (Want::Active, None, _) | (Want::Active, Some(_), None) => {
                create(e, &holders, &mut out)
            }
            (Want::Active, Some(remote_id), Some(state)) => {
                let disabled_there = seen.is_some_and(|r| r.active == Some(false));
                let drifted = disabled_there
                    || seen.is_some_and(|r| r.match_value.as_deref() != e.match_value.as_deref());
                let enable = state != DeliveredState::Provisioned || disabled_there;
                let changed = d.is_some_and(|d| d.digest != e.digest);
                if enable || changed || drifted {
                    out.steps.push(Step::Update {
                        name,
                        remote_id,
                        resource: e.resource.clone(),
                        digest: e.digest.clone(),
                        enable,
                    });
                }
            }
            (Want::Disabled, Some(remote_id), Some(state)) => {
                let enabled_there = seen.is_some_and(|r| r.active == Some(true));
                if state == DeliveredState::Provisioned || enabled_there {
                    out.steps.push(Step::Disable { name, remote_id });
                }
            }
            (Want::Gone, Some(remote_id), Some(_)) => {
                out.steps.push(Step::Delete { name, remote_id });
            }
            // Nothing delivered and nothing wanted: a failure recorded earlier (a
            // create that never succeeded) is cleared.
            (Want::Disabled | Want::Gone | Want::Leave, None, _) => {
                if d.is_some_and(|d| d.failures > 0 || d.last_error.is_some()) {
                    out.steps.push(Step::Forget { name });
                }
            }
            (Want::Disabled | Want::Gone, Some(_), None) | (Want::Leave, Some(_), _) => {}
        }
    }
    out.steps.sort_by_key(Step::phase);
    thresholds(&mut out, active, &retries, s);
    out
}

/// Which users hold each match value: those the registry wants active, and those
/// whose account exists in the application (even disabled). A value held twice
/// cannot identify one account.
fn holders(entries: &[Entry]) -> HashMap<&str, Vec<&str>> {
    let mut by_value: HashMap<&str, Vec<&str>> = HashMap::new();
    for e in entries {
        let has_account = e
            .delivered
            .as_ref()
            .is_some_and(|d| d.remote_id.is_some() && d.state != Some(DeliveredState::Deleted));
        if let Some(v) = e.match_value.as_deref()
            && (e.want == Want::Active || has_account)
        {
            by_value.entry(v).or_default().push(&e.name);
        }
    }
    by_value
}

fn create(e: &Entry, holders: &HashMap<&str, Vec<&str>>, out: &mut Plan) {
    if let Some(other) = e
        .match_value
        .as_deref()
        .and_then(|v| holders.get(v))
        .and_then(|names| names.iter().find(|n| **n != e.name))
    {
        out.invalid.push((
            e.name.clone(),
            format!(
                "another user of this target, {other}, has the same match value {:?}; the account is not shared: it is created when the other user is renamed or its account deleted",
                e.match_value.as_deref().unwrap_or_default()
            ),
        ));
        return;
    }
    match &e.match_value {
        Some(value) if !value.is_empty() => out.steps.push(Step::Create {
            name: e.name.clone(),
            resource: e.resource.clone(),
            digest: e.digest.clone(),
            match_value: value.clone(),
        }),
        _ => out.invalid.push((
            e.name.clone(),
            "the user has no value for the match attribute (or for userName): nothing identifies its account; map a field that the user has".into(),
        )),
    }
}

/// Withhold the disables and deletes past the thresholds, but for `retries`:
/// users whose step an approval already covered.
fn thresholds(out: &mut Plan, active: usize, retries: &HashMap<&str, &str>, s: &Settings<'_>) {
    let counted = |st: &Step| {
        st.withheld_by_thresholds()
            && !retries
                .get(st.name())
                .is_some_and(|marker| st.approved_by(marker))
    };
    let would_disable = out
        .steps
        .iter()
        .filter(|st| counted(st) && matches!(st, Step::Disable { .. }))
        .count();
    let would_delete = out
        .steps
        .iter()
        .filter(|st| counted(st) && matches!(st, Step::Delete { .. }))
        .count();
    let allowed_disables = allowed_preserves(active, s.max_disable_percent);
    let over = would_disable > allowed_disables || would_delete > s.max_deletes as usize;
    if !over {
        return;
    }
    let (withheld, steps): (Vec<Step>, Vec<Step>) = std::mem::take(&mut out.steps)
        .into_iter()
        .partition(counted);
    let digest = withheld_digest(&withheld);
    if s.approved == Some(digest.as_str()) {
        // Approved as they are: sent in their phases, as if never withheld.
        out.steps = steps;
        out.steps.extend(withheld);
        out.steps.sort_by_key(Step::phase);
        out.approved = true;
        return;
    }
    out.steps = steps;
    out.withheld = withheld;
    out.blocked = Some(Blocked {
        would_disable,
        would_delete,
        active,
        allowed_disables,
        max_deletes: s.max_deletes,
        digest,
    });
}

fn withheld_digest(steps: &[Step]) -> String {
    let mut lines: Vec<String> = steps
        .iter()
        .map(|st| format!("{}:{}", st.phase(), st.name()))
        .collect();
    lines.sort();
    let hash = Sha256::digest(lines.join("\n").as_bytes());
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The first retry after a failure, doubled with each failure in a row.
pub const FIRST_RETRY: Duration = Duration::from_secs(30);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(3600);

/// When the next attempt is due after `failures` failures in a row: 30 s doubling
/// up to an hour, spread by up to a tenth (from the user's name, so replicas and
/// restarts agree) so that users failing together are not retried together.
pub fn retry_after(now: Timestamp, failures: u32, name: &str) -> Timestamp {
    let doubled = FIRST_RETRY
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(MAX_RETRY);
    let spread = u64::from(Sha256::digest(name.as_bytes())[0]) * doubled.as_millis() as u64 / 2550;
    let wait = doubled + Duration::from_millis(spread);
    now + jiff::SignedDuration::try_from(wait).expect("an hour and a bit fits")
}

/// Accounts of a ledger by delivered state, and the users whose last attempt failed.
pub fn counts<'a>(ledger: impl IntoIterator<Item = &'a Delivered>) -> BTreeMap<&'static str, u32> {
    let mut counts = BTreeMap::from([
        ("Provisioned", 0),
        ("Disabled", 0),
        ("Deleted", 0),
        ("Failed", 0),
    ]);
    for d in ledger {
        if let Some(state) = d.state {
            *counts.entry(state.as_str()).or_default() += 1;
        }
        if d.failures > 0 {
            *counts.entry("Failed").or_default() += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit::{self, MAPPING, t};
    use crate::core::{Reason, UserRecord};
    use serde_json::json;

    fn now() -> Timestamp {
        t(100)
    }

    fn settings() -> Settings<'static> {
        Settings {
            max_disable_percent: 100,
            max_deletes: 100,
            now: now(),
            approved: None,
        }
    }

    fn entry(name: &str, want: Want, delivered: Option<Delivered>) -> Entry {
        let resource = json!({"userName": name});
        Entry {
            name: name.into(),
            want,
            digest: super::super::resource::digest(&resource),
            resource,
            match_value: Some(name.into()),
            delivered,
        }
    }

    fn delivered(id: &str, state: DeliveredState, of: &str) -> Delivered {
        Delivered {
            remote_id: Some(id.into()),
            state: Some(state),
            digest: super::super::resource::digest(&json!({"userName": of})),
            ..Default::default()
        }
    }

    fn kinds(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| {
                let kind = match s {
                    Step::Update { enable: true, .. } => "enable",
                    Step::Update { .. } => "update",
                    Step::Create { .. } => "create",
                    Step::Disable { .. } => "disable",
                    Step::Delete { .. } => "delete",
                    Step::Forget { .. } => "forget",
                };
                format!("{kind} {}", s.name())
            })
            .collect()
    }

    #[test]
    fn lifecycle_states_map_to_what_the_application_gets() {
        let active = testkit::active("a", MAPPING);
        let preserved = testkit::preserved("a", MAPPING, Reason::DisabledInDirectory, t(1));
        let deleted = testkit::deleted("a", MAPPING, t(1));
        use Deprovision::*;
        for (record, selected, dep, expected) in [
            (Some(&active), true, Disable, Want::Active),
            (Some(&active), false, Disable, Want::Disabled),
            (Some(&active), false, Leave, Want::Leave),
            (Some(&preserved), true, Disable, Want::Disabled),
            (Some(&preserved), true, Delete, Want::Disabled),
            (Some(&preserved), true, Leave, Want::Leave),
            (Some(&deleted), true, Disable, Want::Disabled),
            (Some(&deleted), true, Delete, Want::Gone),
            (Some(&deleted), false, Delete, Want::Gone),
            (Some(&deleted), true, Leave, Want::Leave),
            (None::<&UserRecord>, false, Disable, Want::Disabled),
            (None, false, Delete, Want::Disabled),
        ] {
            assert_eq!(
                want(record, selected, dep),
                expected,
                "{:?} {selected} {dep:?}",
                record.map(|r| r.state)
            );
        }
    }

    #[test]
    fn an_unchanged_user_costs_no_request() {
        let e = entry(
            "bob",
            Want::Active,
            Some(delivered("1", DeliveredState::Provisioned, "bob")),
        );
        let p = plan(&[e], None, &settings());
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn a_new_user_is_created_and_a_changed_one_updated() {
        let p = plan(
            &[
                entry("new", Want::Active, None),
                entry(
                    "bob",
                    Want::Active,
                    Some(delivered("1", DeliveredState::Provisioned, "robert")),
                ),
            ],
            None,
            &settings(),
        );
        assert_eq!(kinds(&p.steps), ["update bob", "create new"]);
    }

    #[test]
    fn re_enable_is_an_update_of_the_same_account_never_a_create() {
        let p = plan(
            &[entry(
                "bob",
                Want::Active,
                Some(delivered("7", DeliveredState::Disabled, "bob")),
            )],
            None,
            &settings(),
        );
        assert!(
            matches!(&p.steps[..], [Step::Update { remote_id, enable: true, .. }] if remote_id == "7"),
            "{:?}",
            p.steps
        );
    }

    #[test]
    fn renames_apply_before_creates_so_a_reused_user_name_never_collides() {
        // "bob" became "bob.old", and a new user takes "bob" in the same cycle.
        let mut renamed = entry(
            "bob.old",
            Want::Active,
            Some(delivered("1", DeliveredState::Provisioned, "bob")),
        );
        renamed.name = "user-1".into();
        let mut newcomer = entry("bob", Want::Active, None);
        newcomer.name = "user-2".into();
        let p = plan(&[newcomer, renamed], None, &settings());
        assert_eq!(kinds(&p.steps), ["update user-1", "create user-2"]);
    }

    #[test]
    fn preserved_deleted_and_deselected_users_follow_deprovision() {
        let p = plan(
            &[
                entry(
                    "p",
                    Want::Disabled,
                    Some(delivered("1", DeliveredState::Provisioned, "p")),
                ),
                entry(
                    "already",
                    Want::Disabled,
                    Some(delivered("2", DeliveredState::Disabled, "already")),
                ),
                entry(
                    "gone",
                    Want::Gone,
                    Some(delivered("3", DeliveredState::Disabled, "gone")),
                ),
                entry(
                    "done",
                    Want::Gone,
                    Some(delivered("4", DeliveredState::Deleted, "done")),
                ),
                entry(
                    "left",
                    Want::Leave,
                    Some(delivered("5", DeliveredState::Provisioned, "left")),
                ),
                entry("never", Want::Disabled, None),
            ],
            None,
            &settings(),
        );
        assert_eq!(kinds(&p.steps), ["disable p", "delete gone"]);
    }

    #[test]
    fn only_accounts_in_the_ledger_are_disabled_or_deleted() {
        // No remote id: this target never created or adopted an account for them.
        let never = Delivered {
            failures: 2,
            last_error: Some("x".into()),
            ..Default::default()
        };
        let p = plan(
            &[
                entry("a", Want::Disabled, Some(never.clone())),
                entry("b", Want::Gone, None),
            ],
            None,
            &settings(),
        );
        assert_eq!(kinds(&p.steps), ["forget a"]);
    }

    /// Ten users u0..u9 delivered and wanted active.
    fn ten_active() -> Vec<Entry> {
        (0..10)
            .map(|i| {
                let d = delivered(
                    &i.to_string(),
                    DeliveredState::Provisioned,
                    &format!("u{i}"),
                );
                entry(&format!("u{i}"), Want::Active, Some(d))
            })
            .collect()
    }

    #[test]
    fn thresholds_withhold_every_disable_and_delete_but_not_creates() {
        let mut entries = ten_active();
        entries[0].want = Want::Disabled;
        entries[1].want = Want::Disabled;
        entries.push(entry("new", Want::Active, None));
        let s = Settings {
            max_disable_percent: 10,
            ..settings()
        };
        let p = plan(&entries, None, &s);
        assert_eq!(kinds(&p.steps), ["create new"]);
        assert_eq!(kinds(&p.withheld), ["disable u0", "disable u1"]);
        let b = p.blocked.clone().unwrap();
        assert_eq!((b.would_disable, b.active, b.allowed_disables), (2, 10, 1));
        // One disable is within 10 % of 10.
        entries[1].want = Want::Active;
        assert!(plan(&entries, None, &s).blocked.is_none());
        entries[1].want = Want::Disabled;
        // An approval of that cycle lets the same steps through, and no others:
        // neither a bigger set nor one of the same size over other users.
        let approved = Settings {
            approved: Some(&b.digest),
            ..s.clone()
        };
        assert_eq!(
            kinds(&plan(&entries, None, &approved).steps),
            ["create new", "disable u0", "disable u1"]
        );
        entries[2].want = Want::Disabled;
        assert!(plan(&entries, None, &approved).blocked.is_some());
        entries[1].want = Want::Active;
        let swapped = plan(&entries, None, &approved);
        assert_eq!(kinds(&swapped.withheld), ["disable u0", "disable u2"]);
        // The fingerprint names the withheld steps.
        let again = plan(&entries, None, &s).blocked.unwrap();
        assert_ne!(again.digest, b.digest);
    }

    #[test]
    fn a_retry_of_an_approved_step_needs_no_new_approval_but_a_grown_set_does() {
        let mut entries: Vec<Entry> = (0..10)
            .map(|i| {
                entry(
                    &format!("u{i}"),
                    Want::Disabled,
                    Some(delivered(
                        &i.to_string(),
                        DeliveredState::Provisioned,
                        &format!("u{i}"),
                    )),
                )
            })
            .collect();
        for e in &mut entries[3..] {
            e.want = Want::Active;
        }
        // u0..u2 were approved in cycle c-1; the disables of u0 and u1 failed.
        for e in &mut entries[..2] {
            let d = e.delivered.as_mut().unwrap();
            d.approved = Some("disable:c-1".into());
            d.failures = 1;
        }
        entries[2].delivered.as_mut().unwrap().state = Some(DeliveredState::Disabled);
        let s = Settings {
            max_disable_percent: 10,
            ..settings()
        };
        let p = plan(&entries, None, &s);
        assert_eq!(kinds(&p.steps), ["disable u0", "disable u1"]);
        assert!(p.blocked.is_none(), "{:?}", p.blocked);
        // Two more disables beside the retries: those two wait for an approval,
        // the retries still go.
        entries[3].want = Want::Disabled;
        entries[4].want = Want::Disabled;
        let p = plan(&entries, None, &s);
        assert_eq!(kinds(&p.steps), ["disable u0", "disable u1"]);
        assert_eq!(kinds(&p.withheld), ["disable u3", "disable u4"]);
        assert_eq!(p.blocked.unwrap().would_disable, 2);
        // Without the approval in their entries, the retries count too.
        for e in &mut entries[..2] {
            e.delivered.as_mut().unwrap().approved = None;
        }
        let p = plan(&entries, None, &s);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.blocked.unwrap().would_disable, 4);
    }

    #[test]
    fn an_approval_kept_for_a_retry_covers_only_its_kind_and_is_spent_when_the_user_is_active_again()
     {
        let mut entries = ten_active();
        // u0's approved disable failed and waits for its retry.
        entries[0].delivered.as_mut().unwrap().approved = Some("disable:c-1".into());
        let s = Settings {
            max_disable_percent: 0,
            max_deletes: 0,
            ..settings()
        };
        // Wanted active again: no retry, and the entry drops the approval.
        let p = plan(&entries, None, &s);
        assert_eq!(p.unapproved, ["u0"]);
        assert!(p.blocked.is_none(), "{:?}", p.blocked);
        // Wanted disabled: its retry goes without a new approval.
        entries[0].want = Want::Disabled;
        let p = plan(&entries, None, &s);
        assert_eq!(kinds(&p.steps), ["disable u0"]);
        assert!(p.unapproved.is_empty());
        // A delete is no retry of the approved disable: it waits for its own.
        entries[0].want = Want::Gone;
        let d = entries[0].delivered.as_mut().unwrap();
        d.state = Some(DeliveredState::Disabled);
        let p = plan(&entries, None, &s);
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.blocked.unwrap().would_delete, 1);
    }

    #[test]
    fn deletes_over_the_limit_are_withheld() {
        let entries: Vec<Entry> = (0..3)
            .map(|i| {
                entry(
                    &format!("u{i}"),
                    Want::Gone,
                    Some(delivered(&i.to_string(), DeliveredState::Disabled, "x")),
                )
            })
            .collect();
        let p = plan(
            &entries,
            None,
            &Settings {
                max_deletes: 2,
                ..settings()
            },
        );
        assert!(p.steps.is_empty());
        assert_eq!(p.withheld.len(), 3);
        assert_eq!(p.blocked.unwrap().would_delete, 3);
        assert_eq!(
            plan(
                &entries,
                None,
                &Settings {
                    max_deletes: 3,
                    ..settings()
                }
            )
            .steps
            .len(),
            3
        );
    }

    #[test]
    fn a_failed_user_waits_for_its_back_off() {
        let mut d = delivered("1", DeliveredState::Provisioned, "old");
        d.failures = 1;
        d.retry_after = Some(now() + jiff::SignedDuration::from_secs(1));
        let e = entry("bob", Want::Active, Some(d.clone()));
        let p = plan(std::slice::from_ref(&e), None, &settings());
        assert_eq!((p.steps.len(), p.deferred), (0, 1));
        d.retry_after = Some(now());
        let p = plan(
            &[Entry {
                delivered: Some(d),
                ..e
            }],
            None,
            &settings(),
        );
        assert_eq!(kinds(&p.steps), ["update bob"]);
    }

    #[test]
    fn a_full_reconcile_repairs_drift_and_recreates_vanished_accounts() {
        let actual = HashMap::from([
            (
                "1".to_string(),
                Remote {
                    active: Some(false),
                    match_value: Some("a".into()),
                },
            ),
            (
                "2".to_string(),
                Remote {
                    active: Some(true),
                    match_value: Some("b".into()),
                },
            ),
            (
                "3".to_string(),
                Remote {
                    active: Some(true),
                    match_value: Some("renamed-there".into()),
                },
            ),
        ]);
        let p = plan(
            &[
                entry(
                    "a",
                    Want::Active,
                    Some(delivered("1", DeliveredState::Provisioned, "a")),
                ),
                entry(
                    "b",
                    Want::Disabled,
                    Some(delivered("2", DeliveredState::Disabled, "b")),
                ),
                entry(
                    "c",
                    Want::Active,
                    Some(delivered("3", DeliveredState::Provisioned, "c")),
                ),
                entry(
                    "d",
                    Want::Active,
                    Some(delivered("4", DeliveredState::Provisioned, "d")),
                ),
                entry(
                    "e",
                    Want::Disabled,
                    Some(delivered("5", DeliveredState::Disabled, "e")),
                ),
            ],
            Some(&actual),
            &settings(),
        );
        assert_eq!(
            kinds(&p.steps),
            ["enable a", "update c", "forget e", "create d", "disable b"]
        );
        // Without a reconcile, the same ledger needs nothing.
        let quiet = plan(
            &[
                entry(
                    "a",
                    Want::Active,
                    Some(delivered("1", DeliveredState::Provisioned, "a")),
                ),
                entry(
                    "b",
                    Want::Disabled,
                    Some(delivered("2", DeliveredState::Disabled, "b")),
                ),
            ],
            None,
            &settings(),
        );
        assert!(quiet.steps.is_empty());
    }

    #[test]
    fn a_match_value_held_by_another_user_of_the_target_is_never_adopted_or_shared() {
        // The leaver keeps a disabled account named "alice"; the new hire "alice"
        // must not take it over, nor be created beside it.
        let mut leaver = entry(
            "alice",
            Want::Disabled,
            Some(delivered("1", DeliveredState::Disabled, "alice")),
        );
        leaver.name = "user-old".into();
        let mut hire = entry("alice", Want::Active, None);
        hire.name = "user-new".into();
        let p = plan(&[leaver.clone(), hire.clone()], None, &settings());
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.invalid.len(), 1);
        assert_eq!(p.invalid[0].0, "user-new");
        assert!(p.invalid[0].1.contains("user-old"), "{}", p.invalid[0].1);
        // Once the leaver's account is deleted, the name is free.
        leaver.delivered.as_mut().unwrap().state = Some(DeliveredState::Deleted);
        let p = plan(&[leaver, hire.clone()], None, &settings());
        assert_eq!(kinds(&p.steps), ["create user-new"]);
        // Two new users with one userName: neither is created.
        let mut twin = hire.clone();
        twin.name = "user-twin".into();
        let p = plan(&[hire, twin], None, &settings());
        assert!(p.steps.is_empty());
        assert_eq!(p.invalid.len(), 2);
    }

    #[test]
    fn an_application_that_does_not_say_active_is_not_taken_as_drift() {
        let actual = HashMap::from([(
            "1".to_string(),
            Remote {
                active: None,
                match_value: Some("a".into()),
            },
        )]);
        let p = plan(
            &[entry(
                "a",
                Want::Disabled,
                Some(delivered("1", DeliveredState::Disabled, "a")),
            )],
            Some(&actual),
            &settings(),
        );
        assert!(p.steps.is_empty(), "{:?}", p.steps);
    }

    #[test]
    fn a_user_without_a_match_value_is_invalid_not_created() {
        let mut e = entry("bob", Want::Active, None);
        e.match_value = None;
        let p = plan(&[e], None, &settings());
        assert!(p.steps.is_empty());
        assert_eq!(p.invalid.len(), 1);
        assert!(
            p.invalid[0].1.contains("match attribute"),
            "{}",
            p.invalid[0].1
        );
    }

    #[test]
    fn retries_double_from_thirty_seconds_up_to_an_hour_with_a_spread() {
        let wait = |failures| {
            retry_after(now(), failures, "bob")
                .duration_since(now())
                .as_secs_f64()
        };
        assert!((30.0..=33.0).contains(&wait(1)), "{}", wait(1));
        assert!((60.0..=66.0).contains(&wait(2)), "{}", wait(2));
        assert!((3600.0..=3960.0).contains(&wait(20)), "{}", wait(20));
        assert!(wait(3) > wait(2));
    }

    #[test]
    fn counts_tally_delivered_states_and_failures() {
        let mut failed = delivered("1", DeliveredState::Provisioned, "a");
        failed.failures = 1;
        let ledger = [
            failed,
            delivered("2", DeliveredState::Disabled, "b"),
            Delivered::default(),
        ];
        let c = counts(&ledger);
        assert_eq!(
            (c["Provisioned"], c["Disabled"], c["Deleted"], c["Failed"]),
            (1, 1, 0, 1)
        );
    }
}
