//! One search result entry → the [`DirectoryEntry`] projection the planner needs.
//!
//! The conversion happens as each entry arrives, so a read holds only the small
//! projections and never the raw result set.

use std::collections::BTreeMap;

use jiff::Timestamp;
use ldap3::ResultEntry;
use ldap3::asn1::{PL, StructureTag};

use super::account::ad_account_disabled;
use super::anchor::AnchorAttribute;
use super::flavor::{Flavor, UserField};
use super::settings::{AttributeMap, ValidSettings};
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
    /// An attribute whose presence marks the account disabled.
    disabled_attribute: Option<String>,
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
            disabled_attribute: None,
        }
    }

    /// The projection of a scope with `attributes` on the directory of
    /// `settings`, reading the disabled attribute when the settings have one.
    pub fn for_settings(settings: &ValidSettings, attributes: &AttributeMap) -> Self {
        let mut projection = Self::new(settings.flavor, settings.anchor.clone(), attributes);
        projection.disabled_attribute = settings.disabled_attribute().map(str::to_owned);
        projection
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
        if let Some(name) = &self.disabled_attribute {
            add(name);
        }
        names
    }

    /// The entry's projection, or `None` when it has no anchor. `enabled` here
    /// reflects the signals carried by the entry's own attributes (AD account
    /// control, a disabled attribute); a disabled filter that needs a search
    /// of its own is applied by the caller.
    pub fn project(&self, entry: &RawEntry, now: Timestamp) -> Option<DirectoryEntry> {
        let anchor = self.anchor.read(entry)?;
        let first = |names: &[String]| {
            names
                .iter()
                .find_map(|name| entry.first_text(name))
                .map(str::to_owned)
        };
        let account_disabled = self.account_control
            && ad_account_disabled(
                entry.first_text(USER_ACCOUNT_CONTROL),
                entry.first_text(ACCOUNT_EXPIRES),
                now,
            );
        let marked_disabled = self
            .disabled_attribute
            .as_deref()
            .is_some_and(|name| entry.has(name));
        let enabled = !(account_disabled || marked_disabled);
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
                    entry.first_text(name).map(|v| (key.clone(), v.to_owned()))
                })
                .collect(),
        })
    }
}

/// The bytes of every primitive value in a message (the DN, attribute names
/// and values): what an entry costs to hold, whatever attributes it carries.
pub(crate) fn entry_bytes(tag: &StructureTag) -> usize {
    match &tag.payload {
        PL::P(bytes) => bytes.len(),
        PL::C(children) => children.iter().map(entry_bytes).sum(),
    }
}

/// One search result entry as it arrived: its DN and each attribute's values
/// as bytes, moved out of the decoded message. Nothing is copied and no map is
/// built: an entry is looked at once, for the few attributes the projection
/// reads, and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEntry {
    pub dn: String,
    attrs: Vec<(String, Vec<Vec<u8>>)>,
}

impl RawEntry {
    /// An entry from its parts (captured payloads in tests, for example).
    pub fn new(dn: impl Into<String>, attrs: Vec<(String, Vec<Vec<u8>>)>) -> Self {
        Self {
            dn: dn.into(),
            attrs,
        }
    }

    /// The entry of a SearchResultEntry message (RFC 4511 section 4.5.2), or
    /// what is wrong with it: a malformed entry fails the read rather than
    /// silently dropping a user.
    pub fn from_result(entry: ResultEntry) -> Result<Self, &'static str> {
        const NOT_AN_ENTRY: &str = "a search result entry that is not an LDAP entry";
        let mut parts = entry
            .0
            .match_id(SEARCH_RESULT_ENTRY)
            .and_then(StructureTag::expect_constructed)
            .ok_or(NOT_AN_ENTRY)?
            .into_iter();
        let dn = text(parts.next()).ok_or("a search result entry without a readable DN")?;
        let list = parts
            .next()
            .and_then(StructureTag::expect_constructed)
            .ok_or(NOT_AN_ENTRY)?;
        let mut attrs = Vec::with_capacity(list.len());
        for attribute in list {
            let mut pair = attribute
                .expect_constructed()
                .ok_or(NOT_AN_ENTRY)?
                .into_iter();
            let name = text(pair.next()).ok_or("an attribute without a readable name")?;
            let values = pair
                .next()
                .and_then(StructureTag::expect_constructed)
                .ok_or(NOT_AN_ENTRY)?
                .into_iter()
                .map(|v| v.expect_primitive().ok_or(NOT_AN_ENTRY))
                .collect::<Result<Vec<_>, _>>()?;
            attrs.push((name, values));
        }
        Ok(Self { dn, attrs })
    }

    /// Every value of `name` (matched case-insensitively, as LDAP attribute
    /// names are), in the order the server sent them.
    pub fn values<'e>(&'e self, name: &str) -> impl Iterator<Item = &'e [u8]> {
        self.attrs
            .iter()
            .filter(move |(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, values)| values)
            .map(Vec::as_slice)
    }

    /// The first non-empty text (UTF-8) value of `name`. Of a multi-valued
    /// attribute, the first value as the server returned it.
    pub fn first_text<'e>(&'e self, name: &str) -> Option<&'e str> {
        self.texts(name).find(|v| !v.is_empty())
    }

    /// The text (UTF-8) values of `name`.
    pub fn texts<'e>(&'e self, name: &str) -> impl Iterator<Item = &'e str> {
        self.values(name)
            .filter_map(|v| std::str::from_utf8(v).ok())
    }

    /// The first non-empty value of `name`, as bytes.
    pub fn first_bytes<'e>(&'e self, name: &str) -> Option<&'e [u8]> {
        self.values(name).find(|v| !v.is_empty())
    }

    /// Whether the entry carries `name` at all.
    pub fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
    }
}

/// An OCTET STRING that holds UTF-8 text (an LDAPDN, an attribute description).
fn text(tag: Option<StructureTag>) -> Option<String> {
    tag.and_then(StructureTag::expect_primitive)
        .and_then(|b| String::from_utf8(b).ok())
}

/// The protocol op number of SearchResultEntry (`[APPLICATION 4]`).
const SEARCH_RESULT_ENTRY: u64 = 4;

#[cfg(test)]
mod tests {
    use super::super::settings::LdapSettings;
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    /// An entry as it arrives, from captured attribute values.
    fn captured(dn: &str, attrs: &[(&str, &[&str])], bin: &[(&str, &[u8])]) -> RawEntry {
        let text = attrs.iter().map(|(k, vs)| {
            let values = vs.iter().map(|v| v.as_bytes().to_vec()).collect();
            (k.to_string(), values)
        });
        let binary = bin.iter().map(|(k, v)| (k.to_string(), vec![v.to_vec()]));
        RawEntry::new(dn, text.chain(binary).collect())
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

    /// A SearchResultEntry as the client library decodes it off the wire.
    fn wire_entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> ResultEntry {
        use ldap3::asn1::{PL, TagClass};
        let octets = |b: &[u8]| StructureTag {
            class: TagClass::Universal,
            id: 4,
            payload: PL::P(b.to_vec()),
        };
        let constructed = |class, id, inner| StructureTag {
            class,
            id,
            payload: PL::C(inner),
        };
        let list = attrs
            .iter()
            .map(|(name, values)| {
                let set = values.iter().map(|v| octets(v)).collect();
                constructed(
                    TagClass::Universal,
                    16,
                    vec![
                        octets(name.as_bytes()),
                        constructed(TagClass::Universal, 17, set),
                    ],
                )
            })
            .collect();
        ResultEntry::new(constructed(
            TagClass::Application,
            SEARCH_RESULT_ENTRY,
            vec![
                octets(dn.as_bytes()),
                constructed(TagClass::Universal, 16, list),
            ],
        ))
    }

    #[test]
    fn raw_entries_read_what_the_client_library_reads() {
        let guid: &[u8] = &GUID;
        let wire = wire_entry(
            "CN=Jane Doe,OU=Staff,DC=corp,DC=example",
            &[
                ("objectGUID", &[guid]),
                ("mail", &[b"", b"jane@corp.example", b"alias@corp.example"]),
                ("sAMAccountName", &[b"jdoe"]),
                ("pwdAccountLockedTime", &[]),
            ],
        );
        let theirs = ldap3::SearchEntry::construct(wire.clone());
        let ours = RawEntry::from_result(wire).unwrap();
        assert_eq!(ours.dn, theirs.dn);
        assert_eq!(ours.first_text("MAIL"), Some("jane@corp.example"));
        assert_eq!(
            ours.texts("mail").collect::<Vec<_>>(),
            theirs.attrs["mail"]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(ours.first_text("sAMAccountName"), Some("jdoe"));
        assert_eq!(ours.first_bytes("objectguid"), Some(guid));
        assert_eq!(theirs.bin_attrs["objectGUID"], [GUID.to_vec()]);
        assert!(ours.has("pwdAccountLockedTime") && !ours.has("uid"));
        assert_eq!(ours.first_text("pwdAccountLockedTime"), None);
    }

    #[test]
    fn a_malformed_entry_is_an_error_not_a_missing_user() {
        use ldap3::asn1::{PL, TagClass};
        let not_an_entry = ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: 5,
            payload: PL::C(vec![]),
        });
        assert!(RawEntry::from_result(not_an_entry).is_err());
        let no_attribute_list = ResultEntry::new(StructureTag {
            class: TagClass::Application,
            id: SEARCH_RESULT_ENTRY,
            payload: PL::C(vec![StructureTag {
                class: TagClass::Universal,
                id: 4,
                payload: PL::P(b"cn=x".to_vec()),
            }]),
        });
        assert!(RawEntry::from_result(no_attribute_list).is_err());
    }

    #[test]
    fn a_presence_disabled_filter_is_read_from_the_entry() {
        let settings = LdapSettings::new("ldap://x", Flavor::OpenLdap)
            .validate()
            .unwrap();
        let p = Projection::for_settings(&settings, &AttributeMap::default());
        assert!(
            p.requested_attributes()
                .contains(&"pwdAccountLockedTime".to_owned())
        );
        let locked = captured(
            "uid=a",
            &[
                ("entryUUID", &["u-a"]),
                ("pwdaccountlockedtime", &["000001010000Z"]),
            ],
            &[],
        );
        assert!(!p.project(&locked, now()).unwrap().enabled);
        let open = captured("uid=b", &[("entryUUID", &["u-b"])], &[]);
        assert!(p.project(&open, now()).unwrap().enabled);
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
