//! The Graph URLs a read uses, with their OData query options.

use url::Url;

use super::api::odata_string;

/// The largest page Graph serves for users and group members.
pub(crate) const PAGE_SIZE: u32 = 999;

/// IDs per `id in (…)` clause: Graph limits the `in` operator's list.
pub(crate) const IDS_PER_FILTER: usize = 15;

/// Group IDs per `checkMemberGroups` call (Graph's limit).
pub(crate) const GROUPS_PER_CHECK: usize = 20;

/// Query options in order, percent-encoded as a URL query component (spaces
/// as `%20`, which every OData parser reads; `+` is not read as a space by all).
pub(crate) fn with_query(mut url: Url, options: &[(&str, &str)]) -> Url {
    let query = options
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&");
    url.set_query(if query.is_empty() { None } else { Some(&query) });
    url
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b','
            | b'$'
            | b'/'
            | b':'
            | b'('
            | b')' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `(filter) and id in ('a','b')`, or just the `id in` clause.
pub(crate) fn filter_with_ids(filter: Option<&str>, ids: &[String]) -> String {
    let list = ids
        .iter()
        .map(|id| odata_string(id))
        .collect::<Vec<_>>()
        .join(",");
    match filter {
        Some(filter) => format!("({filter}) and id in ({list})"),
        None => format!("id in ({list})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_options_are_percent_encoded_with_spaces_as_pct20() {
        let url = with_query(
            Url::parse("https://graph.microsoft.com/v1.0/users").unwrap(),
            &[
                ("$select", "id,accountEnabled"),
                ("$filter", "department eq 'R&D' and startswith(mail,'a+b')"),
                ("$top", "999"),
            ],
        );
        assert_eq!(
            url.as_str(),
            "https://graph.microsoft.com/v1.0/users?$select=id,accountEnabled&$filter=department%20eq%20%27R%26D%27%20and%20startswith(mail,%27a%2Bb%27)&$top=999"
        );
        let decoded: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            decoded[1].1,
            "department eq 'R&D' and startswith(mail,'a+b')"
        );
    }

    #[test]
    fn id_clauses_join_the_admin_filter() {
        let ids = vec!["a".to_owned(), "b'c".to_owned()];
        assert_eq!(filter_with_ids(None, &ids), "id in ('a','b''c')");
        assert_eq!(
            filter_with_ids(Some("department eq 'Sales'"), &ids),
            "(department eq 'Sales') and id in ('a','b''c')"
        );
    }
}
