//! One search result entry → the [`DirectoryEntry`] projection the planner needs.
//!
//! The conversion happens as each entry arrives, so a read holds only the small
//! projections and never the raw result set.

use std::collections::BTreeMap;

use jiff::Timestamp;
use ldap3::SearchEntry;

use super::account::ad_account_disabled;
use super::anchor::AnchorAttribute;
use super::flavor::{Flavor, UserField};
use super::settings::AttributeMap;
use crate::core::DirectoryEntry;

/// The AD attributes that carry the disabled signal.
const USER_ACCOUNT_CONTROL: &str = "userAccountControl";
const ACCOUNT_EXPIRES: &str = "accountExpires";

/// Which attributes a scope reads and how they become a [`DirectoryEntry`]:
/// the mapping's attribute names with the flavor's presets resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    anchor: AnchorAttribute,
    /// Per field, the attributes to try in order; empty when the field is unmapped.
    username: Vec<String>,
    email: Vec<String>,
    display_name: Vec<String>,
    user_principal_name: Vec<String>,
    extra: BTreeMap<String, String>,
    account_control: bool,
}

impl Projection {
    /// The projection of a scope with `attributes` on a directory of `flavor`.
    pub fn new(flavor: Flavor, anchor: AnchorAttribute, attributes: &AttributeMap) -> Self {
        let field = |set: &Option<String>, field: UserField| -> Vec<String> {
            match set {
                // An explicit attribute has no fallback: the admin chose it.
                Some(name) => vec![name.clone()],
                None => flavor
                    .default_attributes(field)
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
            }
        };
        Self {
            anchor,
            username: field(&attributes.username, UserField::Username),
            email: field(&attributes.email, UserField::Email),
            display_name: field(&attributes.display_name, UserField::DisplayName),
            user_principal_name: field(
                &attributes.user_principal_name,
                UserField::UserPrincipalName,
            ),
            extra: attributes.extra.clone(),
            account_control: flavor.reads_account_control(),
        }
    }

    pub fn anchor(&self) -> &AnchorAttribute {
        &self.anchor
    }

    /// The attributes to request: exactly those the projection reads, each once.
    pub fn requested_attributes(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let mut add = |name: &str| {
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name.to_owned());
            }
        };
        add(self.anchor.name());
        for name in self
            .username
            .iter()
            .chain(&self.email)
            .chain(&self.display_name)
            .chain(&self.user_principal_name)
            .chain(self.extra.values())
        {
            add(name);
        }
        if self.account_control {
            add(USER_ACCOUNT_CONTROL);
            add(ACCOUNT_EXPIRES);
        }
        names
    }

    /// The entry's projection, or `None` when it has no anchor. `enabled` here
    /// reflects the signals carried by the entry's own attributes (AD account
    /// control); a disabled filter is applied by the caller.
    pub fn project(&self, entry: &SearchEntry, now: Timestamp) -> Option<DirectoryEntry> {
        let anchor = self.anchor.read(entry)?;
        let first = |names: &[String]| {
            names
                .iter()
                .find_map(|name| first_text_value(entry, name))
                .map(str::to_owned)
        };
        let enabled = !(self.account_control
            && ad_account_disabled(
                first_text_value(entry, USER_ACCOUNT_CONTROL),
                first_text_value(entry, ACCOUNT_EXPIRES),
                now,
            ));
        Some(DirectoryEntry {
            anchor,
            enabled,
            username: first(&self.username),
            email: first(&self.email),
            display_name: first(&self.display_name),
            user_principal_name: first(&self.user_principal_name),
            attributes: self
                .extra
                .iter()
                .filter_map(|(key, name)| {
                    first_text_value(entry, name).map(|v| (key.clone(), v.to_owned()))
                })
                .collect(),
        })
    }
}

/// The first non-empty text value of `name` (matched case-insensitively, as
/// LDAP attribute names are). Of a multi-valued attribute, the first value as
/// the server returned it.
pub fn first_text_value<'e>(entry: &'e SearchEntry, name: &str) -> Option<&'e str> {
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, values)| values)
        .map(String::as_str)
        .find(|v| !v.is_empty())
}

/// The first value of `name` as bytes, whether the client kept it as binary or
/// (because the bytes happened to be valid UTF-8) as text.
pub fn first_binary_value(entry: &SearchEntry, name: &str) -> Option<Vec<u8>> {
    let binary = entry
        .bin_attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .flat_map(|(_, values)| values)
        .find(|v| !v.is_empty())
        .cloned();
    binary.or_else(|| first_text_value(entry, name).map(|v| v.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    /// An entry as ldap3 hands it over, from captured attribute maps.
    fn captured(dn: &str, attrs: &[(&str, &[&str])], bin: &[(&str, &[u8])]) -> SearchEntry {
        SearchEntry {
            dn: dn.into(),
            attrs: attrs
                .iter()
                .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                .collect(),
            bin_attrs: bin
                .iter()
                .map(|(k, v)| (k.to_string(), vec![v.to_vec()]))
                .collect::<HashMap<_, _>>(),
        }
    }

    // objectGUID of a Samba AD user as returned on the wire, and the string
    // `samba-tool user show` printed for it.
    const GUID: [u8; 16] = [
        0xe6, 0x0c, 0x8b, 0x2d, 0x32, 0xaa, 0x31, 0x4f, 0xa6, 0xe8, 0x88, 0x34, 0x3e, 0x62, 0x44,
        0xa5,
    ];
    const GUID_TEXT: &str = "2d8b0ce6-aa32-4f31-a6e8-88343e6244a5";

    fn ad_projection(attributes: &AttributeMap) -> Projection {
        Projection::new(
            Flavor::ActiveDirectory,
            AnchorAttribute::new("objectGUID"),
            attributes,
        )
    }

    fn openldap_projection(attributes: &AttributeMap) -> Projection {
        Projection::new(
            Flavor::OpenLdap,
            AnchorAttribute::new("entryUUID"),
            attributes,
        )
    }

    #[test]
    fn active_directory_entry_becomes_a_directory_entry() {
        let entry = captured(
            "CN=Jane Doe,OU=Staff,DC=corp,DC=example",
            &[
                ("sAMAccountName", &["jdoe"]),
                ("mail", &["jane.doe@corp.example"]),
                ("displayName", &["Jane Doe"]),
                ("userPrincipalName", &["jdoe@corp.example"]),
                ("department", &["Engineering"]),
                ("userAccountControl", &["512"]),
                ("accountExpires", &["9223372036854775807"]),
            ],
            &[("objectGUID", &GUID)],
        );
        let mut attributes = AttributeMap::default();
        attributes
            .extra
            .insert("department".into(), "department".into());
        let got = ad_projection(&attributes).project(&entry, now()).unwrap();
        assert_eq!(
            got,
            DirectoryEntry {
                anchor: GUID_TEXT.into(),
                enabled: true,
                username: Some("jdoe".into()),
                email: Some("jane.doe@corp.example".into()),
                display_name: Some("Jane Doe".into()),
                user_principal_name: Some("jdoe@corp.example".into()),
                attributes: [("department".to_owned(), "Engineering".to_owned())].into(),
            }
        );
    }

    #[test]
    fn active_directory_disabled_and_expired_entries_are_not_enabled() {
        let p = ad_projection(&AttributeMap::default());
        let disabled = captured(
            "CN=a",
            &[("userAccountControl", &["514"]), ("accountExpires", &["0"])],
            &[("objectGUID", &GUID)],
        );
        assert!(!p.project(&disabled, now()).unwrap().enabled);
        // 2020-01-01T00:00:00Z as a FILETIME.
        let expired = captured(
            "CN=b",
            &[
                ("userAccountControl", &["512"]),
                ("accountExpires", &["132223104000000000"]),
            ],
            &[("objectGUID", &GUID)],
        );
        assert!(!p.project(&expired, now()).unwrap().enabled);
        assert!(
            p.project(&expired, "2019-12-31T00:00:00Z".parse().unwrap())
                .unwrap()
                .enabled
        );
    }

    #[test]
    fn openldap_entry_becomes_a_directory_entry_with_cn_fallback() {
        let entry = captured(
            "uid=user000001,ou=Staff,dc=example,dc=org",
            &[
                ("entryUUID", &["0f4f4a8e-5a4e-4c8e-9d1e-3c2b1a000001"]),
                ("uid", &["user000001"]),
                ("mail", &["user000001@example.org", "alias@example.org"]),
                ("cn", &["User One"]),
            ],
            &[],
        );
        let got = openldap_projection(&AttributeMap::default())
            .project(&entry, now())
            .unwrap();
        assert_eq!(got.anchor, "0f4f4a8e-5a4e-4c8e-9d1e-3c2b1a000001");
        assert!(got.enabled);
        assert_eq!(got.username.as_deref(), Some("user000001"));
        assert_eq!(got.email.as_deref(), Some("user000001@example.org"));
        assert_eq!(got.display_name.as_deref(), Some("User One"));
        assert_eq!(got.user_principal_name, None);
    }

    #[test]
    fn explicit_attribute_has_no_fallback_and_names_match_case_insensitively() {
        let entry = captured(
            "uid=x",
            &[
                ("entryuuid", &["u-1"]),
                ("CN", &["X"]),
                ("EMPLOYEENUMBER", &["42"]),
            ],
            &[],
        );
        let attributes = AttributeMap {
            display_name: Some("displayName".into()),
            username: Some("employeeNumber".into()),
            ..AttributeMap::default()
        };
        let got = openldap_projection(&attributes)
            .project(&entry, now())
            .unwrap();
        assert_eq!(got.anchor, "u-1");
        assert_eq!(got.display_name, None);
        assert_eq!(got.username.as_deref(), Some("42"));
    }

    #[test]
    fn entry_without_anchor_is_not_projected() {
        let entry = captured("uid=x", &[("uid", &["x"])], &[]);
        assert_eq!(
            openldap_projection(&AttributeMap::default()).project(&entry, now()),
            None
        );
        // A GUID of the wrong length is no anchor either.
        let entry = captured("CN=x", &[], &[("objectGUID", &[1, 2, 3])]);
        assert_eq!(
            ad_projection(&AttributeMap::default()).project(&entry, now()),
            None
        );
    }

    #[test]
    fn requested_attributes_are_the_projected_ones_each_once() {
        let mut attributes = AttributeMap::default();
        attributes
            .extra
            .insert("login".into(), "SAMACCOUNTNAME".into());
        attributes.extra.insert("dept".into(), "department".into());
        assert_eq!(
            ad_projection(&attributes).requested_attributes(),
            [
                "objectGUID",
                "sAMAccountName",
                "mail",
                "displayName",
                "userPrincipalName",
                "department",
                "userAccountControl",
                "accountExpires"
            ]
        );
        assert_eq!(
            openldap_projection(&AttributeMap::default()).requested_attributes(),
            ["entryUUID", "uid", "mail", "displayName", "cn"]
        );
    }
}
