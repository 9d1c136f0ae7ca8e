//! Search filters (RFC 4515) and distinguished names (RFC 4514): escaping every
//! value that goes into a filter, building the scope, membership and anchor
//! filters, and comparing DNs in a normalised form.
//!
//! A value from a user or from the directory is never pasted into a filter as
//! it is: a `*` would turn an equality match into a substring match, and a `(`
//! would change the filter's structure (LDAP injection).

use std::fmt::Write as _;

use super::flavor::Flavor;

/// Escape `value` for use as an assertion value in a search filter (RFC 4515
/// section 3): `*`, `(`, `)`, `\` and NUL become `\2a`, `\28`, `\29`, `\5c`,
/// `\00`, and so does every byte of a non-ASCII character, so the filter string
/// is plain ASCII whatever the value holds.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for &byte in value.as_bytes() {
        match byte {
            b'*' | b'(' | b')' | b'\\' | 0 | 0x80..=0xff => push_hex_escape(&mut out, byte),
            _ => out.push(byte as char),
        }
    }
    out
}

/// Escape every byte of a binary value (`\xx`), as a binary assertion value
/// such as an objectGUID must be written.
pub fn escape_filter_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &byte in bytes {
        push_hex_escape(&mut out, byte);
    }
    out
}

fn push_hex_escape(out: &mut String, byte: u8) {
    // Writing to a String cannot fail.
    let _ = write!(out, "\\{byte:02x}");
}

/// An admin-written filter, checked and put in parentheses when they were left
/// off (`objectClass=user` is accepted as `(objectClass=user)`).
pub fn parse_admin_filter(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err("the filter is empty".to_owned());
    }
    let filter = if trimmed.starts_with('(') {
        trimmed.to_owned()
    } else {
        format!("({trimmed})")
    };
    match ldap3::parse_filter(&filter) {
        Ok(_) => Ok(filter),
        Err(()) => Err(format!(
            "{raw:?} is not a valid LDAP filter (RFC 4515); special characters in values must be escaped, e.g. \\28 for ("
        )),
    }
}

/// The attribute of a filter that only asks for its presence, `(name=*)`, or
/// `None` for any other filter. Such a signal can be read from each entry of
/// the main search (requesting the attribute) instead of a second search:
/// an entry has the attribute exactly when the filter matches it.
pub fn presence_attribute(filter: &str) -> Option<&str> {
    let name = filter.strip_prefix('(')?.strip_suffix("=*)")?;
    let keystring = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    keystring.then_some(name)
}

/// The conjunction of `parts`; a single part stands alone, and no parts at all
/// mean "every entry".
pub fn and_filter<S: AsRef<str>>(parts: &[S]) -> String {
    match parts {
        [] => "(objectClass=*)".to_owned(),
        [one] => one.as_ref().to_owned(),
        many => {
            let mut out = String::from("(&");
            for part in many {
                out.push_str(part.as_ref());
            }
            out.push(')');
            out
        }
    }
}

/// The disjunction of `parts`, `None` when there are none.
pub fn or_filter<S: AsRef<str>>(parts: &[S]) -> Option<String> {
    match parts {
        [] => None,
        [one] => Some(one.as_ref().to_owned()),
        many => {
            let mut out = String::from("(|");
            for part in many {
                out.push_str(part.as_ref());
            }
            out.push(')');
            Some(out)
        }
    }
}

/// The membership clause for a scope: members of any of `groups`. Active
/// Directory follows nested groups with the in-chain matching rule; OpenLDAP's
/// memberof overlay keeps `memberOf` itself, for direct groups only (the
/// nested ones are found first and named too; see module `groups`). Groups that are the same DN in a
/// different spelling are asked for once.
pub fn member_of_filter(flavor: Flavor, groups: &[String]) -> Option<String> {
    let mut seen = Vec::new();
    let mut clauses = Vec::new();
    for group in groups {
        let group = group.trim();
        let key = normalize_dn(group).unwrap_or_else(|_| group.to_lowercase());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        let value = escape_filter_value(group);
        clauses.push(match flavor {
            Flavor::ActiveDirectory => format!("(memberOf:1.2.840.113556.1.4.1941:={value})"),
            Flavor::OpenLdap | Flavor::Generic => format!("(memberOf={value})"),
        });
    }
    or_filter(&clauses)
}

/// The filter that selects a scope's users: the flavor's user filter, the
/// mapping's own filter and its group membership, all of them required.
pub fn scope_filter(flavor: Flavor, admin_filter: Option<&str>, member_of: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    parts.extend(flavor.user_filter().map(str::to_owned));
    parts.extend(admin_filter.map(str::to_owned));
    parts.extend(member_of_filter(flavor, member_of));
    and_filter(&parts)
}

/// Why a string is not a distinguished name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{dn:?} is not a valid DN: {problem}")]
pub struct DnSyntaxError {
    pub dn: String,
    pub problem: &'static str,
}

/// A DN in one canonical spelling, for comparing DNs: attribute types and values
/// lower-cased, whitespace around `=`, `,` and `+` dropped, escapes rewritten in
/// one form (`\2C` and `\,` are the same comma), and the parts of a multi-valued
/// RDN sorted.
///
/// Values are compared case-insensitively, as the naming attributes in use
/// (`cn`, `ou`, `dc`, `uid`) match; this is a comparison key, not a DN to send.
pub fn normalize_dn(dn: &str) -> Result<String, DnSyntaxError> {
    let fail = |problem| DnSyntaxError {
        dn: dn.to_owned(),
        problem,
    };
    if dn.trim().is_empty() {
        return Ok(String::new());
    }
    let mut rdns = Vec::new();
    for rdn in split_unescaped(dn, &[',', ';']).map_err(fail)? {
        let mut avas = Vec::new();
        for ava in split_unescaped(rdn, &['+']).map_err(fail)? {
            let (attr_type, value) = ava
                .split_once('=')
                .ok_or_else(|| fail("an RDN has no '='"))?;
            let attr_type = attr_type.trim();
            if attr_type.is_empty()
                || !attr_type
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(fail("an attribute type is empty or has invalid characters"));
            }
            let value = canonical_value(value).map_err(fail)?;
            avas.push(format!("{}={}", attr_type.to_ascii_lowercase(), value));
        }
        avas.sort();
        rdns.push(avas.join("+"));
    }
    Ok(rdns.join(","))
}

/// The DN of `dn`'s parent entry; `None` for a DN of one RDN, or one that is not
/// a DN.
pub fn parent_dn(dn: &str) -> Option<String> {
    let rdns = split_unescaped(dn, &[',', ';']).ok()?;
    (rdns.len() > 1).then(|| {
        rdns[1..]
            .iter()
            .map(|rdn| rdn.trim())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// Whether `dn` is `base` or below it, compared as [`normalize_dn`] does; false
/// when either is not a DN.
pub fn dn_within(dn: &str, base: &str) -> bool {
    let (Ok(dn), Ok(base)) = (normalize_dn(dn), normalize_dn(base)) else {
        return false;
    };
    if base.is_empty() {
        return true;
    }
    match (split_unescaped(&dn, &[',']), split_unescaped(&base, &[','])) {
        (Ok(dn), Ok(base)) => dn.ends_with(&base),
        _ => false,
    }
}

/// Split at separators that are not escaped with `\`.
fn split_unescaped<'a>(s: &'a str, separators: &[char]) -> Result<Vec<&'a str>, &'static str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if separators.contains(&c) {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    if escaped {
        return Err("it ends in a lone '\\'");
    }
    parts.push(&s[start..]);
    if parts.iter().any(|p| p.trim().is_empty()) {
        return Err("it has an empty RDN");
    }
    Ok(parts)
}

/// One attribute value, unescaped, trimmed of unescaped outer spaces,
/// lower-cased and escaped again in the RFC 4514 form.
fn canonical_value(raw: &str) -> Result<String, &'static str> {
    // (byte, was it escaped?): an escaped trailing space is part of the value.
    let mut bytes: Vec<(u8, bool)> = Vec::with_capacity(raw.len());
    let mut iter = raw.trim_start().bytes().peekable();
    while let Some(b) = iter.next() {
        if b != b'\\' {
            bytes.push((b, false));
            continue;
        }
        let first = iter.next().ok_or("a value ends in a lone '\\'")?;
        if first.is_ascii_hexdigit() && iter.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            let second = iter.next().unwrap_or(b'0');
            let hex = [first, second];
            let hex = std::str::from_utf8(&hex).map_err(|_| "bad hex escape")?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| "bad hex escape")?;
            bytes.push((byte, true));
        } else {
            bytes.push((first, true));
        }
    }
    while bytes
        .last()
        .is_some_and(|&(b, escaped)| b == b' ' && !escaped)
    {
        bytes.pop();
    }
    let plain: Vec<u8> = bytes.iter().map(|&(b, _)| b).collect();
    let text = String::from_utf8(plain).map_err(|_| "a value is not UTF-8")?;
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let last = lower.chars().count().saturating_sub(1);
    for (i, c) in lower.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if c == '\0' {
            out.push_str("\\00");
        } else if special {
            out.push('\\');
            out.push(c);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dn_is_within_itself_and_its_ancestors_only() {
        let base = "ou=People,dc=example,dc=org";
        assert!(dn_within("uid=a,OU=people, dc=Example,dc=org", base));
        assert!(dn_within(base, base));
        assert!(dn_within("cn=g,dc=example,dc=org", ""));
        assert!(!dn_within("cn=g,ou=Groups,dc=example,dc=org", base));
        assert!(!dn_within("dc=example,dc=org", base));
        // An escaped comma is part of a value, not an RDN boundary: this entry's
        // parent is dc=example,dc=org.
        let escaped = r"cn=x\,ou=People,dc=example,dc=org";
        assert!(!dn_within(escaped, base));
        assert!(dn_within(escaped, "dc=example,dc=org"));
        assert!(!dn_within("not a dn", base));
    }

    #[test]
    fn the_parent_of_a_dn_drops_its_first_rdn() {
        assert_eq!(
            parent_dn("cn=Staff\\, East,ou=Groups,dc=example,dc=org").as_deref(),
            Some("ou=Groups,dc=example,dc=org")
        );
        assert_eq!(parent_dn("dc=org"), None);
        assert_eq!(parent_dn("no rdn here"), None);
    }

    #[test]
    fn only_a_lone_presence_filter_names_a_presence_attribute() {
        assert_eq!(
            presence_attribute("(pwdAccountLockedTime=*)"),
            Some("pwdAccountLockedTime")
        );
        assert_eq!(presence_attribute("(nsAccountLock=TRUE)"), None);
        assert_eq!(presence_attribute("(cn=a*)"), None);
        assert_eq!(presence_attribute("(&(a=*)(b=*))"), None);
        assert_eq!(presence_attribute("(!(a=*))"), None);
        assert_eq!(presence_attribute("(a;binary=*)"), None);
        assert_eq!(presence_attribute("(=*)"), None);
    }

    #[test]
    fn escape_filter_value_escapes_the_rfc4515_specials() {
        assert_eq!(escape_filter_value("a*b"), r"a\2ab");
        assert_eq!(escape_filter_value("(x)"), r"\28x\29");
        assert_eq!(escape_filter_value(r"a\b"), r"a\5cb");
        assert_eq!(escape_filter_value("nul\0"), r"nul\00");
        assert_eq!(escape_filter_value("plain-value.1@x"), "plain-value.1@x");
        assert_eq!(escape_filter_value(""), "");
    }

    #[test]
    fn escape_filter_value_escapes_every_non_ascii_byte() {
        // é is C3 A9 in UTF-8; the euro sign E2 82 AC.
        assert_eq!(escape_filter_value("José"), r"Jos\c3\a9");
        assert_eq!(escape_filter_value("€"), r"\e2\82\ac");
    }

    #[test]
    fn escaped_values_make_valid_filters_that_keep_their_meaning() {
        let hostile = "*)(uid=*))(|(uid=*";
        let filter = format!("(uid={})", escape_filter_value(hostile));
        assert!(ldap3::parse_filter(&filter).is_ok(), "{filter}");
        assert!(!filter[5..filter.len() - 1].contains(['*', '(', ')']));
    }

    #[test]
    fn escape_filter_bytes_escapes_each_byte() {
        assert_eq!(escape_filter_bytes(&[0x00, 0xab, 0x2a]), r"\00\ab\2a");
    }

    #[test]
    fn normalize_dn_ignores_case_and_spacing() {
        let a = normalize_dn("CN=Backup Users, OU=Groups ,DC=Corp,DC=Example").unwrap();
        let b = normalize_dn("cn=backup users,ou=groups,dc=corp,dc=example").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, "cn=backup users,ou=groups,dc=corp,dc=example");
        assert_eq!(
            normalize_dn(" cn = x , dc = org ").unwrap(),
            normalize_dn("cn=x,dc=org").unwrap()
        );
    }

    #[test]
    fn normalize_dn_keeps_escaped_separators_and_unifies_escape_forms() {
        let a = normalize_dn(r"CN=Doe\, John,OU=Staff,DC=x").unwrap();
        let b = normalize_dn(r"cn=doe\2C john,ou=staff,dc=x").unwrap();
        assert_eq!(a, b);
        assert_eq!(a, r"cn=doe\, john,ou=staff,dc=x");
        // An escaped comma is not an RDN separator.
        assert_ne!(a, normalize_dn("cn=doe,cn=john,ou=staff,dc=x").unwrap());
    }

    #[test]
    fn normalize_dn_keeps_an_escaped_trailing_space() {
        assert_ne!(
            normalize_dn(r"cn=a\ ,dc=x").unwrap(),
            normalize_dn("cn=a,dc=x").unwrap()
        );
    }

    #[test]
    fn normalize_dn_sorts_multi_valued_rdns_and_lowercases_unicode() {
        assert_eq!(
            normalize_dn("uid=Ä+CN=b,dc=x").unwrap(),
            normalize_dn("cn=B + uid=ä,dc=x").unwrap()
        );
    }

    #[test]
    fn normalize_dn_rejects_malformed_dns() {
        assert!(normalize_dn("cn=x,,dc=org").is_err());
        assert!(normalize_dn("novalue,dc=org").is_err());
        assert!(normalize_dn(r"cn=x\").is_err());
        assert!(normalize_dn("c n=x").is_err());
        assert_eq!(normalize_dn("").unwrap(), "");
    }

    #[test]
    fn admin_filters_get_parentheses_and_are_checked() {
        assert_eq!(
            parse_admin_filter("objectClass=user").unwrap(),
            "(objectClass=user)"
        );
        assert_eq!(
            parse_admin_filter(" (&(a=b)(c=d)) ").unwrap(),
            "(&(a=b)(c=d))"
        );
        assert!(parse_admin_filter("(&(a=b)").is_err());
        assert!(parse_admin_filter("").is_err());
    }

    #[test]
    fn ad_membership_uses_the_in_chain_rule_ored_across_groups() {
        let groups = vec![
            "CN=Backup Users,OU=Groups,DC=corp,DC=example".to_owned(),
            "CN=Ops (EU),OU=Groups,DC=corp,DC=example".to_owned(),
            // The first group again, spelled differently: asked for once.
            "cn=backup users, ou=groups, dc=corp, dc=example".to_owned(),
        ];
        assert_eq!(
            member_of_filter(Flavor::ActiveDirectory, &groups).unwrap(),
            "(|(memberOf:1.2.840.113556.1.4.1941:=CN=Backup Users,OU=Groups,DC=corp,DC=example)\
             (memberOf:1.2.840.113556.1.4.1941:=CN=Ops \\28EU\\29,OU=Groups,DC=corp,DC=example))"
        );
    }

    #[test]
    fn openldap_membership_uses_the_memberof_attribute() {
        let groups = vec![r"cn=a\,b,ou=Groups,dc=example,dc=org".to_owned()];
        assert_eq!(
            member_of_filter(Flavor::OpenLdap, &groups).unwrap(),
            r"(memberOf=cn=a\5c,b,ou=Groups,dc=example,dc=org)"
        );
        assert_eq!(member_of_filter(Flavor::OpenLdap, &[]), None);
    }

    #[test]
    fn scope_filter_combines_flavor_admin_filter_and_membership() {
        assert_eq!(
            scope_filter(Flavor::ActiveDirectory, None, &[]),
            "(&(objectCategory=person)(objectClass=user))"
        );
        assert_eq!(
            scope_filter(
                Flavor::OpenLdap,
                Some("(departmentNumber=42)"),
                &["cn=g,dc=x".to_owned()]
            ),
            "(&(objectClass=inetOrgPerson)(departmentNumber=42)(memberOf=cn=g,dc=x))"
        );
        assert_eq!(scope_filter(Flavor::Generic, None, &[]), "(objectClass=*)");
        assert_eq!(
            scope_filter(Flavor::Generic, Some("(objectClass=person)"), &[]),
            "(objectClass=person)"
        );
        for f in [
            scope_filter(Flavor::ActiveDirectory, Some("(a=b)"), &["cn=x(".into()]),
            scope_filter(Flavor::OpenLdap, None, &["cn=*".into(), "cn=y".into()]),
        ] {
            assert!(ldap3::parse_filter(&f).is_ok(), "{f}");
        }
    }
}
