//! Health as GitOps tools read it (DESIGN.md section 1), judged by the real kstatus
//! library that kpt and cli-utils use, and Flux in a fork (tests/kstatus): a fresh
//! object reads InProgress until the operator has observed its generation.

use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use usersync::api::{ConnectorHealth, DirectoryMapping, DirectoryUser, SyncPolicy};

use crate::ldap_support::Server;
use crate::support::Kstatus;
use crate::world::{RUN_WAIT, Scene, World};

/// kstatus's message for an object whose generation nobody has observed yet.
fn unobserved(kind: &str, generation: i64) -> String {
    format!("{kind} generation is {generation}, but latest observed generation is 0")
}

/// Ask kstatus about `kind/name` until `done` holds; the verdict then.
async fn kstatus_until(
    scene: &Scene,
    kind: &str,
    name: &str,
    what: &str,
    done: impl Fn(&Kstatus) -> bool,
) -> Kstatus {
    let deadline = tokio::time::Instant::now() + RUN_WAIT;
    loop {
        let verdict = scene.kstatus(kind, name).await;
        if done(&verdict) {
            return verdict;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}/{name}: no {what} after {RUN_WAIT:?}; kstatus says {verdict:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `status.observedGeneration` and `metadata.generation` of an object as the API returns it.
async fn generations<K>(scene: &Scene, name: &str, observed: fn(&K) -> Option<i64>) -> (i64, i64)
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let obj = Api::<K>::namespaced(scene.client.clone(), &scene.ns.name)
        .get(name)
        .await
        .unwrap();
    let generation = obj.meta().generation.expect("a generation");
    (observed(&obj).expect("an observedGeneration"), generation)
}

#[tokio::test]
async fn a_fresh_object_reads_in_progress_until_the_operator_observes_it() {
    let w = World::without_operator("health-fresh", Server::slapd(), json!({})).await;
    w.apply(&json!({
        "apiVersion": "usersync.dev/v1alpha1", "kind": "DirectoryMapping", "metadata": {"name": "staff"},
        "spec": {"connectorRef": "corp", "policyRef": "default", "ldap": {"baseDN": w.ou.dn}},
    }));
    let objects = [
        ("ConnectorHealth", "corp"),
        ("DirectoryMapping", "staff"),
        ("SyncPolicy", "default"),
    ];
    // Nothing has looked at them: the schema's default status says generation 0.
    for (kind, name) in objects {
        let verdict = w.kstatus(kind, name).await;
        assert_eq!(
            verdict,
            Kstatus {
                status: "InProgress".into(),
                message: unobserved(kind, 1)
            },
            "{kind}/{name} before the operator ran"
        );
    }
    let fresh =
        generations::<SyncPolicy>(&w, "default", |p| p.status.as_ref()?.observed_generation);
    assert_eq!(
        fresh.await,
        (0, 1),
        "the defaulted status, as a client reads it"
    );

    w.start_operator();
    // A healthy connector (the test slapd, Connected) is Current. What Ready,
    // Reconciling and Stalled make of the mapping and the policy is theirs; only
    // the generation check is asked about here.
    kstatus_until(&w, "ConnectorHealth", "corp", "Current", |v| {
        v.status == "Current"
    })
    .await;
    for (kind, name) in objects {
        let verdict = kstatus_until(&w, kind, name, "observed generation", |v| {
            !v.message.contains("latest observed generation")
        })
        .await;
        assert_ne!(verdict.status, "Terminating", "{kind}/{name}: {verdict:?}");
    }
    let observed = [
        generations::<ConnectorHealth>(&w, "corp", |c| c.status.as_ref()?.observed_generation)
            .await,
        generations::<DirectoryMapping>(&w, "staff", |m| m.status.as_ref()?.observed_generation)
            .await,
        generations::<SyncPolicy>(&w, "default", |p| p.status.as_ref()?.observed_generation).await,
    ];
    assert_eq!(observed, [(1, 1); 3], "observedGeneration of {objects:?}");
}

#[tokio::test]
async fn an_active_directory_user_reads_current_through_spec_changes() {
    let w = World::new(
        "health-user",
        Server::slapd(),
        json!({"incremental": false}),
    )
    .await;
    w.add_user("erin", false);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    assert_eq!(w.state("erin").await, "Active");
    let user = w.user("erin").await.name_any();
    let observed = |u: &DirectoryUser| u.status.as_ref()?.observed_generation;
    assert_eq!(generations(&w, &user, observed).await, (1, 1));
    let current = Kstatus {
        status: "Current".into(),
        message: "Resource is current".into(),
    };
    assert_eq!(w.kstatus("DirectoryUser", &user).await, current);

    // A changed directory entry rewrites the spec (a new generation); the status
    // written with it describes that generation.
    w.set_mail("erin", "erin.new@example.org");
    let run = w.sync("staff").await;
    assert_eq!(run.updated, 1, "{run:?}");
    assert_eq!(generations(&w, &user, observed).await, (2, 2));
    assert_eq!(w.kstatus("DirectoryUser", &user).await, current);
}
