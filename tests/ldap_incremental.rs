//! Incremental reads against real servers: OpenLDAP's syncrepl (tests/slapd.sh
//! loads syncprov on the data database) and Active Directory's uSNChanged on a
//! Samba AD DC (tests/samba.sh). Each test works in its own OU, so the tests
//! run in parallel beside each other and beside tests/ldap_source.rs.

#[path = "ldap_support/mod.rs"]
mod ldap_support;

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use ldap_support::{Server, TestOu, ldif_line, short_unique};
use usersync::core::{DirectoryEntry, ReadKind};
use usersync::directory::ldap::account::timestamp_to_filetime;
use usersync::directory::ldap::{
    Cursor, Flavor, FullReadReason, IncrementalOutcome, IncrementalRead, IncrementalSource,
    LdapRead, LdapScope, LdapSettings,
};

fn source(settings: &LdapSettings) -> IncrementalSource {
    IncrementalSource::new(settings).expect("valid settings")
}

/// A full read and its cursor, which the directory must give.
async fn full_read(
    source: &IncrementalSource,
    scope: &LdapScope,
    now: Timestamp,
) -> (LdapRead, Cursor) {
    let (read, cursor) = source
        .read_full_with_cursor(scope, now)
        .await
        .unwrap_or_else(|e| panic!("full read of {} failed: {e}", scope.base_dn));
    let cursor = cursor.expect("the directory offers incremental reads");
    // The runner keeps the cursor as text between runs.
    let persisted = cursor.to_string();
    (
        read,
        Cursor::parse(&persisted).expect("the cursor's text parses"),
    )
}

async fn incremental(
    source: &IncrementalSource,
    scope: &LdapScope,
    cursor: &Cursor,
    now: Timestamp,
) -> IncrementalOutcome {
    incremental_holding(source, scope, cursor, &[], now).await
}

/// An incremental read for a caller that holds the users `in_scope`.
async fn incremental_holding(
    source: &IncrementalSource,
    scope: &LdapScope,
    cursor: &Cursor,
    in_scope: &[String],
    now: Timestamp,
) -> IncrementalOutcome {
    source
        .read_incremental(scope, cursor, in_scope, now)
        .await
        .unwrap_or_else(|e| panic!("incremental read of {} failed: {e}", scope.base_dn))
}

async fn changes(
    source: &IncrementalSource,
    scope: &LdapScope,
    cursor: &Cursor,
    now: Timestamp,
) -> IncrementalRead {
    changes_holding(source, scope, cursor, &[], now).await
}

async fn changes_holding(
    source: &IncrementalSource,
    scope: &LdapScope,
    cursor: &Cursor,
    in_scope: &[String],
    now: Timestamp,
) -> IncrementalRead {
    match incremental_holding(source, scope, cursor, in_scope, now).await {
        IncrementalOutcome::Changes(read) => {
            assert_eq!(read.view.read, ReadKind::Incremental);
            assert!(read.view.complete);
            read
        }
        IncrementalOutcome::FullReadRequired(reason) => {
            panic!("expected changes, the source asked for a full read: {reason}")
        }
    }
}

fn by_username<'a>(
    entries: impl IntoIterator<Item = &'a DirectoryEntry>,
) -> BTreeMap<String, DirectoryEntry> {
    entries
        .into_iter()
        .map(|e| {
            (
                e.username.clone().expect("every test user has a username"),
                e.clone(),
            )
        })
        .collect()
}

/// The anchors of `removed` that belong to `known` users. syncprov's session
/// log reports deletions by entryUUID for the whole database, so a refresh
/// also names entries other tests deleted elsewhere meanwhile; those belong to
/// no record of this scope and the planner passes them by.
fn removed_of<'a>(
    removed: &[String],
    known: impl IntoIterator<Item = &'a DirectoryEntry>,
) -> BTreeSet<String> {
    let known: BTreeSet<&str> = known.into_iter().map(|e| e.anchor.as_str()).collect();
    removed
        .iter()
        .filter(|a| known.contains(a.as_str()))
        .cloned()
        .collect()
}

fn names(entries: &BTreeMap<String, DirectoryEntry>) -> BTreeSet<&str> {
    entries.keys().map(String::as_str).collect()
}

// ---------------------------------------------------------------- OpenLDAP

/// An inetOrgPerson in the test OU.
fn person_ldif(ou: &TestOu<'_>, uid: &str, employee_type: &str) -> String {
    let mut ldif = ldif_line("dn", &format!("uid={uid},{}", ou.dn));
    ldif += "objectClass: inetOrgPerson\n";
    ldif += &ldif_line("uid", uid);
    ldif += &ldif_line("cn", uid);
    ldif += &ldif_line("sn", uid);
    ldif += &ldif_line("mail", &format!("{uid}@example.org"));
    ldif += &ldif_line("employeeType", employee_type);
    ldif + "\n"
}

fn add_people(ou: &TestOu<'_>, uids: &[&str]) {
    let ldif: String = uids.iter().map(|u| person_ldif(ou, u, "staff")).collect();
    ou.server.add_ldif(&ldif);
}

fn replace(ou: &TestOu<'_>, uid: &str, attribute: &str, value: &str) {
    let mut ldif = ldif_line("dn", &format!("uid={uid},{}", ou.dn));
    ldif += "changetype: modify\n";
    ldif += &format!("replace: {attribute}\n");
    ldif += &ldif_line(attribute, value);
    ou.server.modify_ldif(&ldif);
}

fn delete(ou: &TestOu<'_>, rdn: &str) {
    ou.server
        .as_admin("ldapdelete", &[&format!("{rdn},{}", ou.dn)], None);
}

#[tokio::test]
async fn openldap_full_read_with_cursor_reads_the_whole_scope() {
    let server = Server::slapd();
    let ou = server.test_ou("incfull");
    add_people(&ou, &["fa", "fb", "fc"]);
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.page_size = 2;
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &LdapScope::new(&ou.dn), Timestamp::now()).await;
    assert_eq!(read.view.read, ReadKind::Full);
    assert!(read.view.complete);
    // Each user once over the pages.
    assert_eq!(read.duplicate_anchors, 0);
    assert_eq!(read.skipped_without_anchor, 0);
    assert_eq!(
        names(&by_username(read.view.entries.values())),
        BTreeSet::from(["fa", "fb", "fc"])
    );
    assert!(matches!(cursor, Cursor::SyncRepl { .. }), "{cursor}");
}

#[tokio::test]
async fn openldap_incremental_read_returns_added_modified_locked_and_deleted_users() {
    let server = Server::slapd();
    let ou = server.test_ou("incchanges");
    add_people(&ou, &["unchanged", "modified", "locked", "deleted"]);
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let before = by_username(read.view.entries.values());
    assert_eq!(before.len(), 4);
    assert!(before["locked"].enabled);

    add_people(&ou, &["added"]);
    replace(&ou, "modified", "mail", "new.address@example.org");
    // ppolicy's "locked until an administrator unlocks it".
    replace(&ou, "locked", "pwdAccountLockedTime", "000001010000Z");
    delete(&ou, "uid=deleted");

    let read = changes(&source, &scope, &cursor, Timestamp::now()).await;
    let changed = by_username(read.view.entries.values());
    assert_eq!(
        names(&changed),
        BTreeSet::from(["added", "locked", "modified"])
    );
    assert!(changed["added"].enabled);
    assert_eq!(
        changed["modified"].email.as_deref(),
        Some("new.address@example.org")
    );
    assert!(changed["modified"].enabled);
    assert!(!changed["locked"].enabled, "a locked user is disabled");
    assert_eq!(changed["locked"].anchor, before["locked"].anchor);
    assert!(!read.view.says_unmatched(&before["unchanged"].anchor));
    assert_ne!(read.cursor, cursor);
    // slapd counts a change whose commit it has not finished when the search
    // comes (the delete, just answered) in the next read from the cursor it
    // returned: nothing is lost, some of it comes one read later.
    let mut removed = removed_of(&read.view.removed, before.values());
    let mut view = read.view;
    if removed.is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let next = changes(&source, &scope, &read.cursor, Timestamp::now()).await;
        removed = removed_of(&next.view.removed, before.values());
        view = next.view;
    }
    assert_eq!(removed, BTreeSet::from([before["deleted"].anchor.clone()]));
    assert!(view.says_unmatched(&before["deleted"].anchor));
    // Absence from an incremental view says nothing.
    assert!(!view.says_unmatched(&before["unchanged"].anchor));
}

#[tokio::test]
async fn openldap_incremental_read_with_no_changes_returns_nothing() {
    let server = Server::slapd();
    let ou = server.test_ou("incnone");
    add_people(&ou, &["na", "nb"]);
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let ours = || read.view.entries.values();
    let quiet = changes(&source, &scope, &cursor, Timestamp::now()).await;
    // Nothing new: at most an entry the full read already saw, as it saw it (the
    // server's cookie may trail its own last write by a moment, and a repeat is
    // the safe side).
    for (anchor, entry) in &quiet.view.entries {
        assert_eq!(read.view.entries.get(anchor), Some(entry), "{anchor}");
    }
    assert!(removed_of(&quiet.view.removed, ours()).is_empty());

    replace(&ou, "na", "mail", "na2@example.org");
    // While other writes are in flight (other tests share the server), slapd's
    // cookie may trail its last write a moment: a read then sees nothing yet and
    // returns a cookie that still precedes the change. Read on from each cursor
    // returned, as runs do: the change must come, never be skipped.
    let mut from = quiet.cursor.clone();
    let mut first = changes(&source, &scope, &from, Timestamp::now()).await;
    for _ in 0..50 {
        if !first.view.entries.is_empty() {
            break;
        }
        from = first.cursor.clone();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        first = changes(&source, &scope, &from, Timestamp::now()).await;
    }
    assert_eq!(
        names(&by_username(first.view.entries.values())),
        BTreeSet::from(["na"])
    );
    // From the cursor the last read returned, the same change is not read again.
    let second = changes(&source, &scope, &first.cursor, Timestamp::now()).await;
    assert!(second.view.entries.is_empty(), "{:?}", second.view.entries);
    assert!(removed_of(&second.view.removed, ours()).is_empty());
}

#[tokio::test]
async fn openldap_user_that_leaves_the_filter_is_reported_removed() {
    let server = Server::slapd();
    let ou = server.test_ou("incleaves");
    add_people(&ou, &["stays", "leaves"]);
    let settings = server.settings(Flavor::OpenLdap);
    let mut scope = LdapScope::new(&ou.dn);
    scope.filter = Some("(employeeType=staff)".into());
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let before = by_username(read.view.entries.values());

    replace(&ou, "leaves", "employeeType", "contractor");
    let read = changes(&source, &scope, &cursor, Timestamp::now()).await;
    assert!(read.view.entries.is_empty());
    assert_eq!(
        removed_of(&read.view.removed, before.values()),
        BTreeSet::from([before["leaves"].anchor.clone()])
    );
}

/// groupOfNames `cn` in the test OU with the users `uids`.
fn group_ldif(ou: &TestOu<'_>, cn: &str, uids: &[String]) -> (String, String) {
    let dn = format!("cn={cn},{}", ou.dn);
    let mut ldif = ldif_line("dn", &dn);
    ldif += "objectClass: groupOfNames\n";
    ldif += &ldif_line("cn", cn);
    for uid in uids {
        ldif += &ldif_line("member", &format!("uid={uid},{}", ou.dn));
    }
    (dn, ldif)
}

#[tokio::test]
async fn openldap_a_changed_group_reports_who_left_it_and_reads_who_joined() {
    const MEMBERS: usize = 100;
    let server = Server::slapd();
    let ou = server.test_ou("incgroup");
    let uids: Vec<String> = (0..=MEMBERS).map(|i| format!("m{i:04}")).collect();
    let uid_refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    add_people(&ou, &uid_refs);
    // Every user but the last is a member.
    let (group, ldif) = group_ldif(&ou, "members", &uids[..MEMBERS]);
    server.add_ldif(&ldif);
    let mut scope = LdapScope::new(&ou.dn);
    scope.member_of = vec![group.clone()];
    let source = source(&server.settings(Flavor::OpenLdap));
    let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let before = by_username(read.view.entries.values());
    assert_eq!(before.len(), MEMBERS);
    let held: Vec<String> = before.values().map(|e| e.anchor.clone()).collect();

    // Nothing changed: no membership read, nothing reported.
    let started = std::time::Instant::now();
    let quiet = changes_holding(&source, &scope, &cursor, &held, Timestamp::now()).await;
    let quiet_ms = started.elapsed().as_millis();
    assert!(quiet.view.entries.is_empty());
    assert!(removed_of(&quiet.view.removed, before.values()).is_empty());

    let (left, joined) = (&uids[0], &uids[MEMBERS]);
    let mut change = ldif_line("dn", &group);
    change += "changetype: modify\ndelete: member\n";
    change += &ldif_line("member", &format!("uid={left},{}", ou.dn));
    change += "-\nadd: member\n";
    change += &ldif_line("member", &format!("uid={joined},{}", ou.dn));
    server.modify_ldif(&change);

    let started = std::time::Instant::now();
    let read = changes_holding(&source, &scope, &cursor, &held, Timestamp::now()).await;
    let reread_ms = started.elapsed().as_millis();
    assert_eq!(
        removed_of(&read.view.removed, before.values()),
        BTreeSet::from([before[left].anchor.clone()]),
        "the member who left is reported, and only they"
    );
    assert_eq!(
        names(&by_username(read.view.entries.values())),
        BTreeSet::from([joined.as_str()]),
        "the member who joined is read"
    );
    println!(
        "incremental read of a {MEMBERS}-member scope: {quiet_ms} ms with no group change, \
         {reread_ms} ms with the membership read again"
    );
}

#[tokio::test]
async fn openldap_incremental_reads_work_over_start_tls_and_ldaps() {
    let server = Server::slapd();
    let ou = server.test_ou("inctls");
    add_people(&ou, &["ta"]);
    let scope = LdapScope::new(&ou.dn);
    let mut start_tls = server.settings(Flavor::OpenLdap);
    start_tls.start_tls = true;
    start_tls.ca_pem = Some(server.ca_pem.clone());
    let mut ldaps = server.settings(Flavor::OpenLdap);
    ldaps.url = server.ldaps_url.clone();
    ldaps.ca_pem = Some(server.ca_pem.clone());
    for (i, settings) in [start_tls, ldaps].iter().enumerate() {
        let source = source(settings);
        // The cookie search and the refresh run on the same secured session
        // as the paged reads.
        let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
        assert_eq!(read.view.entries.len(), 1);
        let mail = format!("ta{i}@example.org");
        replace(&ou, "ta", "mail", &mail);
        let read = changes(&source, &scope, &cursor, Timestamp::now()).await;
        let changed = by_username(read.view.entries.values());
        assert_eq!(changed["ta"].email.as_deref(), Some(mail.as_str()));
    }
}

#[tokio::test]
async fn openldap_garbage_cookie_requires_a_full_read() {
    let server = Server::slapd();
    let ou = server.test_ou("incgarbage");
    add_people(&ou, &["ga"]);
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (_, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let Cursor::SyncRepl { scope_key, .. } = cursor else {
        panic!("an OpenLDAP cursor is a syncrepl cookie");
    };
    // slapd would answer these with the whole scope as if it were new (the
    // first two) or refuse them (a cookie from the future): never an empty
    // or a silently complete-looking incremental read.
    for cookie in [
        "garbage",
        "csn=20200101000000.000000Z#000000#000#000000",
        "rid=000,csn=20991231235959.999999Z#000000#000#000000",
    ] {
        let forged = Cursor::SyncRepl {
            scope_key: scope_key.clone(),
            cookie: cookie.into(),
        };
        assert_eq!(
            incremental(&source, &scope, &forged, Timestamp::now()).await,
            IncrementalOutcome::FullReadRequired(FullReadReason::CursorRejected),
            "{cookie}"
        );
    }
}

#[tokio::test]
async fn openldap_cookie_older_than_the_session_log_requires_a_full_read() {
    let server = Server::slapd();
    let ou = server.test_ou("incold");
    add_people(&ou, &["oa"]);
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (_, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let Cursor::SyncRepl { scope_key, .. } = cursor else {
        panic!("an OpenLDAP cursor is a syncrepl cookie");
    };
    // Before anything in the session log: slapd can only list what is still
    // there (a present phase), which says nothing about deletions by itself.
    let old = Cursor::SyncRepl {
        scope_key,
        cookie: "rid=000,csn=20000101000000.000000Z#000000#000#000000".into(),
    };
    assert_eq!(
        incremental(&source, &scope, &old, Timestamp::now()).await,
        IncrementalOutcome::FullReadRequired(FullReadReason::HistoryUnavailable)
    );
}

#[tokio::test]
async fn changed_mapping_requires_a_full_read() {
    let server = Server::slapd();
    let ou = server.test_ou("incscope");
    add_people(&ou, &["sa"]);
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (_, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let mut narrower = scope.clone();
    narrower.filter = Some("(employeeType=staff)".into());
    assert_eq!(
        incremental(&source, &narrower, &cursor, Timestamp::now()).await,
        IncrementalOutcome::FullReadRequired(FullReadReason::ScopeChanged)
    );
    let mut more = scope.clone();
    more.attributes
        .extra
        .insert("type".into(), "employeeType".into());
    assert_eq!(
        incremental(&source, &more, &cursor, Timestamp::now()).await,
        IncrementalOutcome::FullReadRequired(FullReadReason::ScopeChanged)
    );
}

#[tokio::test]
async fn generic_flavor_reads_fully_without_a_cursor() {
    let server = Server::slapd();
    let ou = server.test_ou("incgeneric");
    add_people(&ou, &["xa"]);
    let mut settings = server.settings(Flavor::Generic);
    settings.anchor_attribute = Some("entryUUID".into());
    let source = source(&settings);
    let mut scope = LdapScope::new(&ou.dn);
    // Generic servers have no user filter preset.
    scope.filter = Some("(objectClass=inetOrgPerson)".into());
    let (read, cursor) = source
        .read_full_with_cursor(&scope, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(read.view.entries.len(), 1);
    assert_eq!(cursor, None);
}

// ---------------------------------------------------------------- Samba AD

/// sAMAccountNames are limited to 20 characters and unique in the domain.
fn sam(prefix: &str) -> String {
    format!("{prefix}{}", short_unique())
}

fn ad_user_dn(ou: &TestOu<'_>, sam: &str) -> String {
    format!("CN={sam},{}", ou.dn)
}

/// Enabled AD users (PASSWD_NOTREQD, so no password is needed), with an
/// optional `accountExpires`.
fn add_ad_users(ou: &TestOu<'_>, users: &[(&str, Option<&str>)]) {
    let mut ldif = String::new();
    for (sam, expires) in users {
        ldif += &format!("dn: {}\nobjectClass: user\n", ad_user_dn(ou, sam));
        ldif += &format!("sAMAccountName: {sam}\n");
        ldif += &format!("mail: {sam}@mail.corp.example\n");
        ldif += "userAccountControl: 544\n";
        if let Some(filetime) = expires {
            ldif += &format!("accountExpires: {filetime}\n");
        }
        ldif += "\n";
    }
    ou.server.add_ldif(&ldif);
}

fn ad_replace(ou: &TestOu<'_>, sam: &str, attribute: &str, value: &str) {
    ou.server.modify_ldif(&format!(
        "dn: {}\nchangetype: modify\nreplace: {attribute}\n{attribute}: {value}\n",
        ad_user_dn(ou, sam)
    ));
}

#[tokio::test]
async fn ad_incremental_read_returns_modified_and_disabled_users_only() {
    let server = Server::samba();
    let ou = server.test_ou("adinc");
    let (unchanged, modified, disabled) = (sam("iu"), sam("im"), sam("id"));
    add_ad_users(
        &ou,
        &[(&unchanged, None), (&modified, None), (&disabled, None)],
    );
    let settings = server.settings(Flavor::ActiveDirectory);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    assert_eq!(read.view.entries.len(), 3);
    assert!(matches!(cursor, Cursor::UsnChanged { .. }), "{cursor}");

    ad_replace(&ou, &modified, "mail", "changed@mail.corp.example");
    server.script(&["tool", "user", "disable", &disabled], None);
    let added = sam("ia");
    add_ad_users(&ou, &[(&added, None)]);

    let read = changes(&source, &scope, &cursor, Timestamp::now()).await;
    let changed = by_username(read.view.entries.values());
    assert_eq!(
        names(&changed),
        BTreeSet::from([added.as_str(), disabled.as_str(), modified.as_str()])
    );
    assert_eq!(
        changed[&modified].email.as_deref(),
        Some("changed@mail.corp.example")
    );
    assert!(changed[&modified].enabled);
    assert!(
        !changed[&disabled].enabled,
        "a disabled user is not enabled"
    );
    assert!(changed[&added].enabled);
    // uSNChanged cannot tell what left the scope.
    assert!(read.view.removed.is_empty());

    // From the returned cursor, nothing is read again.
    let again = changes(&source, &scope, &read.cursor, Timestamp::now()).await;
    assert!(again.view.entries.is_empty(), "{:?}", again.view.entries);
}

#[tokio::test]
async fn ad_cursor_of_another_dc_requires_a_full_read() {
    let server = Server::samba();
    let ou = server.test_ou("adotherdc");
    add_ad_users(&ou, &[(&sam("od"), None)]);
    let settings = server.settings(Flavor::ActiveDirectory);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (_, cursor) = full_read(&source, &scope, Timestamp::now()).await;
    let Cursor::UsnChanged {
        scope_key,
        highest_usn,
        read_at,
        invocation_id,
    } = cursor
    else {
        panic!("an AD cursor is a USN");
    };
    let other = Cursor::UsnChanged {
        scope_key,
        invocation_id: "00000000-0000-0000-0000-000000000001".into(),
        highest_usn,
        read_at,
    };
    assert_ne!(invocation_id, "00000000-0000-0000-0000-000000000001");
    assert_eq!(
        incremental(&source, &scope, &other, Timestamp::now()).await,
        IncrementalOutcome::FullReadRequired(FullReadReason::DifferentServer)
    );
}

#[tokio::test]
async fn ad_account_that_expires_between_reads_is_read_as_disabled() {
    let server = Server::samba();
    let ou = server.test_ou("adexpiry");
    let now = Timestamp::now();
    let in_an_hour = timestamp_to_filetime(now + SignedDuration::from_hours(1)).to_string();
    let in_a_year = timestamp_to_filetime(now + SignedDuration::from_hours(24 * 365)).to_string();
    let (expiring, later) = (sam("ex"), sam("el"));
    add_ad_users(
        &ou,
        &[(&expiring, Some(&in_an_hour)), (&later, Some(&in_a_year))],
    );
    let settings = server.settings(Flavor::ActiveDirectory);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let (read, cursor) = full_read(&source, &scope, now).await;
    assert!(by_username(read.view.entries.values())[&expiring].enabled);

    // Two hours on, without a write to either account.
    let read = changes(
        &source,
        &scope,
        &cursor,
        now + SignedDuration::from_hours(2),
    )
    .await;
    let changed = by_username(read.view.entries.values());
    assert_eq!(names(&changed), BTreeSet::from([expiring.as_str()]));
    assert!(!changed[&expiring].enabled);
}
