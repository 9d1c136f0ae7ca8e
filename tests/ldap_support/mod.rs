//! The real directories behind `tests/ldap_source.rs`: the shared OpenLDAP
//! (tests/slapd.sh) and Samba AD DC (tests/samba.sh) are brought up on first use
//! (reused when running), a private OpenLDAP can be started for tests that
//! change server-wide settings, and every test writes its users under its own
//! OU, removed again when the test ends, so tests run in parallel and never
//! touch the seeded data. The scripts honour `USERSYNC_STATE`.

#![allow(dead_code)] // Each test binary uses a different part of the harness.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use usersync::directory::ldap::{Flavor, LdapSettings};
use usersync::secret::SecretString;

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A name no other test (in this or a parallel run) uses.
pub fn unique(label: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "t-{label}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A short token (8 hex digits) for names with a length limit, such as AD's
/// 20-character sAMAccountName.
pub fn short_unique() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mixed = (nanos as u64)
        ^ (u64::from(std::process::id()) << 40)
        ^ (u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 20);
    // A multiplicative hash spreads the bits, so close timestamps differ early.
    format!(
        "{:08x}",
        (mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Slapd,
    Samba,
}

/// One running directory server and how to reach it.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    pub url: String,
    pub ldaps_url: String,
    pub base_dn: String,
    pub bind_dn: String,
    bind_password: String,
    pub ca_pem: Vec<u8>,
    /// Extra environment for the script (a private instance's directory and ports).
    script_env: Vec<(String, String)>,
}

impl Server {
    /// The shared OpenLDAP server, started once per test binary.
    pub fn slapd() -> &'static Server {
        static SLAPD: OnceLock<Server> = OnceLock::new();
        SLAPD.get_or_init(|| Server::start(Kind::Slapd, Vec::new()))
    }

    /// The shared Samba AD DC, started once per test binary.
    pub fn samba() -> &'static Server {
        static SAMBA: OnceLock<Server> = OnceLock::new();
        SAMBA.get_or_init(|| Server::start(Kind::Samba, Vec::new()))
    }

    fn start(kind: Kind, script_env: Vec<(String, String)>) -> Server {
        let probe = Server {
            kind,
            url: String::new(),
            ldaps_url: String::new(),
            base_dn: String::new(),
            bind_dn: String::new(),
            bind_password: String::new(),
            ca_pem: Vec::new(),
            script_env,
        };
        probe.script(&["up"], None);
        let exports = probe.script(&["env"], None);
        let vars: BTreeMap<&str, &str> = exports
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .collect();
        let prefix = match kind {
            Kind::Slapd => "USERSYNC_SLAPD_",
            Kind::Samba => "USERSYNC_AD_",
        };
        let var = |name: &str| -> String {
            let key = format!("{prefix}{name}");
            vars.get(key.as_str())
                .unwrap_or_else(|| panic!("the {kind:?} script printed no {key}:\n{exports}"))
                .trim_matches(['\'', '"'])
                .to_owned()
        };
        let read = |path: String| {
            std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        };
        let password = String::from_utf8(read(var("BIND_PASSWORD_FILE")))
            .expect("the bind password is UTF-8")
            .trim_end_matches('\n')
            .to_owned();
        Server {
            url: var("URL"),
            ldaps_url: var("LDAPS_URL"),
            base_dn: var("BASE_DN"),
            bind_dn: var("BIND_DN"),
            bind_password: password,
            ca_pem: read(var("CA")),
            ..probe
        }
    }

    fn script_path(&self) -> PathBuf {
        repo().join(match self.kind {
            Kind::Slapd => "tests/slapd.sh",
            Kind::Samba => "tests/samba.sh",
        })
    }

    /// Run the server's script; panic with its stderr when it fails.
    pub fn script(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut command = Command::new("bash");
        command
            .arg(self.script_path())
            .args(args)
            .envs(self.script_env.iter().map(|(k, v)| (k, v)))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.script_path().display()));
        if let Some(input) = stdin {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(input.as_bytes())
                .expect("the script reads its input");
        }
        let out = child.wait_with_output().expect("the script finishes");
        assert!(
            out.status.success(),
            "{} {} failed: {}\n{}",
            self.script_path().display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run an ldap-utils client as the directory's administrator.
    pub fn as_admin(&self, client: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut all = vec!["ldap", client];
        all.extend_from_slice(args);
        self.script(&all, stdin)
    }

    /// Add the entries of an LDIF document as the administrator.
    pub fn add_ldif(&self, ldif: &str) {
        self.as_admin("ldapadd", &[], Some(ldif));
    }

    /// Apply an LDIF change document as the administrator.
    pub fn modify_ldif(&self, ldif: &str) {
        self.as_admin("ldapmodify", &[], Some(ldif));
    }

    /// Settings for the service account over plain LDAP.
    pub fn settings(&self, flavor: Flavor) -> LdapSettings {
        let mut settings = LdapSettings::new(self.url.clone(), flavor);
        settings.bind = Some((
            self.bind_dn.clone(),
            SecretString::new(self.bind_password.clone()),
        ));
        settings.timeout = Duration::from_secs(20);
        settings
    }

    /// The service account's password, for tests that check it is never shown.
    pub fn bind_password(&self) -> &str {
        &self.bind_password
    }

    /// A fresh, empty OU for one test, deleted with everything in it on drop.
    pub fn test_ou(&self, label: &str) -> TestOu<'_> {
        let name = unique(label);
        let dn = match self.kind {
            Kind::Slapd => format!("ou={name},{}", self.base_dn),
            Kind::Samba => format!("OU={name},{}", self.base_dn),
        };
        self.add_ldif(&format!("dn: {dn}\nobjectClass: organizationalUnit\n"));
        TestOu {
            server: self,
            dn,
            name,
        }
    }
}

/// A test's own OU.
pub struct TestOu<'a> {
    pub server: &'a Server,
    pub dn: String,
    /// The OU's name (its `ou` value), unique to the test.
    pub name: String,
}

impl Drop for TestOu<'_> {
    fn drop(&mut self) {
        // Best effort: a failed cleanup must not hide the test's own failure.
        let _ = Command::new("bash")
            .arg(self.server.script_path())
            .args(["ldap", "ldapdelete", "-r", &self.dn])
            .envs(self.server.script_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A private OpenLDAP instance (own state directory and ports) for a test that
/// changes server-wide settings such as size limits; destroyed on drop.
pub struct PrivateSlapd {
    pub server: Server,
}

impl PrivateSlapd {
    pub fn start(label: &str) -> PrivateSlapd {
        let state = std::env::var("USERSYNC_STATE").unwrap_or_else(|_| "/tmp/usersync-dev".into());
        let dir = Path::new(&state).join(unique(label));
        let env = vec![
            ("USERSYNC_SLAPD_DIR".to_owned(), dir.display().to_string()),
            ("USERSYNC_SLAPD_PORT".to_owned(), free_port().to_string()),
            (
                "USERSYNC_SLAPD_LDAPS_PORT".to_owned(),
                free_port().to_string(),
            ),
        ];
        PrivateSlapd {
            server: Server::start(Kind::Slapd, env),
        }
    }
}

impl Drop for PrivateSlapd {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(self.server.script_path())
            .arg("destroy")
            .envs(self.server.script_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One LDIF line, base64-encoded when the value is not a SAFE-STRING (RFC 2849).
pub fn ldif_line(attribute: &str, value: &str) -> String {
    let safe = value
        .bytes()
        .all(|b| (1..=127).contains(&b) && b != b'\n' && b != b'\r')
        && !value.starts_with([' ', ':', '<'])
        && !value.ends_with(' ');
    if safe {
        format!("{attribute}: {value}\n")
    } else {
        format!("{attribute}:: {}\n", base64(value.as_bytes()))
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc4648_vectors() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
