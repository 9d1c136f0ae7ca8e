//! DirectoryUser objects as the planner's records, and back.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::{
    DirectoryUser, DirectoryUserSpec, DirectoryUserStatus, Origin as ApiOrigin, StateReason,
    UserState,
};
use crate::core::{Origin, Reason, State, UserFields, UserRecord};

/// The planner's view of a DirectoryUser. A user without status counts as Active
/// (an admin's Manual user has none until something writes it).
pub fn record_from_user(user: &DirectoryUser) -> UserRecord {
    let spec = &user.spec;
    let status = user.status.clone().unwrap_or_default();
    UserRecord {
        name: user.name_any(),
        origin: match spec.origin {
            ApiOrigin::Directory => Origin::Directory,
            ApiOrigin::Manual => Origin::Manual,
            ApiOrigin::CSV => Origin::Csv,
        },
        connector: spec.connector_ref.clone().unwrap_or_default(),
        anchor: spec.anchor.clone().unwrap_or_default(),
        mapping: spec.mapping_ref.clone(),
        fields: UserFields {
            username: spec.username.clone(),
            email: spec.email.clone(),
            display_name: spec.display_name.clone(),
            user_principal_name: spec.user_principal_name.clone(),
            profile: spec.profile.clone(),
            attributes: (&spec.attributes).into(),
        },
        manual_preserve: spec.preserve,
        state: match status.state {
            None | Some(UserState::Active) => State::Active,
            Some(UserState::Preserved) => State::Preserved,
            Some(UserState::Deleted) => State::Deleted,
        },
        reason: status.reason.map(|r| match r {
            StateReason::DisabledInDirectory => Reason::DisabledInDirectory,
            StateReason::Unmapped => Reason::Unmapped,
            StateReason::Manual => Reason::Manual,
            StateReason::RetentionExpired => Reason::RetentionExpired,
        }),
        preserved_at: status.preserved_at.map(|t| t.0),
        deleted_at: status.deleted_at.map(|t| t.0),
        delete_after_time: status.delete_after_time.map(|t| t.0),
    }
}

/// The value of the `usersync.dev/state` label for a state.
pub fn user_state_label(state: State) -> &'static str {
    match state {
        State::Active => "active",
        State::Preserved => "preserved",
        State::Deleted => "deleted",
    }
}

/// The spec the operator applies for a directory record. `preserve` is left out on
/// purpose: it is the admin's field, and applying it would take it over.
pub(crate) fn spec_of(record: &UserRecord) -> serde_json::Value {
    let spec = DirectoryUserSpec {
        origin: ApiOrigin::Directory,
        connector_ref: Some(record.connector.clone()),
        anchor: Some(record.anchor.clone()),
        mapping_ref: record.mapping.clone(),
        username: record.fields.username.clone(),
        email: record.fields.email.clone(),
        display_name: record.fields.display_name.clone(),
        user_principal_name: record.fields.user_principal_name.clone(),
        profile: record.fields.profile.clone(),
        attributes: record.fields.attributes.to_map(),
        preserve: false,
    };
    let mut value = serde_json::to_value(spec).expect("a spec always serialises");
    value
        .as_object_mut()
        .expect("a spec is an object")
        .remove("preserve");
    value
}

/// The status of a record, with what only the store remembers (`previousRecord`),
/// describing the object's `generation` (what its spec write left).
pub(crate) fn status_of(
    record: &UserRecord,
    delete_after: Option<jiff::Timestamp>,
    previous_record: Option<String>,
    run_id: &str,
    now: jiff::Timestamp,
    generation: Option<i64>,
) -> DirectoryUserStatus {
    DirectoryUserStatus {
        state: Some(match record.state {
            State::Active => UserState::Active,
            State::Preserved => UserState::Preserved,
            State::Deleted => UserState::Deleted,
        }),
        reason: record.reason.map(|r| match r {
            Reason::DisabledInDirectory => StateReason::DisabledInDirectory,
            Reason::Unmapped => StateReason::Unmapped,
            Reason::Manual => StateReason::Manual,
            Reason::RetentionExpired => StateReason::RetentionExpired,
        }),
        preserved_at: record.preserved_at.map(Time),
        delete_after_time: delete_after.map(Time),
        deleted_at: record.deleted_at.map(Time),
        last_seen_time: Some(Time(now)),
        last_sync_run: Some(run_id.to_string()),
        previous_record,
        deliveries: Vec::new(),
        conditions: Vec::new(),
        observed_generation: generation,
    }
}

/// The labels of a directory record.
pub(crate) fn labels_of(record: &UserRecord) -> BTreeMap<String, String> {
    use crate::api::{CONNECTOR_LABEL, MAPPING_LABEL, PROFILE_LABEL, STATE_LABEL};
    let mut labels = BTreeMap::from([
        (CONNECTOR_LABEL.to_string(), record.connector.clone()),
        (
            STATE_LABEL.to_string(),
            user_state_label(record.state).to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "usersync".to_string(),
        ),
    ]);
    if let Some(mapping) = &record.mapping {
        labels.insert(MAPPING_LABEL.to_string(), mapping.clone());
    }
    if let Some(profile) = &record.fields.profile {
        labels.insert(PROFILE_LABEL.to_string(), profile.clone());
    }
    labels
}
