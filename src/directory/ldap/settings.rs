//! The plain settings an LDAP source runs with. The controller converts the
//! ConnectorHealth and DirectoryMapping resources into these once, at the
//! boundary; nothing here knows Kubernetes. [`LdapSettings::validate`] and
//! [`LdapScope::validate`] turn them into checked forms, so a setting that can
//! never work fails with `InvalidConfig` before any network traffic.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use url::Url;

use super::anchor::AnchorAttribute;
use super::error::LdapError;
use super::filter::{normalize_dn, parse_admin_filter, presence_attribute};
use super::flavor::Flavor;
use crate::secret::SecretString;

/// The page size when none is configured (AD's default MaxPageSize).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// The timeout when none is configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The most entries one search may return when none is configured: well above
/// the largest directories a mapping reads, far below what would take the
/// operator's memory (a projection is a few hundred bytes).
pub const DEFAULT_MAX_ENTRIES: u64 = 2_000_000;

/// The most bytes of attribute values (names included) one entry may carry.
/// A search asks only for the attributes its projection reads (names, mail,
/// the anchor, the disabled signal, a few extras): a real entry holds a few
/// KiB of them, and even a large `member`-like extra stays well below this.
/// An entry past it is a broken or hostile server, and fails the read.
pub const MAX_ENTRY_BYTES: usize = 1024 * 1024;

/// How to reach and read one LDAP directory (a ConnectorHealth's `spec.ldap`).
#[derive(Clone)]
pub struct LdapSettings {
    /// `ldap://host[:port]` or `ldaps://host[:port]`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    pub start_tls: bool,
    /// Simple bind DN and password; `None` binds anonymously.
    pub bind: Option<(String, SecretString)>,
    /// PEM bundle of the CA certificates to trust; `None` trusts the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any server certificate. Only when the admin asked for it explicitly.
    pub insecure_skip_verify: bool,
    pub flavor: Flavor,
    /// The anchor attribute; `None` takes the flavor's (required for Generic).
    pub anchor_attribute: Option<String>,
    /// A filter the server evaluates to mark disabled accounts; `None` takes the
    /// flavor's. On Active Directory it adds to the account control signal.
    pub disabled_filter: Option<String>,
    /// Entries per page of a paged search (RFC 2696).
    pub page_size: u32,
    /// Limit for connecting and for each operation (each reply of a search).
    pub timeout: Duration,
    /// The most entries one search may return, over all its pages.
    pub max_entries: u64,
}

impl LdapSettings {
    /// Settings for `url` with the defaults: no TLS upgrade, anonymous, system
    /// CA roots, the flavor's presets, [`DEFAULT_PAGE_SIZE`], [`DEFAULT_TIMEOUT`].
    pub fn new(url: impl Into<String>, flavor: Flavor) -> Self {
        Self {
            url: url.into(),
            start_tls: false,
            bind: None,
            ca_pem: None,
            insecure_skip_verify: false,
            flavor,
            anchor_attribute: None,
            disabled_filter: None,
            page_size: DEFAULT_PAGE_SIZE,
            timeout: DEFAULT_TIMEOUT,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }

    /// Check the settings and resolve the flavor's presets.
    pub fn validate(&self) -> Result<ValidSettings, LdapError> {
        let invalid = |m: String| Err(LdapError::InvalidConfig(m));
        let url = match Url::parse(&self.url) {
            Ok(url) => url,
            Err(e) => return invalid(format!("url {:?} is not a URL: {e}", self.url)),
        };
        let tls = match url.scheme() {
            "ldap" => {
                if self.start_tls {
                    Transport::StartTls
                } else {
                    Transport::Plain
                }
            }
            "ldaps" if self.start_tls => {
                return invalid(
                    "startTLS applies to ldap:// URLs; an ldaps:// URL is already TLS".into(),
                );
            }
            "ldaps" => Transport::Ldaps,
            other => {
                return invalid(format!(
                    "url {:?} has scheme {other:?}; use ldap:// or ldaps://",
                    self.url
                ));
            }
        };
        let Some(host) = url.host_str().filter(|h| !h.is_empty()) else {
            return invalid(format!("url {:?} names no host", self.url));
        };
        if url.path().len() > 1 || url.query().is_some() {
            return invalid(format!(
                "url {:?} has a path or query; give only scheme, host and port (the base DN belongs to the mapping)",
                self.url
            ));
        }
        let port = url.port().unwrap_or(match tls {
            Transport::Ldaps => 636,
            Transport::Plain | Transport::StartTls => 389,
        });
        if let Some((dn, password)) = &self.bind {
            if dn.trim().is_empty() {
                return invalid("the bind DN is empty".into());
            }
            // RFC 4513 5.1.2: a simple bind with a DN and an empty password is an
            // unauthenticated bind, which many servers accept as anonymous.
            if password.expose().is_empty() {
                return invalid(format!(
                    "the bind password for {dn} is empty; an empty password would bind anonymously"
                ));
            }
        }
        if self.page_size == 0 || i32::try_from(self.page_size).is_err() {
            return invalid(format!(
                "pageSize {} is out of range (1..=2147483647)",
                self.page_size
            ));
        }
        if self.timeout.is_zero() {
            return invalid("timeout must be more than zero".into());
        }
        if self.max_entries == 0 {
            return invalid("maxEntries must be at least 1".into());
        }
        let anchor_name = match self
            .anchor_attribute
            .as_deref()
            .or(self.flavor.default_anchor_attribute())
        {
            Some(name) => check_attribute("anchor attribute", name)?,
            None => {
                return invalid(
                    "the Generic flavor needs an anchor attribute (an immutable unique ID such as entryUUID or nsUniqueId)"
                        .into(),
                );
            }
        };
        let disabled_filter = match self
            .disabled_filter
            .as_deref()
            .or(self.flavor.default_disabled_filter())
        {
            Some(raw) => Some(
                parse_admin_filter(raw)
                    .map_err(|e| LdapError::InvalidConfig(format!("disabled filter: {e}")))?,
            ),
            None => None,
        };
        Ok(ValidSettings {
            url: self.url.clone(),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            transport: tls,
            flavor: self.flavor,
            anchor: AnchorAttribute::new(anchor_name),
            disabled_filter,
            page_size: self.page_size as i32,
            timeout: self.timeout,
            max_entries: self.max_entries,
        })
    }
}

impl fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("start_tls", &self.start_tls)
            .field("bind_dn", &self.bind.as_ref().map(|(dn, _)| dn))
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("flavor", &self.flavor)
            .field("anchor_attribute", &self.anchor_attribute)
            .field("disabled_filter", &self.disabled_filter)
            .field("page_size", &self.page_size)
            .field("timeout", &self.timeout)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    StartTls,
    Ldaps,
}

/// [`LdapSettings`] checked, with the flavor's presets resolved. The TLS and
/// bind material stay in the settings they came from.
#[derive(Debug, Clone)]
pub struct ValidSettings {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    pub flavor: Flavor,
    pub anchor: AnchorAttribute,
    pub disabled_filter: Option<String>,
    pub page_size: i32,
    pub timeout: Duration,
    pub max_entries: u64,
}

impl ValidSettings {
    /// When the disabled filter only asks for one attribute's presence (as
    /// OpenLDAP's `(pwdAccountLockedTime=*)` does): that attribute. It is then
    /// requested with every entry and its presence read as the signal, which
    /// saves the server a second scan of the scope.
    pub fn disabled_attribute(&self) -> Option<&str> {
        self.disabled_filter.as_deref().and_then(presence_attribute)
    }

    /// The disabled filter when it needs a search of its own: not when there
    /// is none, nor when it is read from each entry ([`Self::disabled_attribute`]).
    pub fn disabled_search_filter(&self) -> Option<&str> {
        match self.disabled_attribute() {
            Some(_) => None,
            None => self.disabled_filter.as_deref(),
        }
    }
}

/// Which entries below the base DN a scope covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SearchScope {
    /// The base entry and everything below it.
    #[default]
    Subtree,
    /// Only the base entry's direct children.
    OneLevel,
}

/// Which directory attribute each user field is read from. Unset fields take
/// the flavor's presets (see [`Flavor::default_attributes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeMap {
    pub username: Option<String>,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    /// Extra user attributes: name on the user record → directory attribute.
    pub extra: BTreeMap<String, String>,
}

/// Which users of the directory a mapping covers (a DirectoryMapping's
/// `spec.ldap` and `spec.attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapScope {
    pub base_dn: String,
    pub scope: SearchScope,
    /// The admin's filter, ANDed with the flavor's user filter.
    pub filter: Option<String>,
    /// Members (nested ones too, on AD and OpenLDAP) of any of these groups; empty means no
    /// membership condition.
    pub member_of: Vec<String>,
    pub attributes: AttributeMap,
}

impl LdapScope {
    /// Every user below `base_dn`, with the flavor's attribute presets.
    pub fn new(base_dn: impl Into<String>) -> Self {
        Self {
            base_dn: base_dn.into(),
            scope: SearchScope::Subtree,
            filter: None,
            member_of: Vec::new(),
            attributes: AttributeMap::default(),
        }
    }

    /// Check the DNs, the filter and the attribute names; return the admin
    /// filter in its checked form.
    pub fn validate(&self) -> Result<Option<String>, LdapError> {
        if self.base_dn.trim().is_empty() {
            return Err(LdapError::InvalidConfig("the base DN is empty".into()));
        }
        normalize_dn(&self.base_dn)
            .map_err(|e| LdapError::InvalidConfig(format!("base DN: {e}")))?;
        for group in &self.member_of {
            if group.trim().is_empty() {
                return Err(LdapError::InvalidConfig(
                    "a memberOf group DN is empty".into(),
                ));
            }
            normalize_dn(group).map_err(|e| LdapError::InvalidConfig(format!("memberOf: {e}")))?;
        }
        let a = &self.attributes;
        for (what, name) in [
            ("attributes.username", &a.username),
            ("attributes.email", &a.email),
            ("attributes.displayName", &a.display_name),
            ("attributes.userPrincipalName", &a.user_principal_name),
        ] {
            if let Some(name) = name {
                check_attribute(what, name)?;
            }
        }
        for (key, name) in &a.extra {
            if key.is_empty() {
                return Err(LdapError::InvalidConfig(
                    "attributes.extra has an empty key".into(),
                ));
            }
            check_attribute(&format!("attributes.extra.{key}"), name)?;
        }
        self.filter
            .as_deref()
            .map(|raw| {
                parse_admin_filter(raw)
                    .map_err(|e| LdapError::InvalidConfig(format!("filter: {e}")))
            })
            .transpose()
    }
}

/// `name` if it is an attribute description (RFC 4512: a name or an OID,
/// with options such as `;binary`).
fn check_attribute<'a>(what: &str, name: &'a str) -> Result<&'a str, LdapError> {
    if is_attribute_description(name) {
        Ok(name)
    } else {
        Err(LdapError::InvalidConfig(format!(
            "{what} {name:?} is not an LDAP attribute name"
        )))
    }
}

fn is_attribute_description(name: &str) -> bool {
    let mut parts = name.split(';');
    let base = parts.next().unwrap_or_default();
    let keystring = base.starts_with(|c: char| c.is_ascii_alphabetic())
        && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    let oid = !base.is_empty()
        && base
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    (keystring || oid)
        && parts.all(|o| !o.is_empty() && o.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> LdapSettings {
        LdapSettings::new(url, Flavor::OpenLdap)
    }

    fn config_error(s: &LdapSettings) -> String {
        match s.validate() {
            Err(LdapError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn presets_fill_anchor_and_disabled_filter() {
        let v = settings("ldap://dir.example:3389").validate().unwrap();
        assert_eq!(v.anchor.name(), "entryUUID");
        assert_eq!(
            v.disabled_filter.as_deref(),
            Some("(pwdAccountLockedTime=*)")
        );
        // A presence filter is read from each entry, not searched for.
        assert_eq!(v.disabled_attribute(), Some("pwdAccountLockedTime"));
        assert_eq!(v.disabled_search_filter(), None);
        assert_eq!((v.host.as_str(), v.port), ("dir.example", 3389));
        assert_eq!(v.transport, Transport::Plain);

        let ad = LdapSettings::new("ldaps://dc1", Flavor::ActiveDirectory)
            .validate()
            .unwrap();
        assert_eq!(ad.anchor.name(), "objectGUID");
        assert_eq!(ad.disabled_filter, None);
        assert_eq!((ad.port, ad.transport), (636, Transport::Ldaps));
    }

    #[test]
    fn explicit_settings_override_presets() {
        let mut s = settings("ldap://x");
        s.anchor_attribute = Some("nsUniqueId".into());
        s.disabled_filter = Some("nsAccountLock=TRUE".into());
        s.start_tls = true;
        let v = s.validate().unwrap();
        assert_eq!(v.anchor.name(), "nsUniqueId");
        assert_eq!(v.disabled_filter.as_deref(), Some("(nsAccountLock=TRUE)"));
        assert_eq!(v.disabled_attribute(), None);
        assert_eq!(v.disabled_search_filter(), Some("(nsAccountLock=TRUE)"));
        assert_eq!((v.port, v.transport), (389, Transport::StartTls));
    }

    #[test]
    fn generic_flavor_needs_an_anchor() {
        let s = LdapSettings::new("ldap://x", Flavor::Generic);
        assert!(config_error(&s).contains("anchor"));
    }

    #[test]
    fn bad_settings_are_invalid_config() {
        assert!(config_error(&settings("http://x")).contains("scheme"));
        assert!(config_error(&settings("not a url")).contains("not a URL"));
        assert!(config_error(&settings("ldap://x/dc=org")).contains("path"));
        let mut s = settings("ldaps://x");
        s.start_tls = true;
        assert!(config_error(&s).contains("startTLS"));
        let mut s = settings("ldap://x");
        s.page_size = 0;
        assert!(config_error(&s).contains("pageSize"));
        let mut s = settings("ldap://x");
        s.disabled_filter = Some("(a=b".into());
        assert!(config_error(&s).contains("disabled filter"));
        let mut s = settings("ldap://x");
        s.anchor_attribute = Some("entry UUID".into());
        assert!(config_error(&s).contains("anchor attribute"));
    }

    #[test]
    fn empty_bind_password_is_refused_without_binding_anonymously() {
        let mut s = settings("ldap://x");
        s.bind = Some(("cn=svc,dc=x".into(), SecretString::new("")));
        assert!(config_error(&s).contains("empty"));
    }

    #[test]
    fn debug_output_has_no_password_or_ca_bytes() {
        let mut s = settings("ldap://x");
        s.bind = Some(("cn=svc,dc=x".into(), SecretString::new("hunter2-secret")));
        s.ca_pem = Some(b"-----BEGIN CERTIFICATE-----".to_vec());
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2-secret"), "{debug}");
        assert!(debug.contains("cn=svc,dc=x"));
    }

    #[test]
    fn scope_validation_checks_dns_filter_and_attribute_names() {
        let mut scope = LdapScope::new("ou=Staff,dc=example,dc=org");
        scope.filter = Some("departmentNumber=42".into());
        assert_eq!(
            scope.validate().unwrap().as_deref(),
            Some("(departmentNumber=42)")
        );

        scope
            .attributes
            .extra
            .insert("dept".into(), "department number".into());
        assert!(matches!(scope.validate(), Err(LdapError::InvalidConfig(_))));
        scope.attributes.extra.clear();

        scope.member_of = vec!["cn=x,,dc=org".into()];
        assert!(matches!(scope.validate(), Err(LdapError::InvalidConfig(_))));
        scope.member_of.clear();

        scope.base_dn = " ".into();
        assert!(matches!(scope.validate(), Err(LdapError::InvalidConfig(_))));
    }

    #[test]
    fn attribute_descriptions_follow_rfc4512() {
        for ok in [
            "uid",
            "sAMAccountName",
            "x-custom-1",
            "2.5.4.3",
            "userCertificate;binary",
        ] {
            assert!(is_attribute_description(ok), "{ok}");
        }
        for bad in ["", "1uid", "a b", "a=b", "uid;", "2..5", "(uid)"] {
            assert!(!is_attribute_description(bad), "{bad}");
        }
    }
}
