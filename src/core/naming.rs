//! Record names: stable, derived from the connector and the immutable anchor.
//!
//! A name built from a username would change on a rename and could be reused by
//! a different person (rule 8); the anchor never changes, so the record keeps
//! its name for life. The generation suffix separates an object that returns
//! after deletion from its tombstone (rule 6).

use sha2::{Digest, Sha256};

/// The longest name a DNS-1123 subdomain (a Kubernetes object name) may have.
pub const MAX_NAME_LEN: usize = 253;

/// The store name for the record of `anchor` under `connector`.
///
/// `connector-<id>` where `<id>` is the anchor as 32 lowercase hex digits when
/// it is a UUID/GUID (with or without dashes or braces), otherwise the first 32
/// hex digits of its SHA-256. Generations above 1 add `-g<generation>`. The
/// result is always a valid DNS-1123 subdomain of at most 253 characters: an
/// over-long connector name is cut and given a short hash so that two long
/// connectors sharing a prefix still differ.
pub fn record_name(connector: &str, anchor: &str, generation: u32) -> String {
    let mut suffix = format!("-{}", anchor_id(anchor));
    if generation > 1 {
        suffix.push_str(&format!("-g{generation}"));
    }
    let prefix = connector_prefix(connector, MAX_NAME_LEN - suffix.len());
    prefix + &suffix
}

/// The anchor's part of a record name.
fn anchor_id(anchor: &str) -> String {
    uuid_hex(anchor).unwrap_or_else(|| hex(&Sha256::digest(anchor.as_bytes()))[..32].to_owned())
}

/// The 32 hex digits of a UUID written as `8-4-4-4-12`, as 32 plain digits, or
/// either inside braces (the usual renderings of objectGUID, entryUUID and
/// Graph ids); `None` for anything else.
fn uuid_hex(anchor: &str) -> Option<String> {
    let inner = anchor
        .strip_prefix('{')
        .and_then(|a| a.strip_suffix('}'))
        .unwrap_or(anchor);
    let dashed = inner.len() == 36 && [8, 13, 18, 23].iter().all(|&i| inner.as_bytes()[i] == b'-');
    let digits: String = if dashed {
        inner.chars().filter(|&c| c != '-').collect()
    } else {
        inner.to_owned()
    };
    (digits.len() == 32 && digits.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| digits.to_ascii_lowercase())
}

/// The connector name made safe for a subdomain and no longer than `max`.
fn connector_prefix(connector: &str, max: usize) -> String {
    let cleaned = sanitize(connector);
    if cleaned.len() <= max {
        return cleaned;
    }
    let tag = &hex(&Sha256::digest(connector.as_bytes()))[..8];
    let keep = &cleaned[..max - tag.len() - 1];
    let keep = keep.trim_end_matches(['-', '.']);
    format!("{keep}-{tag}")
}

/// Lowercases, replaces characters a subdomain cannot hold with `-`, and trims
/// each dot-separated label so that it starts and ends alphanumerically.
/// Connector names are object names already, so this is normally a no-op.
fn sanitize(connector: &str) -> String {
    let lowered: String = connector
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let labels: Vec<&str> = lowered
        .split('.')
        .map(|label| label.trim_matches('-'))
        .filter(|label| !label.is_empty())
        .collect();
    if labels.is_empty() {
        "connector".to_owned()
    } else {
        labels.join(".")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_dns_subdomain(name: &str) -> bool {
        let label = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
        let pattern = regex::Regex::new(&format!("^{label}(\\.{label})*$")).unwrap();
        name.len() <= MAX_NAME_LEN && pattern.is_match(name)
    }

    #[test]
    fn uuid_anchor_becomes_its_hex_digits() {
        assert_eq!(
            record_name("corp-ad", "2d8b0ce6-aa32-4f31-a6e8-88343e6244a5", 1),
            "corp-ad-2d8b0ce6aa324f31a6e888343e6244a5"
        );
        assert_eq!(
            record_name("corp-ad", "{2D8B0CE6-AA32-4F31-A6E8-88343E6244A5}", 1),
            "corp-ad-2d8b0ce6aa324f31a6e888343e6244a5"
        );
        assert_eq!(
            record_name("corp-ad", "2D8B0CE6AA324F31A6E888343E6244A5", 1),
            "corp-ad-2d8b0ce6aa324f31a6e888343e6244a5"
        );
    }

    #[test]
    fn other_anchor_is_hashed() {
        let name = record_name("ldap", "uid=alice,ou=people,dc=example", 1);
        assert_eq!(name.len(), "ldap-".len() + 32);
        assert_ne!(name, record_name("ldap", "uid=bob,ou=people,dc=example", 1));
        // Not a UUID: wrong dash positions.
        assert_ne!(
            record_name("c", "2d8b0ce6a-a32-4f31-a6e8-88343e6244a5", 1),
            "c-2d8b0ce6aa324f31a6e888343e6244a5"
        );
    }

    #[test]
    fn generation_suffix_only_after_the_first() {
        let anchor = "2d8b0ce6-aa32-4f31-a6e8-88343e6244a5";
        assert_eq!(record_name("c", anchor, 0), record_name("c", anchor, 1));
        assert_eq!(
            record_name("c", anchor, 2),
            "c-2d8b0ce6aa324f31a6e888343e6244a5-g2"
        );
    }

    #[test]
    fn long_connector_names_are_cut_and_kept_apart() {
        let a = format!("{}a", "x".repeat(300));
        let b = format!("{}b", "x".repeat(300));
        let name_a = record_name(&a, "anchor", u32::MAX);
        let name_b = record_name(&b, "anchor", u32::MAX);
        assert!(
            name_a.len() <= MAX_NAME_LEN && is_dns_subdomain(&name_a),
            "{name_a}"
        );
        assert_ne!(name_a, name_b);
    }

    proptest! {
        #[test]
        fn names_are_always_valid_subdomains(
            connector in "[a-zA-Z0-9.\\-_ ]{0,300}",
            anchor in ".{0,80}",
            generation in any::<u32>(),
        ) {
            let name = record_name(&connector, &anchor, generation);
            prop_assert!(is_dns_subdomain(&name), "{}", name);
        }
    }
}
