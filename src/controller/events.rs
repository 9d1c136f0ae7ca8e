//! Events: one per run on its mapping, and capped ones on notable user transitions.

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Client, Resource, ResourceExt};

use super::context::Context;
use crate::api::DirectoryMapping;
use crate::core::{self, TransitionKind};

/// Per-user Events per run; past this a summary says how many more there were,
/// so a mass change does not flood the API.
pub(crate) const USER_EVENTS_PER_RUN: usize = 20;

/// The component Events name as their source.
const COMPONENT: &str = "usersync";

/// Writes each Event as its own object through the core API: every run's Event
/// keeps its own note (a series would show the first run's note with the last
/// run's count), and its first and last timestamps are set, so `kubectl get events
/// --sort-by=.lastTimestamp` orders them as they happened.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    instance: String,
}

impl Recorder {
    /// A recorder for this process; `instance` is its pod's name when known.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| COMPONENT.into()),
        }
    }

    /// Create the Event about `regarding`.
    pub async fn publish(
        &self,
        event: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = jiff::Timestamp::now();
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let about = regarding.name.as_deref().unwrap_or(COMPONENT);
        let object = CoreEvent {
            metadata: ObjectMeta {
                name: Some(format!("{about}.{:x}", now.as_nanosecond())),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: regarding.clone(),
            reason: Some(event.reason.clone()),
            message: event.note.clone(),
            // `Normal` or `Warning`, as the API spells them.
            type_: Some(format!("{:?}", event.type_)),
            action: Some(event.action.clone()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            source: Some(EventSource {
                component: Some(COMPONENT.into()),
                host: None,
            }),
            reporting_component: Some(COMPONENT.into()),
            reporting_instance: Some(self.instance.clone()),
            ..Default::default()
        };
        Api::<CoreEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &object)
            .await
            .map(|_| ())
    }
}

/// Publish an Event; a failure to publish is logged, never fatal.
pub(crate) async fn publish<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let mut note = note;
    if note.len() > 1000 {
        note.truncate(
            note.char_indices()
                .take_while(|(i, _)| *i < 990)
                .last()
                .map_or(0, |(i, c)| i + c.len_utf8()),
        );
        note.push_str(" …");
    }
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::debug!(error = %e, "publishing an Event failed");
    }
}

/// Events on users for notable transitions, and on the mapping for skips and
/// returns; at most [`USER_EVENTS_PER_RUN`] per user-level kind, then one summary.
pub(crate) async fn user_events(
    ctx: &Context,
    mapping: &DirectoryMapping,
    applied: &[core::Transition],
    run_id: &str,
) {
    let ns = mapping.namespace().unwrap_or_default();
    let mut sent = 0usize;
    let mut more = 0usize;
    for t in applied {
        let Some((type_, reason, note)) = transition_note(t, run_id) else {
            continue;
        };
        if sent >= USER_EVENTS_PER_RUN {
            more += 1;
            continue;
        }
        sent += 1;
        // Users kept in PostgreSQL have no object: their Events are the mapping's.
        let (reference, note) = if ctx.backend.has_user_objects() {
            let user = ObjectReference {
                api_version: Some("usersync.dev/v1alpha1".into()),
                kind: Some("DirectoryUser".into()),
                namespace: Some(ns.clone()),
                name: Some(t.record.name.clone()),
                ..Default::default()
            };
            (user, note)
        } else {
            let note = format!("user {}: {note}", t.record.name);
            (mapping.object_ref(&()), note)
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Sync".into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::debug!(error = %e, "publishing an Event failed");
        }
    }
    if more > 0 {
        tracing::info!(run = %run_id, more, "per-user Events capped for this run");
    }
}

/// The Event of a notable user transition, in plain words: its type, reason and note.
/// Other transitions have none.
fn transition_note(
    t: &core::Transition,
    run_id: &str,
) -> Option<(EventType, &'static str, String)> {
    Some(match &t.kind {
        TransitionKind::Preserve => (
            EventType::Warning,
            "Preserved",
            match t.record.reason {
                Some(reason) => format!("preserved ({reason}) by run {run_id}"),
                None => format!("preserved by run {run_id}"),
            },
        ),
        TransitionKind::Reenable => (
            EventType::Normal,
            "Reenabled",
            format!("active again after run {run_id}"),
        ),
        TransitionKind::Delete => (
            EventType::Warning,
            "Deleted",
            format!("deleted after retention by run {run_id}"),
        ),
        TransitionKind::Transfer { from } => (
            EventType::Normal,
            "Transferred",
            format!(
                "moved from mapping {} to {} by run {run_id}",
                from.as_deref().unwrap_or("none"),
                t.record.mapping.as_deref().unwrap_or("none"),
            ),
        ),
        TransitionKind::Import {
            follows: Some(previous),
        } => (
            EventType::Normal,
            "ReturnedAfterDeletion",
            format!(
                "this directory object was deleted before as {previous}; imported anew by run {run_id}, the old record stays a tombstone"
            ),
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transition(kind: TransitionKind) -> core::Transition {
        let mut record = core::testkit::active("guid-1", "b");
        record.reason = Some(core::Reason::Manual);
        core::Transition { kind, record }
    }

    #[test]
    fn user_events_read_as_plain_words_not_debug_text() {
        let (_, reason, note) =
            transition_note(&transition(TransitionKind::Preserve), "r1").unwrap();
        assert_eq!(
            (reason, note.as_str()),
            ("Preserved", "preserved (Manual) by run r1")
        );
        let moved = TransitionKind::Transfer {
            from: Some("a".into()),
        };
        let (_, reason, note) = transition_note(&transition(moved), "r1").unwrap();
        assert_eq!(
            (reason, note.as_str()),
            ("Transferred", "moved from mapping a to b by run r1")
        );
    }
}
