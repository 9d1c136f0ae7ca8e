//! Group membership seen by incremental reads (README, "What each read may
//! conclude"), against a real OpenLDAP server and a real API server: a user who
//! leaves the group a mapping selects, directly or through a nested group, is
//! handled as unmapped by the next incremental run, and one who joins is
//! imported by it. `fullSyncInterval` is long, so no full read comes round.
//! The same rules on Active Directory are in `ad.rs`.

use crate::ldap_support::{Server, ldif_line};
use crate::world::{World, incremental_only_policy, succeeded_incrementally};

/// A groupOfNames `cn` in the test OU with `members` (DNs; at least one, as
/// the schema wants). Returns its DN.
pub fn add_group(w: &World<'_>, cn: &str, members: &[&str]) -> String {
    let dn = format!("cn={cn},{}", w.ou.dn);
    let mut ldif = format!(
        "dn: {dn}\nobjectClass: groupOfNames\n{}",
        ldif_line("cn", cn)
    );
    for member in members {
        ldif.push_str(&ldif_line("member", member));
    }
    w.server.add_ldif(&ldif);
    dn
}

pub fn change_member(w: &World<'_>, group: &str, verb: &str, member: &str) {
    w.server.modify_ldif(&format!(
        "dn: {group}\nchangetype: modify\n{verb}: member\n{}",
        ldif_line("member", member)
    ));
}

fn user_dn(w: &World<'_>, uid: &str) -> String {
    format!("uid={uid},{}", w.ou.dn)
}

#[tokio::test]
async fn leaving_the_selected_group_is_seen_by_the_next_incremental_run() {
    let w = World::new("leave", Server::slapd(), incremental_only_policy()).await;
    for uid in ["ana", "bob"] {
        w.add_user(uid, false);
    }
    let group = add_group(&w, "staff", &[&user_dn(&w, "ana"), &user_dn(&w, "bob")]);
    let run = w.group_mapping("staff", &[&group]).await;
    assert_eq!(run.imported, 2, "{run:?}");

    change_member(&w, &group, "delete", &user_dn(&w, "bob"));
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("bob").await, "Preserved/Unmapped");
    assert_eq!(w.state("ana").await, "Active");

    // Back in the group: matched again, the automatic preserve is lifted.
    change_member(&w, &group, "add", &user_dn(&w, "bob"));
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(w.state("bob").await, "Active", "{run:?}");
}

#[tokio::test]
async fn leaving_a_group_nested_in_the_selected_one_is_seen_by_the_next_incremental_run() {
    let w = World::new("nestleave", Server::slapd(), incremental_only_policy()).await;
    for uid in ["cay", "dov", "eli"] {
        w.add_user(uid, false);
    }
    // cay and dov are in "inner", inner and eli in "outer"; the mapping selects outer.
    let inner = add_group(&w, "inner", &[&user_dn(&w, "cay"), &user_dn(&w, "dov")]);
    let outer = add_group(&w, "outer", &[&inner, &user_dn(&w, "eli")]);
    let run = w.group_mapping("staff", &[&outer]).await;
    assert_eq!(
        run.imported, 3,
        "members through the nested group count: {run:?}"
    );

    change_member(&w, &inner, "delete", &user_dn(&w, "cay"));
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("cay").await, "Preserved/Unmapped");
    assert_eq!(w.state("dov").await, "Active");

    // The whole nested group leaves: its members with it.
    change_member(&w, &outer, "delete", &inner);
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state("dov").await, "Preserved/Unmapped");
    assert_eq!(w.state("eli").await, "Active");
}

#[tokio::test]
async fn joining_the_selected_group_directly_or_nested_is_imported_by_the_next_incremental_run() {
    let w = World::new("join", Server::slapd(), incremental_only_policy()).await;
    for uid in ["fay", "gus", "hal"] {
        w.add_user(uid, false);
    }
    let inner = add_group(&w, "inner", &[&w.ou.dn.clone()]);
    let outer = add_group(&w, "outer", &[&user_dn(&w, "fay"), &inner]);
    let run = w.group_mapping("staff", &[&outer]).await;
    assert_eq!(run.imported, 1, "{run:?}");
    assert!(w.named("gus").await.is_empty());

    change_member(&w, &outer, "add", &user_dn(&w, "gus"));
    change_member(&w, &inner, "add", &user_dn(&w, "hal"));
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.imported, 2, "{run:?}");
    assert_eq!(w.state("gus").await, "Active");
    assert_eq!(w.state("hal").await, "Active");
}

#[tokio::test]
async fn a_user_leaving_one_mappings_group_for_anothers_is_transferred_by_the_next_incremental_run()
{
    let w = World::new("leavexfer", Server::slapd(), incremental_only_policy()).await;
    for uid in ["ivy", "jay"] {
        w.add_user(uid, false);
    }
    let (ivy, jay) = (user_dn(&w, "ivy"), user_dn(&w, "jay"));
    let east = add_group(&w, "east", &[&ivy, &jay]);
    let west = add_group(&w, "west", &[&jay]);
    w.group_mapping("east", &[&east]).await;
    w.group_mapping("west", &[&west]).await;
    let before = w.user("jay").await;
    assert_eq!(before.spec.mapping_ref.as_deref(), Some("east"));

    change_member(&w, &east, "delete", &jay);
    let run = w.sync("east").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 0, "{run:?}");
    assert_eq!(w.state("jay").await, "Active");
    assert_eq!(
        w.user("jay").await.spec.mapping_ref.as_deref(),
        Some("west"),
        "not transferred"
    );
    assert_eq!(w.state("ivy").await, "Active");
}
