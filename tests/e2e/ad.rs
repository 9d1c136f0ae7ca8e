//! DESIGN.md section 2 where Active Directory differs from OpenLDAP, against the
//! real Samba AD DC (tests/samba.sh) and a real API server: the objectGUID anchor,
//! `userAccountControl` and `accountExpires` as the disabled signal, nested group
//! membership, and renames of sAMAccountName and userPrincipalName. One test per
//! rule, named after it.
//!
//! Users and groups are made with samba-tool (as an AD admin would), in the
//! test's own OU; sAMAccountNames are unique in the whole domain, so every name
//! carries a short random token.

use std::time::Duration;

use kube::ResourceExt;
use serde_json::json;
use usersync::api::{Origin, RunResult, RunSummary};

use crate::ldap_support::{Server, short_unique};
use crate::world::{World, incremental_only_policy, succeeded_incrementally};

// --- the AD side ---

/// A sAMAccountName (at most 20 characters, unique in the domain).
fn sam(prefix: &str) -> String {
    format!("{prefix}{}", short_unique())
}

/// samba-tool against the DC.
fn tool(w: &World<'_>, args: &[&str]) -> String {
    let mut all = vec!["tool"];
    all.extend_from_slice(args);
    w.server.script(&all, None)
}

/// The test OU without the domain's DN, as samba-tool's `--userou`/`--groupou` want it.
fn ou_in_domain(w: &World<'_>) -> String {
    let suffix = format!(",{}", w.server.base_dn);
    w.ou.dn
        .strip_suffix(&suffix)
        .unwrap_or_else(|| panic!("{} is not below {}", w.ou.dn, w.server.base_dn))
        .to_owned()
}

/// An enabled AD user in the test OU, made by `samba-tool user create` with a
/// random password: CN and sAMAccountName `sam`, UPN `sam@corp.example`, mail
/// `sam@mail.corp.example`, displayName `User <sam>`. Returns its DN.
fn add_ad_user(w: &World<'_>, sam: &str) -> String {
    add_ad_user_in(w, None, sam)
}

/// [`add_ad_user`] in the test OU's sub-OU `sub` when given.
fn add_ad_user_in(w: &World<'_>, sub: Option<&str>, sam: &str) -> String {
    let ou = match sub {
        Some(sub) => format!("OU={sub},{}", ou_in_domain(w)),
        None => ou_in_domain(w),
    };
    tool(
        w,
        &[
            "user",
            "create",
            sam,
            "--random-password",
            "--use-username-as-cn",
            &format!("--userou={ou}"),
            "--given-name=User",
            &format!("--surname={sam}"),
            &format!("--mail-address={sam}@mail.corp.example"),
        ],
    );
    match sub {
        Some(sub) => format!("CN={sam},OU={sub},{}", w.ou.dn),
        None => ad_dn(w, sam),
    }
}

fn ad_dn(w: &World<'_>, cn: &str) -> String {
    format!("CN={cn},{}", w.ou.dn)
}

fn set_disabled(w: &World<'_>, sam: &str, disabled: bool) {
    let verb = if disabled { "disable" } else { "enable" };
    tool(w, &["user", verb, sam]);
}

/// Set a user's `accountExpires` (a FILETIME; 0 and i64::MAX mean never).
fn set_account_expires(w: &World<'_>, cn: &str, filetime: i128) {
    w.server.modify_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: accountExpires\naccountExpires: {filetime}\n",
        ad_dn(w, cn)
    ));
}

/// `now + offset_secs` as a FILETIME (100 ns intervals since 1601-01-01 UTC).
fn filetime_from_now(offset_secs: i64) -> i128 {
    let unix = i128::from(jiff::Timestamp::now().as_second() + offset_secs);
    unix * 10_000_000 + 116_444_736_000_000_000
}

/// A global security group in the test OU; its DN.
fn add_ad_group(w: &World<'_>, name: &str) -> String {
    tool(
        w,
        &[
            "group",
            "add",
            name,
            &format!("--groupou={}", ou_in_domain(w)),
        ],
    );
    ad_dn(w, name)
}

/// Add `member` (a user's or group's sAMAccountName) to `group`.
fn add_member(w: &World<'_>, group: &str, member: &str) {
    tool(w, &["group", "addmembers", group, member]);
}

fn remove_member(w: &World<'_>, group: &str, member: &str) {
    tool(w, &["group", "removemembers", group, member]);
}

/// What `samba-tool user show` says the user's objectGUID is.
fn samba_tool_guid(w: &World<'_>, sam: &str) -> String {
    let out = tool(w, &["user", "show", sam, "--attributes=objectGUID"]);
    out.lines()
        .find_map(|l| l.strip_prefix("objectGUID: "))
        .unwrap_or_else(|| panic!("samba-tool printed no objectGUID:\n{out}"))
        .trim()
        .to_owned()
}

fn succeeded(run: &RunSummary) {
    assert_eq!(run.result, RunResult::Succeeded, "{run:?}");
}

// --- the rules ---

#[tokio::test]
async fn ad_user_is_imported_with_its_object_guid_as_anchor_and_the_same_string_samba_tool_prints()
{
    let w = World::new("adguid", Server::samba(), json!({})).await;
    let name = sam("g");
    add_ad_user(&w, &name);
    let guid = samba_tool_guid(&w, &name);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    succeeded(&run);
    assert_eq!(run.imported, 1, "{run:?}");

    let user = w.user(&name).await;
    assert_eq!(w.state(&name).await, "Active");
    assert_eq!(
        user.spec.anchor.as_deref(),
        Some(guid.as_str()),
        "the anchor is not the objectGUID as samba-tool prints it"
    );
    assert_eq!(
        user.name_any(),
        format!("corp-{}", guid.replace('-', "")),
        "the record is named from the connector and the objectGUID"
    );
    assert_eq!(user.spec.origin, Origin::Directory);
    assert_eq!(user.spec.connector_ref.as_deref(), Some("corp"));
    assert_eq!(user.spec.mapping_ref.as_deref(), Some("staff"));
    // The ActiveDirectory presets: sAMAccountName, userPrincipalName, mail, displayName.
    assert_eq!(user.spec.username.as_deref(), Some(name.as_str()));
    assert_eq!(
        user.spec.user_principal_name,
        Some(format!("{name}@corp.example"))
    );
    assert_eq!(user.spec.email, Some(format!("{name}@mail.corp.example")));
    assert_eq!(user.spec.display_name, Some(format!("User {name}")));
}

#[tokio::test]
async fn ad_disabled_account_is_preserved_and_reenabled() {
    let w = World::new(
        "addisable",
        Server::samba(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let (flip, stays, never) = (sam("da"), sam("db"), sam("dc"));
    for name in [&flip, &stays, &never] {
        add_ad_user(&w, name);
    }
    // Disabled (ACCOUNTDISABLE) before the first run: never imported.
    set_disabled(&w, &never, true);
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    succeeded(&run);
    assert_eq!(run.imported, 2, "{run:?}");
    assert!(
        w.named(&never).await.is_empty(),
        "a disabled AD account was imported"
    );
    let record = w.user(&flip).await.name_any();

    set_disabled(&w, &flip, true);
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!((run.preserved, run.imported), (1, 0), "{run:?}");
    assert_eq!(w.state(&flip).await, "Preserved/DisabledInDirectory");
    assert!(w.user(&flip).await.status.unwrap().preserved_at.is_some());
    assert_eq!(w.state(&stays).await, "Active");

    set_disabled(&w, &flip, false);
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!((run.reenabled, run.imported), (1, 0), "{run:?}");
    assert_eq!(w.state(&flip).await, "Active");
    let user = w.user(&flip).await;
    assert_eq!(user.name_any(), record, "re-enabling made a new record");
    assert!(user.status.unwrap().preserved_at.is_none());
    assert_eq!(w.state(&stays).await, "Active");
}

#[tokio::test]
async fn ad_expired_account_is_preserved() {
    let w = World::new(
        "adexpired",
        Server::samba(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let (expires, future, expired, lapses) = (sam("ea"), sam("eb"), sam("ec"), sam("ed"));
    for name in [&expires, &future, &expired, &lapses] {
        add_ad_user(&w, name);
    }
    // Expires in 30 days: enabled now. Expired an hour ago: never imported.
    set_account_expires(&w, &future, filetime_from_now(30 * 86_400));
    set_account_expires(&w, &expired, filetime_from_now(-3_600));
    // Expires in a few seconds, with no change in the directory when it does.
    const LAPSE_SECS: i64 = 10;
    let lapse_at = tokio::time::Instant::now() + Duration::from_secs(LAPSE_SECS as u64);
    set_account_expires(&w, &lapses, filetime_from_now(LAPSE_SECS));
    let run = w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    succeeded(&run);
    assert_eq!(run.imported, 3, "{run:?}");
    assert_eq!(w.state(&future).await, "Active");
    assert_eq!(
        w.state(&lapses).await,
        "Active",
        "not yet expired at the first run (did it take over {LAPSE_SECS}s?)"
    );
    assert!(
        w.named(&expired).await.is_empty(),
        "an expired AD account was imported"
    );

    // One account is set to have expired a minute ago (userAccountControl still says
    // enabled); the other simply reaches its expiry time.
    set_account_expires(&w, &expires, filetime_from_now(-60));
    tokio::time::sleep_until(lapse_at + Duration::from_secs(1)).await;
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!(w.state(&expires).await, "Preserved/DisabledInDirectory");
    assert_eq!(
        w.state(&lapses).await,
        "Preserved/DisabledInDirectory",
        "an account whose accountExpires passed (no directory change) stays Active: {run:?}"
    );
    assert_eq!(run.preserved, 2, "{run:?}");
    assert_eq!(w.state(&future).await, "Active");

    // Never expires again (0): enabled and matched, so it is re-enabled.
    set_account_expires(&w, &expires, 0);
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!(run.reenabled, 1, "{run:?}");
    assert_eq!(w.state(&expires).await, "Active");
    assert_eq!(w.state(&lapses).await, "Preserved/DisabledInDirectory");
}

#[tokio::test]
async fn ad_nested_group_membership_scopes_the_mapping() {
    let w = World::new(
        "adnested",
        Server::samba(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let (nested, direct, outside) = (sam("na"), sam("nb"), sam("nc"));
    for name in [&nested, &direct, &outside] {
        add_ad_user(&w, name);
    }
    // nested ∈ A, A ∈ B, direct ∈ B; outside is in no group.
    let (a, b) = (sam("ga"), sam("gb"));
    add_ad_group(&w, &a);
    let group_b = add_ad_group(&w, &b);
    add_member(&w, &a, &nested);
    add_member(&w, &b, &a);
    add_member(&w, &b, &direct);

    let run = w
        .mapping(
            "staff",
            &w.ou.dn.clone(),
            json!({"ldap": {"baseDN": w.ou.dn, "memberOf": [group_b]}}),
        )
        .await;
    succeeded(&run);
    assert_eq!(run.imported, 2, "{run:?}");
    assert_eq!(
        w.state(&nested).await,
        "Active",
        "a member of B through A was not imported"
    );
    assert_eq!(w.state(&direct).await, "Active");
    assert!(
        w.named(&outside).await.is_empty(),
        "a user in no group of the mapping was imported"
    );

    // A leaves B: `nested` is no longer (transitively) a member of B.
    remove_member(&w, &b, &a);
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!((run.preserved, run.imported), (1, 0), "{run:?}");
    assert_eq!(w.state(&nested).await, "Preserved/Unmapped");
    assert_eq!(w.state(&direct).await, "Active");
    assert!(w.named(&outside).await.is_empty());
}

#[tokio::test]
async fn ad_rename_and_upn_change_keep_identity() {
    let w = World::new(
        "adrename",
        Server::samba(),
        json!({"safety": {"maxPreservePercent": 100}}),
    )
    .await;
    let (old, new) = (sam("ra"), sam("rb"));
    add_ad_user(&w, &old);
    let guid = samba_tool_guid(&w, &old);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let before = w.user(&old).await;
    assert_eq!(before.spec.anchor.as_deref(), Some(guid.as_str()));

    // A UPN domain change alone (written over LDAP: samba-tool only accepts the
    // domain's own UPN suffixes).
    let moved_upn = format!("{old}@sales.corp.example");
    w.server.modify_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: userPrincipalName\nuserPrincipalName: {moved_upn}\n",
        ad_dn(&w, &old)
    ));
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!(
        (run.updated, run.imported, run.preserved),
        (1, 0, 0),
        "{run:?}"
    );
    let user = w.user(&old).await;
    assert_eq!(
        user.name_any(),
        before.name_any(),
        "a UPN change made a new record"
    );
    assert_eq!(
        user.spec.user_principal_name.as_deref(),
        Some(moved_upn.as_str())
    );

    // sAMAccountName, userPrincipalName and CN renamed together; objectGUID stays.
    tool(
        &w,
        &[
            "user",
            "rename",
            &old,
            &format!("--samaccountname={new}"),
            &format!("--upn={new}@corp.example"),
            &format!("--force-new-cn={new}"),
        ],
    );
    assert_eq!(
        samba_tool_guid(&w, &new),
        guid,
        "samba-tool changed the objectGUID"
    );
    let run = w.sync("staff").await;
    succeeded(&run);
    assert_eq!(
        (run.updated, run.imported, run.preserved),
        (1, 0, 0),
        "{run:?}"
    );
    let after = w.user(&new).await;
    assert_eq!(
        after.name_any(),
        before.name_any(),
        "a rename made a new record"
    );
    assert_eq!(after.spec.anchor, before.spec.anchor);
    assert_eq!(
        after.spec.user_principal_name,
        Some(format!("{new}@corp.example"))
    );
    assert_eq!(w.state(&new).await, "Active");
    assert!(w.named(&old).await.is_empty(), "the old name is still held");
    assert_eq!(w.users().await.len(), 1, "{:?}", w.users().await);
}

/// Groups A and B with A ∈ B: their names, and B's DN.
fn nested_groups(w: &World<'_>) -> (String, String, String) {
    let (a, b) = (sam("ga"), sam("gb"));
    add_ad_group(w, &a);
    let group_b = add_ad_group(w, &b);
    add_member(w, &b, &a);
    (a, b, group_b)
}

#[tokio::test]
async fn ad_leaving_the_selected_group_directly_or_nested_is_seen_by_the_next_incremental_run() {
    let w = World::new("adleave", Server::samba(), incremental_only_policy()).await;
    let (direct, nested, stays) = (sam("la"), sam("lb"), sam("lc"));
    for name in [&direct, &nested, &stays] {
        add_ad_user(&w, name);
    }
    // direct ∈ B, stays ∈ B, nested ∈ A, A ∈ B; the mapping selects B.
    let (a, b, group_b) = nested_groups(&w);
    add_member(&w, &a, &nested);
    add_member(&w, &b, &direct);
    add_member(&w, &b, &stays);
    let run = w.group_mapping("staff", &[&group_b]).await;
    assert_eq!(run.imported, 3, "{run:?}");

    remove_member(&w, &b, &direct);
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state(&direct).await, "Preserved/Unmapped");

    remove_member(&w, &a, &nested);
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.preserved, 1, "{run:?}");
    assert_eq!(w.state(&nested).await, "Preserved/Unmapped");
    assert_eq!(w.state(&stays).await, "Active");
}

#[tokio::test]
async fn ad_joining_the_selected_group_directly_or_nested_is_imported_by_the_next_incremental_run()
{
    let w = World::new("adjoin", Server::samba(), incremental_only_policy()).await;
    let (first, direct, nested) = (sam("ja"), sam("jb"), sam("jc"));
    for name in [&first, &direct, &nested] {
        add_ad_user(&w, name);
    }
    let (a, b, group_b) = nested_groups(&w);
    add_member(&w, &b, &first);
    let run = w.group_mapping("staff", &[&group_b]).await;
    assert_eq!(run.imported, 1, "{run:?}");

    add_member(&w, &b, &direct);
    add_member(&w, &a, &nested);
    let run = w.sync("staff").await;
    succeeded_incrementally(&run);
    assert_eq!(run.imported, 2, "{run:?}");
    assert_eq!(w.state(&direct).await, "Active");
    assert_eq!(w.state(&nested).await, "Active");
}

#[tokio::test]
async fn ad_changes_reach_the_registry_through_change_notifications_within_the_interval() {
    let w = World::new("adpush", Server::samba(), crate::push::push_policy()).await;
    let (kept, leaving) = (sam("n"), sam("n"));
    add_ad_user(&w, &kept);
    add_ad_user(&w, &leaving);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    let message = w.push_condition("staff", "Listening").await;
    assert!(message.contains("incremental run"), "{message}");
    w.quiet("staff").await;
    assert_eq!(w.state(&leaving).await, "Active");
    let before = w.last_run("staff").await.unwrap().id;

    // No run is due for an hour: only the DC's notifications can start one.
    set_disabled(&w, &leaving, true);
    let joining = sam("n");
    add_ad_user(&w, &joining);
    w.state_becomes(&leaving, "Preserved/DisabledInDirectory")
        .await;
    w.state_becomes(&joining, "Active").await;
    assert_eq!(w.state(&kept).await, "Active");
    // The users are written before the run's summary: wait for the summary.
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(
        (run.trigger, run.result),
        (usersync::api::RunTrigger::Push, RunResult::Succeeded),
        "{run:?}"
    );
}

#[tokio::test]
async fn ad_a_lost_notification_channel_shows_in_the_condition_and_heals_when_the_dc_is_back() {
    let w = World::new("adpushcut", Server::samba(), crate::push::push_policy()).await;
    // Between the operator and the DC, a relay that the test cuts as a restart
    // of the DC would (the DC itself serves the other tests). Its certificate
    // names localhost too.
    let upstream = w
        .server
        .url
        .trim_start_matches("ldap://")
        .parse()
        .expect("the DC's URL is ldap://<ip>:<port>");
    let relay = crate::support::CutRelay::start(upstream).await;
    w.patch_connector(json!({"ldap": {"url": format!("ldap://localhost:{}", relay.port)}}))
        .await;
    let name = sam("c");
    add_ad_user(&w, &name);
    w.mapping("staff", &w.ou.dn.clone(), json!({})).await;
    w.push_condition("staff", "Listening").await;

    relay.cut();
    let message = w.push_condition("staff", "PushDisconnected").await;
    assert!(message.contains("opening it again in"), "{message}");
    relay.restore();
    w.push_condition("staff", "Listening").await;
    w.quiet("staff").await;
    let before = w.last_run("staff").await.unwrap().id;
    set_disabled(&w, &name, true);
    w.state_becomes(&name, "Preserved/DisabledInDirectory")
        .await;
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(run.trigger, usersync::api::RunTrigger::Push, "{run:?}");
}

#[tokio::test]
async fn ad_joining_a_group_kept_outside_the_base_dn_directly_or_nested_starts_a_push_run() {
    let w = World::new("adpushgrp", Server::samba(), crate::push::push_policy()).await;
    // The users in OU=people; the groups (A ∈ B) beside it, in the test OU.
    let people = w.sub_ou("people");
    let (first, direct, nested) = (sam("pa"), sam("pb"), sam("pc"));
    for name in [&first, &direct, &nested] {
        add_ad_user_in(&w, Some("people"), name);
    }
    let (a, b, group_b) = nested_groups(&w);
    add_member(&w, &b, &first);
    w.mapping(
        "staff",
        &people,
        json!({"ldap": {"baseDN": people, "memberOf": [group_b]}}),
    )
    .await;
    w.push_condition("staff", "Listening").await;
    w.quiet("staff").await;
    assert_eq!(w.state(&first).await, "Active");
    let before = w.last_run("staff").await.unwrap().id;

    // No run is due for an hour, and nothing below the base DN changes.
    add_member(&w, &b, &direct);
    add_member(&w, &a, &nested);
    w.state_becomes(&direct, "Active").await;
    w.state_becomes(&nested, "Active").await;
    let run = w.wait_run("staff", Some(&before)).await;
    assert_eq!(run.trigger, usersync::api::RunTrigger::Push, "{run:?}");
}
