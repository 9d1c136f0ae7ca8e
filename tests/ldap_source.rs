//! The LDAP source against real servers: OpenLDAP (tests/slapd.sh) and a Samba
//! AD DC (tests/samba.sh). Each test brings its server up if needed and writes
//! its own users under its own OU (see `ldap_support`).
//!
//! The tests go through [`Source`], as the controller does: full reads with
//! `read_with_cursor` (what a run reads), lookups with `lookup`, probes with
//! `probe`. Incremental reads have tests/ldap_incremental.rs.

mod ldap_support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::time::Duration;

use jiff::Timestamp;
use ldap_support::{PrivateSlapd, Server, TestOu, free_port, ldif_line, short_unique};
use usersync::core::DirectoryEntry;
use usersync::directory::ldap::{
    Flavor, IncrementalSource, LdapScope, LdapSettings, LdapSource, ProbeReport, SearchScope,
};
use usersync::directory::{Read, Scope, Source, SourceError};
use usersync::secret::SecretString;

/// An OpenLDAP test user.
#[derive(Default)]
struct Person<'a> {
    uid: &'a str,
    cn: &'a str,
    mail: Option<&'a str>,
    display_name: Option<&'a str>,
    employee_type: Option<&'a str>,
    locked: bool,
}

impl Person<'_> {
    fn ldif(&self, ou: &str) -> String {
        let mut out = ldif_line("dn", &format!("uid={},{ou}", ldap3::dn_escape(self.uid)));
        out += "objectClass: inetOrgPerson\n";
        out += &ldif_line("uid", self.uid);
        out += &ldif_line("cn", self.cn);
        out += &ldif_line("sn", self.cn);
        for (attr, value) in [
            ("mail", self.mail),
            ("displayName", self.display_name),
            ("employeeType", self.employee_type),
        ] {
            if let Some(value) = value {
                out += &ldif_line(attr, value);
            }
        }
        if self.locked {
            // ppolicy's "locked until an administrator unlocks it".
            out += "pwdAccountLockedTime: 000001010000Z\n";
        }
        out + "\n"
    }
}

fn add_people(ou: &TestOu<'_>, people: &[Person<'_>]) {
    let ldif: String = people.iter().map(|p| p.ldif(&ou.dn)).collect();
    ou.server.add_ldif(&ldif);
}

/// A groupOfNames in the test OU with `members` (uids of the OU); its DN.
fn add_group(ou: &TestOu<'_>, cn: &str, members: &[&str]) -> String {
    let dn = format!("cn={},{}", ldap3::dn_escape(cn), ou.dn);
    let mut ldif = ldif_line("dn", &dn) + "objectClass: groupOfNames\n";
    ldif += &ldif_line("cn", cn);
    for uid in members {
        ldif += &ldif_line(
            "member",
            &format!("uid={},{}", ldap3::dn_escape(*uid), ou.dn),
        );
    }
    ou.server.add_ldif(&ldif);
    dn
}

/// The source of an LDAP connector, made as the controller makes it
/// (`ldap_source_for` in src/controller/connection.rs).
fn source(settings: &LdapSettings) -> Source {
    Source::Ldap(
        LdapSource::new(settings).expect("valid settings"),
        Box::new(IncrementalSource::new(settings).expect("valid settings")),
    )
}

/// A full read of `scope` at `now`, as a run makes it.
async fn try_read(
    settings: &LdapSettings,
    scope: &LdapScope,
    now: Timestamp,
) -> Result<Read, SourceError> {
    let read = source(settings)
        .read_with_cursor(&Scope::Ldap(scope.clone()), &[], now)
        .await?;
    Ok(read.read)
}

async fn read(settings: &LdapSettings, scope: &LdapScope) -> Read {
    try_read(settings, scope, Timestamp::now())
        .await
        .unwrap_or_else(|e| panic!("read of {} failed: {e}", scope.base_dn))
}

/// A lookup of `anchors` in `scope`, as the planner makes one for rule 9.
async fn lookup(
    source: &Source,
    scope: &LdapScope,
    anchors: &[String],
    now: Timestamp,
) -> Vec<DirectoryEntry> {
    source
        .lookup(&Scope::Ldap(scope.clone()), anchors, now)
        .await
        .unwrap_or_else(|e| panic!("lookup in {} failed: {e}", scope.base_dn))
}

/// What the probe behind [`Source::probe`] saw: the root DSE's naming
/// contexts, which the controller does not keep.
async fn probe_report(settings: &LdapSettings) -> ProbeReport {
    let Source::Ldap(ldap, _) = source(settings) else {
        unreachable!("an LDAP source")
    };
    ldap.probe().await.expect("probe")
}

/// The entries of a read, by username.
fn by_username(read: &Read) -> BTreeMap<String, DirectoryEntry> {
    read.view
        .entries
        .values()
        .map(|e| {
            (
                e.username.clone().expect("every test user has a username"),
                e.clone(),
            )
        })
        .collect()
}

fn usernames(entries: &[DirectoryEntry]) -> BTreeSet<String> {
    entries.iter().filter_map(|e| e.username.clone()).collect()
}

// ---------------------------------------------------------------- OpenLDAP

#[tokio::test]
async fn paged_read_returns_every_user_exactly_once_with_correct_fields() {
    let server = Server::slapd();
    let ou = server.test_ou("paged");
    let uids: Vec<String> = (0..120).map(|i| format!("p{i:03}")).collect();
    let people: Vec<Person<'_>> = uids
        .iter()
        .enumerate()
        .map(|(i, uid)| Person {
            uid,
            cn: uid,
            mail: Some("shared@example.org"),
            // Every tenth user has no displayName: the cn preset fills in.
            display_name: (i % 10 != 0).then_some("Display"),
            employee_type: Some(if i % 2 == 0 { "staff" } else { "contractor" }),
            locked: false,
        })
        .collect();
    add_people(&ou, &people);

    let mut settings = server.settings(Flavor::OpenLdap);
    settings.page_size = 25;
    let mut scope = LdapScope::new(&ou.dn);
    scope
        .attributes
        .extra
        .insert("type".into(), "employeeType".into());
    let result = read(&settings, &scope).await;

    assert_eq!(result.view.entries.len(), 120);
    assert_eq!(result.skipped_without_anchor, 0);
    assert!(result.view.complete);
    // The anchors are the server's entryUUIDs.
    let listing = server.as_admin(
        "ldapsearch",
        &[
            "-LLL",
            "-b",
            &ou.dn,
            "(objectClass=inetOrgPerson)",
            "entryUUID",
        ],
        None,
    );
    let expected_anchors: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.strip_prefix("entryUUID: "))
        .collect();
    let anchors: BTreeSet<&str> = result.view.entries.keys().map(String::as_str).collect();
    assert_eq!(anchors, expected_anchors);

    let users = by_username(&result);
    for (i, uid) in uids.iter().enumerate() {
        let entry = &users[uid];
        assert!(entry.enabled, "{uid}");
        assert_eq!(entry.email.as_deref(), Some("shared@example.org"));
        let display = if i % 10 == 0 { uid.as_str() } else { "Display" };
        assert_eq!(entry.display_name.as_deref(), Some(display), "{uid}");
        assert_eq!(entry.user_principal_name, None);
        let kind = if i % 2 == 0 { "staff" } else { "contractor" };
        assert_eq!(entry.attributes.get("type").map(String::as_str), Some(kind));
    }
}

#[tokio::test]
async fn locked_users_are_disabled() {
    let server = Server::slapd();
    let ou = server.test_ou("locked");
    add_people(
        &ou,
        &[
            Person {
                uid: "active",
                cn: "A",
                ..Person::default()
            },
            Person {
                uid: "locked1",
                cn: "L1",
                locked: true,
                ..Person::default()
            },
            Person {
                uid: "locked2",
                cn: "L2",
                locked: true,
                ..Person::default()
            },
        ],
    );
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.page_size = 2;
    let users = by_username(&read(&settings, &LdapScope::new(&ou.dn)).await);
    let enabled: BTreeMap<&str, bool> =
        users.iter().map(|(u, e)| (u.as_str(), e.enabled)).collect();
    assert_eq!(
        enabled,
        BTreeMap::from([("active", true), ("locked1", false), ("locked2", false)])
    );
}

#[tokio::test]
async fn member_of_scope_reads_only_group_members() {
    let server = Server::slapd();
    let ou = server.test_ou("memberof");
    add_people(
        &ou,
        &[
            Person {
                uid: "in1",
                cn: "In 1",
                ..Person::default()
            },
            Person {
                uid: "in2",
                cn: "In 2",
                locked: true,
                ..Person::default()
            },
            Person {
                uid: "out",
                cn: "Out",
                ..Person::default()
            },
        ],
    );
    add_group(&ou, "Team In", &["in1", "in2"]);
    add_group(&ou, "Team Out", &["out"]);

    let mut scope = LdapScope::new(&ou.dn);
    // Spelled with other case and spacing: the server compares DNs itself.
    scope.member_of = vec![format!("CN=team in, {}", ou.dn.to_uppercase())];
    let users = by_username(&read(&server.settings(Flavor::OpenLdap), &scope).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["in1", "in2"]);
    assert!(users["in1"].enabled);
    assert!(!users["in2"].enabled);
}

#[tokio::test]
async fn member_of_group_dn_with_special_characters_is_escaped() {
    let server = Server::slapd();
    let ou = server.test_ou("groupesc");
    add_people(
        &ou,
        &[
            Person {
                uid: "star",
                cn: "S",
                ..Person::default()
            },
            Person {
                uid: "other",
                cn: "O",
                ..Person::default()
            },
            Person {
                uid: "comma",
                cn: "C",
                ..Person::default()
            },
        ],
    );
    let star_group = add_group(&ou, "ops (a*b)", &["star"]);
    add_group(&ou, "ops (axb)", &["other"]);
    // Its DN holds an escaped comma (`cn=ops\, a`): the backslash is escaped too.
    let comma_group = add_group(&ou, "ops, a", &["comma"]);
    let settings = server.settings(Flavor::OpenLdap);

    let mut scope = LdapScope::new(&ou.dn);
    scope.member_of = vec![star_group];
    let users = by_username(&read(&settings, &scope).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["star"]);
    scope.member_of = vec![comma_group];
    let users = by_username(&read(&settings, &scope).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["comma"]);
}

#[tokio::test]
async fn lookup_escapes_special_characters_and_matches_only_exactly() {
    let server = Server::slapd();
    let ou = server.test_ou("lookupesc");
    add_people(
        &ou,
        &[
            Person {
                uid: "x(y*z",
                cn: "exact",
                ..Person::default()
            },
            Person {
                uid: "x(yQz",
                cn: "wildcard match",
                ..Person::default()
            },
            Person {
                uid: "x(y",
                cn: "prefix",
                ..Person::default()
            },
            Person {
                uid: r"back\slash",
                cn: "backslash",
                ..Person::default()
            },
            Person {
                uid: "josé",
                cn: "non-ascii",
                ..Person::default()
            },
        ],
    );
    // Generic flavor with uid as the anchor: the anchor values go into the filter.
    let mut settings = server.settings(Flavor::Generic);
    settings.anchor_attribute = Some("uid".into());
    let mut scope = LdapScope::new(&ou.dn);
    scope.filter = Some("(objectClass=inetOrgPerson)".into());
    let source = source(&settings);
    let now = Timestamp::now();

    let find = |anchors: Vec<&str>| {
        let anchors: Vec<String> = anchors.into_iter().map(str::to_owned).collect();
        let (source, scope) = (&source, &scope);
        async move { lookup(source, scope, &anchors, now).await }
    };
    let found = find(vec!["x(y*z"]).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].anchor, "x(y*z");
    assert_eq!(found[0].display_name.as_deref(), Some("exact"));
    assert!(find(vec!["*"]).await.is_empty());
    assert!(find(vec!["x(y*"]).await.is_empty());
    assert_eq!(
        usernames(&find(vec![r"back\slash"]).await),
        BTreeSet::from([r"back\slash".to_owned()])
    );
    assert_eq!(
        usernames(&find(vec!["josé"]).await),
        BTreeSet::from(["josé".to_owned()])
    );
}

#[tokio::test]
async fn lookup_by_anchor_finds_exactly_that_user() {
    let server = Server::slapd();
    let ou = server.test_ou("lookup");
    let other = server.test_ou("lookup-other");
    add_people(
        &ou,
        &[
            Person {
                uid: "alice",
                cn: "Alice",
                mail: Some("alice@example.org"),
                ..Person::default()
            },
            Person {
                uid: "bob",
                cn: "Bob",
                locked: true,
                ..Person::default()
            },
            Person {
                uid: "carol",
                cn: "Carol",
                ..Person::default()
            },
        ],
    );
    add_people(
        &other,
        &[Person {
            uid: "dave",
            cn: "Dave",
            ..Person::default()
        }],
    );
    let settings = server.settings(Flavor::OpenLdap);
    let scope = LdapScope::new(&ou.dn);
    let everyone = by_username(&read(&settings, &scope).await);
    let outsider = by_username(&read(&settings, &LdapScope::new(&other.dn)).await);
    let source = source(&settings);
    let now = Timestamp::now();

    let alice = &everyone["alice"];
    let found = lookup(&source, &scope, std::slice::from_ref(&alice.anchor), now).await;
    assert_eq!(found, vec![alice.clone()]);

    // Several at once, a disabled one among them, one outside the scope and one
    // that exists nowhere: only the scope's users come back, disabled as such.
    let anchors = vec![
        everyone["bob"].anchor.clone(),
        everyone["carol"].anchor.clone(),
        outsider["dave"].anchor.clone(),
        "00000000-0000-0000-0000-000000000000".to_owned(),
    ];
    let mut found = lookup(&source, &scope, &anchors, now).await;
    found.sort_by(|a, b| a.username.cmp(&b.username));
    assert_eq!(
        found,
        vec![everyone["bob"].clone(), everyone["carol"].clone()]
    );
    assert!(!found[0].enabled);
}

#[tokio::test]
async fn one_level_scope_reads_only_direct_children() {
    let server = Server::slapd();
    let ou = server.test_ou("onelevel");
    add_people(
        &ou,
        &[Person {
            uid: "top",
            cn: "Top",
            ..Person::default()
        }],
    );
    let sub = format!("ou=sub,{}", ou.dn);
    server.add_ldif(&format!("dn: {sub}\nobjectClass: organizationalUnit\n"));
    server.add_ldif(
        &Person {
            uid: "nested",
            cn: "Nested",
            ..Person::default()
        }
        .ldif(&sub),
    );
    let settings = server.settings(Flavor::OpenLdap);

    let mut scope = LdapScope::new(&ou.dn);
    assert_eq!(by_username(&read(&settings, &scope).await).len(), 2);
    scope.scope = SearchScope::OneLevel;
    let users = by_username(&read(&settings, &scope).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["top"]);
}

#[tokio::test]
async fn probe_reads_the_root_dse() {
    let server = Server::slapd();
    let settings = server.settings(Flavor::OpenLdap);
    let latency = source(&settings).probe().await.unwrap();
    assert!(latency > Duration::ZERO);
    let report = probe_report(&settings).await;
    assert!(
        report.naming_contexts.contains(&server.base_dn),
        "{report:?}"
    );
    assert!(report.latency > Duration::ZERO);
}

#[tokio::test]
async fn start_tls_with_the_ca_works() {
    let server = Server::slapd();
    let ou = server.test_ou("starttls");
    add_people(
        &ou,
        &[Person {
            uid: "tls",
            cn: "TLS",
            ..Person::default()
        }],
    );
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.start_tls = true;
    settings.ca_pem = Some(server.ca_pem.clone());
    source(&settings).probe().await.unwrap();
    let users = by_username(&read(&settings, &LdapScope::new(&ou.dn)).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["tls"]);
}

#[tokio::test]
async fn ldaps_with_the_ca_works() {
    let server = Server::slapd();
    let ou = server.test_ou("ldaps");
    add_people(
        &ou,
        &[Person {
            uid: "tls",
            cn: "TLS",
            ..Person::default()
        }],
    );
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.url = server.ldaps_url.clone();
    settings.ca_pem = Some(server.ca_pem.clone());
    source(&settings).probe().await.unwrap();
    let users = by_username(&read(&settings, &LdapScope::new(&ou.dn)).await);
    assert_eq!(users.keys().collect::<Vec<_>>(), ["tls"]);
}

#[tokio::test]
async fn ldaps_without_the_ca_fails_with_tls_error() {
    let server = Server::slapd();
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.url = server.ldaps_url.clone();
    let error = source(&settings).probe().await.unwrap_err();
    assert_eq!(error.reason, "TLSError", "{error}");
    let host = settings
        .url
        .trim_start_matches("ldaps://")
        .trim_end_matches('/');
    for part in [
        &format!("the certificate of {host}"),
        "UnknownIssuer",
        "spec.ldap.caSecretRef",
    ] {
        assert!(error.to_string().contains(part), "{part}: {error}");
    }

    // StartTLS checks the certificate the same way.
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.start_tls = true;
    let error = source(&settings).probe().await.unwrap_err();
    assert_eq!(error.reason, "TLSError", "{error}");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    assert!(
        error.to_string().contains("spec.ldap.caSecretRef"),
        "{error}"
    );
}

#[tokio::test]
async fn ldaps_with_insecure_skip_verify_connects() {
    let server = Server::slapd();
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.url = server.ldaps_url.clone();
    settings.insecure_skip_verify = true;
    source(&settings).probe().await.unwrap();
}

#[tokio::test]
async fn ldaps_to_a_plain_ldap_port_fails_with_tls_error() {
    let server = Server::slapd();
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.url = server.url.replacen("ldap://", "ldaps://", 1);
    settings.ca_pem = Some(server.ca_pem.clone());
    let error = source(&settings).probe().await.unwrap_err();
    assert_eq!(error.reason, "TLSError", "{error}");
}

#[tokio::test]
async fn wrong_password_fails_with_bind_failed_and_hides_the_password() {
    let server = Server::slapd();
    let wrong = format!("Wr0ng-{}", short_unique());
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.bind = Some((server.bind_dn.clone(), SecretString::new(wrong.clone())));
    let probe = source(&settings).probe().await.unwrap_err();
    // The read fails the same way, and no read result is produced.
    let read = try_read(
        &settings,
        &LdapScope::new(&server.base_dn),
        Timestamp::now(),
    )
    .await
    .unwrap_err();
    // And the LDAP error behind them, as the source's own code sees it.
    let Source::Ldap(ldap, _) = source(&settings) else {
        unreachable!("an LDAP source")
    };
    let ldap_error = ldap.probe().await.unwrap_err();
    assert_eq!(ldap_error.reason(), "BindFailed", "{ldap_error}");
    let mut shown = vec![ldap_error.to_string(), format!("{ldap_error:?}")];
    for error in [&probe, &read] {
        assert_eq!(error.reason, "BindFailed", "{error}");
        let display = error.to_string();
        assert!(display.contains(&server.bind_dn), "{display}");
        assert!(display.contains("invalid credentials (49)"), "{display}");
        shown.extend([display, format!("{error:?}")]);
    }
    for shown in &shown {
        assert!(!shown.contains(&wrong), "the password leaked: {shown}");
        assert!(
            !shown.contains(server.bind_password()),
            "the password leaked: {shown}"
        );
    }
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let mut settings = LdapSettings::new(
        format!("ldap://127.0.0.1:{}", free_port()),
        Flavor::OpenLdap,
    );
    settings.timeout = Duration::from_secs(5);
    let error = source(&settings).probe().await.unwrap_err();
    assert_eq!(error.reason, "Unreachable", "{error}");
    let error = try_read(
        &settings,
        &LdapScope::new("dc=example,dc=org"),
        Timestamp::now(),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason, "Unreachable", "{error}");
}

#[tokio::test]
async fn silent_server_times_out() {
    // The kernel accepts the connection into the backlog, but nothing ever answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut settings = LdapSettings::new(format!("ldap://127.0.0.1:{port}"), Flavor::OpenLdap);
    settings.bind = Some(("cn=x".into(), SecretString::new("pw")));
    settings.timeout = Duration::from_millis(500);
    let error = source(&settings).probe().await.unwrap_err();
    assert_eq!(error.reason, "Timeout", "{error}");
    let error = try_read(&settings, &LdapScope::new("dc=x"), Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(error.reason, "Timeout", "{error}");
    drop(listener);
}

#[tokio::test]
async fn read_of_a_missing_base_dn_fails_with_search_failed() {
    let server = Server::slapd();
    let scope = LdapScope::new(format!("ou={},{}", short_unique(), server.base_dn));
    let error = try_read(&server.settings(Flavor::OpenLdap), &scope, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(error.reason, "SearchFailed", "{error}");
    assert!(error.to_string().contains("no such object (32)"), "{error}");
}

#[tokio::test]
async fn size_limit_cuts_the_read_with_size_limit_exceeded() {
    // The limits are server-wide, so this test has an OpenLDAP of its own.
    let private = PrivateSlapd::start("slapd-limits");
    let server = &private.server;
    let ou = server.test_ou("limit");
    let uids: Vec<String> = (0..60).map(|i| format!("l{i:02}")).collect();
    let people: Vec<Person<'_>> = uids
        .iter()
        .map(|uid| Person {
            uid,
            cn: uid,
            ..Person::default()
        })
        .collect();
    add_people(&ou, &people);
    let mut settings = server.settings(Flavor::OpenLdap);
    settings.page_size = 10;
    let scope = LdapScope::new(&ou.dn);
    assert_eq!(read(&settings, &scope).await.view.entries.len(), 60);

    // A paged search may now return 30 entries in all: the read stops there.
    server.script(
        &[
            "limits",
            "size.soft=50 size.hard=50 size.pr=unlimited size.prtotal=30",
        ],
        None,
    );
    let error = try_read(&settings, &scope, Timestamp::now())
        .await
        .unwrap_err();
    assert_eq!(error.reason, "SizeLimitExceeded", "{error}");
    assert!(error.to_string().contains(&ou.dn), "{error}");
}

// ---------------------------------------------------------------- Samba AD

/// An AD test user: created enabled (without a password, as PASSWD_NOTREQD).
struct AdUser<'a> {
    sam: &'a str,
    display_name: &'a str,
    account_expires: Option<&'a str>,
}

fn ad_user_dn(ou: &TestOu<'_>, sam: &str) -> String {
    format!("CN={sam},{}", ou.dn)
}

fn add_ad_users(ou: &TestOu<'_>, users: &[AdUser<'_>]) {
    let mut ldif = String::new();
    for u in users {
        ldif += &format!("dn: {}\nobjectClass: user\n", ad_user_dn(ou, u.sam));
        ldif += &format!("sAMAccountName: {}\n", u.sam);
        ldif += &format!("userPrincipalName: {}@corp.example\n", u.sam);
        ldif += &format!("mail: {}@mail.corp.example\n", u.sam);
        ldif += &ldif_line("displayName", u.display_name);
        // NORMAL_ACCOUNT | PASSWD_NOTREQD: enabled, no password needed.
        ldif += "userAccountControl: 544\n";
        if let Some(filetime) = u.account_expires {
            ldif += &format!("accountExpires: {filetime}\n");
        }
        ldif += "\n";
    }
    ou.server.add_ldif(&ldif);
}

/// An AD global security group in the test OU with `members` (DNs); its DN.
fn add_ad_group(ou: &TestOu<'_>, name: &str, members: &[String]) -> String {
    let dn = format!("CN={name},{}", ou.dn);
    let mut ldif = format!("dn: {dn}\nobjectClass: group\nsAMAccountName: {name}\n");
    for member in members {
        ldif += &format!("member: {member}\n");
    }
    ou.server.add_ldif(&ldif);
    dn
}

/// What `samba-tool user show` says the user's objectGUID is.
fn samba_tool_guid(server: &Server, sam: &str) -> String {
    let out = server.script(
        &["tool", "user", "show", sam, "--attributes=objectGUID"],
        None,
    );
    out.lines()
        .find_map(|l| l.strip_prefix("objectGUID: "))
        .unwrap_or_else(|| panic!("samba-tool printed no objectGUID:\n{out}"))
        .trim()
        .to_owned()
}

/// sAMAccountNames are limited to 20 characters and unique in the domain.
fn sam(prefix: &str) -> String {
    format!("{prefix}{}", short_unique())
}

#[tokio::test]
async fn ad_read_returns_users_of_an_ou_with_correct_fields() {
    let server = Server::samba();
    let ou = server.test_ou("adread");
    let names = [sam("ra"), sam("rb")];
    add_ad_users(
        &ou,
        &[
            AdUser {
                sam: &names[0],
                display_name: "Ann Read",
                account_expires: None,
            },
            AdUser {
                sam: &names[1],
                display_name: "Bob Ré",
                account_expires: Some("0"),
            },
        ],
    );
    let mut settings = server.settings(Flavor::ActiveDirectory);
    settings.page_size = 1;
    let result = read(&settings, &LdapScope::new(&ou.dn)).await;
    assert_eq!(result.skipped_without_anchor, 0);
    let users = by_username(&result);
    assert_eq!(users.len(), 2);
    for (name, display) in names.iter().zip(["Ann Read", "Bob Ré"]) {
        let user = &users[name];
        assert!(user.enabled, "{name}");
        assert_eq!(user.display_name.as_deref(), Some(display));
        assert_eq!(user.email, Some(format!("{name}@mail.corp.example")));
        assert_eq!(
            user.user_principal_name,
            Some(format!("{name}@corp.example"))
        );
    }
}

#[tokio::test]
async fn ad_disabled_user_is_not_enabled() {
    let server = Server::samba();
    let ou = server.test_ou("addisabled");
    let (off, on) = (sam("da"), sam("db"));
    add_ad_users(
        &ou,
        &[
            AdUser {
                sam: &off,
                display_name: "Off",
                account_expires: None,
            },
            AdUser {
                sam: &on,
                display_name: "On",
                account_expires: None,
            },
        ],
    );
    server.script(&["tool", "user", "disable", &off], None);
    let users = by_username(
        &read(
            &server.settings(Flavor::ActiveDirectory),
            &LdapScope::new(&ou.dn),
        )
        .await,
    );
    assert!(!users[&off].enabled);
    assert!(users[&on].enabled);
}

#[tokio::test]
async fn ad_expired_account_is_not_enabled() {
    let server = Server::samba();
    let ou = server.test_ou("adexpired");
    let (expired, current, never) = (sam("ea"), sam("eb"), sam("ec"));
    add_ad_users(
        &ou,
        &[
            // 2020-01-01T00:00:00Z and 2100-01-01T00:00:00Z as FILETIMEs.
            AdUser {
                sam: &expired,
                display_name: "Expired",
                account_expires: Some("132223104000000000"),
            },
            AdUser {
                sam: &current,
                display_name: "Current",
                account_expires: Some("157469184000000000"),
            },
            AdUser {
                sam: &never,
                display_name: "Never",
                account_expires: Some("9223372036854775807"),
            },
        ],
    );
    let settings = server.settings(Flavor::ActiveDirectory);
    let scope = LdapScope::new(&ou.dn);
    let users = by_username(&read(&settings, &scope).await);
    assert!(!users[&expired].enabled);
    assert!(users[&current].enabled);
    assert!(users[&never].enabled);

    // The decision uses the `now` the caller passes: in 2101 the second has expired too.
    let later: Timestamp = "2101-01-01T00:00:00Z".parse().unwrap();
    let result = try_read(&settings, &scope, later).await.unwrap();
    let users = by_username(&result);
    assert!(!users[&current].enabled);
    assert!(users[&never].enabled);
}

#[tokio::test]
async fn ad_nested_group_membership_is_matched() {
    let server = Server::samba();
    let ou = server.test_ou("adnested");
    let (nested, direct, outside) = (sam("na"), sam("nb"), sam("nc"));
    add_ad_users(
        &ou,
        &[
            AdUser {
                sam: &nested,
                display_name: "Nested",
                account_expires: None,
            },
            AdUser {
                sam: &direct,
                display_name: "Direct",
                account_expires: None,
            },
            AdUser {
                sam: &outside,
                display_name: "Outside",
                account_expires: None,
            },
        ],
    );
    // nested ∈ A, A ∈ B, direct ∈ B: the scope "members of B" is {nested, direct}.
    let group_a = add_ad_group(&ou, &sam("ga"), &[ad_user_dn(&ou, &nested)]);
    let group_b = add_ad_group(&ou, &sam("gb"), &[group_a, ad_user_dn(&ou, &direct)]);
    let mut scope = LdapScope::new(&ou.dn);
    scope.member_of = vec![group_b];
    let users = by_username(&read(&server.settings(Flavor::ActiveDirectory), &scope).await);
    assert_eq!(
        users.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([nested, direct])
    );
}

#[tokio::test]
async fn ad_object_guid_matches_samba_tool() {
    let server = Server::samba();
    let ou = server.test_ou("adguid");
    let name = sam("g");
    add_ad_users(
        &ou,
        &[AdUser {
            sam: &name,
            display_name: "Guid",
            account_expires: None,
        }],
    );
    let users = by_username(
        &read(
            &server.settings(Flavor::ActiveDirectory),
            &LdapScope::new(&ou.dn),
        )
        .await,
    );
    assert_eq!(users[&name].anchor, samba_tool_guid(server, &name));
}

#[tokio::test]
async fn ad_lookup_by_object_guid_finds_the_user() {
    let server = Server::samba();
    let ou = server.test_ou("adlookup");
    let (wanted, other) = (sam("la"), sam("lb"));
    add_ad_users(
        &ou,
        &[
            AdUser {
                sam: &wanted,
                display_name: "Wanted",
                account_expires: None,
            },
            AdUser {
                sam: &other,
                display_name: "Other",
                account_expires: None,
            },
        ],
    );
    let guid = samba_tool_guid(server, &wanted);
    let settings = server.settings(Flavor::ActiveDirectory);
    let scope = LdapScope::new(&ou.dn);
    let source = source(&settings);
    let now = Timestamp::now();

    let found = lookup(&source, &scope, std::slice::from_ref(&guid), now).await;
    assert_eq!(usernames(&found), BTreeSet::from([wanted.clone()]));
    assert_eq!(found[0].anchor, guid);
    // Windows tools print GUIDs upper-case and in braces; the same user is found.
    let braced = format!("{{{}}}", guid.to_uppercase());
    let found = lookup(&source, &scope, &[braced], now).await;
    assert_eq!(usernames(&found), BTreeSet::from([wanted]));
    assert!(
        lookup(&source, &scope, &["not-a-guid".into()], now)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn ad_ldaps_with_the_ca_works() {
    let server = Server::samba();
    let mut settings = server.settings(Flavor::ActiveDirectory);
    settings.url = server.ldaps_url.clone();
    settings.ca_pem = Some(server.ca_pem.clone());
    source(&settings).probe().await.unwrap();
    let report = probe_report(&settings).await;
    assert!(
        report
            .naming_contexts
            .iter()
            .any(|c| c.eq_ignore_ascii_case(&server.base_dn)),
        "{report:?}"
    );
}
