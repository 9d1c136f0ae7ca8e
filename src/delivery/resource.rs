//! A registry user as a SCIM User resource (RFC 7643 section 4.1): the target's
//! attribute map applied to the user's fields, and the digest of the result that
//! tells whether anything changed since the last delivery.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::core::UserRecord;

/// The core User schema.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";

/// One SCIM attribute and the user field it comes from (`from`/`to` of the spec).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributeRule {
    pub from: String,
    pub to: String,
}

/// A SCIM path taken apart: `[urn:…:]name[[attr eq "value"]][.sub]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Path<'a> {
    urn: Option<&'a str>,
    name: &'a str,
    filter: Option<(&'a str, &'a str)>,
    sub: Option<&'a str>,
}

/// Split a path as the CRD's pattern admits it; `None` for anything else.
fn parse_path(path: &str) -> Option<Path<'_>> {
    // An extension attribute: the URN (which may hold '.', as in `2.0`) runs to
    // the last ':' before any filter; attribute names hold no ':'.
    let (urn, rest) = match path.strip_prefix("urn:") {
        Some(_) => {
            let head = path.split('[').next()?;
            let cut = head.rfind(':')?;
            (Some(&path[..cut]), &path[cut + 1..])
        }
        None => (None, path),
    };
    let (name_and_filter, sub) = match rest.rfind(']') {
        Some(end) => {
            let after = &rest[end + 1..];
            (&rest[..=end], after.strip_prefix('.'))
        }
        None => match rest.split_once('.') {
            Some((n, s)) => (n, Some(s)),
            None => (rest, None),
        },
    };
    let (name, filter) = match name_and_filter.split_once('[') {
        Some((name, f)) => {
            let f = f.strip_suffix(']')?;
            let (attr, value) = f.split_once(" eq ")?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            (name, Some((attr, value)))
        }
        None => (name_and_filter, None),
    };
    let valid = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (valid(name) && sub.is_none_or(valid) && filter.is_none_or(|(a, _)| valid(a))).then_some(Path {
        urn,
        name,
        filter,
        sub,
    })
}

/// Whether `path` is a SCIM path the attribute map can write.
pub fn is_valid_path(path: &str) -> bool {
    parse_path(path).is_some() && !matches!(path, "id" | "meta" | "schemas" | "active")
}

/// The value of user field `from` (`username`, `email`, … or `attributes.NAME`).
pub fn field_value<'a>(record: &'a UserRecord, from: &str) -> Option<&'a str> {
    let f = &record.fields;
    match from {
        "username" => f.username.as_deref(),
        "email" => f.email.as_deref(),
        "displayName" => f.display_name.as_deref(),
        "userPrincipalName" => f.user_principal_name.as_deref(),
        "profile" => f.profile.as_deref(),
        "anchor" => Some(record.anchor.as_str()),
        other => other
            .strip_prefix("attributes.")
            .and_then(|name| f.attributes.get(name))
            .map(String::as_str),
    }
}

/// The user as a SCIM User resource, without `id`, `meta` and `active` (those are
/// the delivery's). A field the user lacks leaves its attribute out.
pub fn resource(record: &UserRecord, rules: &[AttributeRule]) -> Value {
    let mut root = Map::new();
    let mut schemas = vec![USER_SCHEMA.to_string()];
    for rule in rules {
        let (Some(value), Some(path)) = (field_value(record, &rule.from), parse_path(&rule.to))
        else {
            continue;
        };
        let container = match path.urn {
            Some(urn) => {
                if !schemas.iter().any(|s| s == urn) {
                    schemas.push(urn.to_string());
                }
                root.entry(urn)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("an extension's attributes are an object")
            }
            None => &mut root,
        };
        put(container, &path, value);
    }
    root.insert("schemas".into(), json!(schemas));
    Value::Object(root)
}

fn put(container: &mut Map<String, Value>, path: &Path<'_>, value: &str) {
    match (path.filter, path.sub) {
        (None, None) => {
            container.insert(path.name.into(), Value::String(value.into()));
        }
        (None, Some(sub)) => {
            let object = container
                .entry(path.name)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(object) = object.as_object_mut() {
                object.insert(sub.into(), Value::String(value.into()));
            }
        }
        (Some((attr, wanted)), sub) => {
            // A multi-valued attribute: the element whose `attr` is `wanted`, made
            // when missing; emails and phone numbers the user has are primary.
            let list = container
                .entry(path.name)
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(list) = list.as_array_mut() else {
                return;
            };
            let position = list
                .iter()
                .position(|e| e.get(attr).and_then(Value::as_str) == Some(wanted));
            let element = match position {
                Some(i) => &mut list[i],
                None => {
                    let primary = list.is_empty();
                    let mut e = Map::new();
                    e.insert(attr.into(), Value::String(wanted.into()));
                    if primary {
                        e.insert("primary".into(), Value::Bool(true));
                    }
                    list.push(Value::Object(e));
                    list.last_mut().expect("just pushed")
                }
            };
            if let Some(e) = element.as_object_mut() {
                e.insert(sub.unwrap_or("value").into(), Value::String(value.into()));
            }
        }
    }
}

/// The paths of the attribute map at which `resource` holds nothing, for the
/// `remove` operations of a PATCH, each once: a top-level attribute (an
/// extension's URN) the user has nothing of, else an extension's attribute or a
/// complex attribute's sub-attribute the user lacks (a `replace` of a complex
/// attribute leaves the sub-attributes it does not name as they were). A
/// multi-valued attribute is replaced as a whole, so its elements need none.
pub fn removed_paths(rules: &[AttributeRule], resource: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |p: String| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for path in rules.iter().filter_map(|r| parse_path(&r.to)) {
        let top = path.urn.unwrap_or(path.name);
        let Some(container) = resource.get(top) else {
            push(top.to_string());
            continue;
        };
        if path.filter.is_some() {
            continue;
        }
        let (attribute, name) = match path.urn {
            Some(urn) => (container.get(path.name), format!("{urn}:{}", path.name)),
            None => (Some(container), path.name.to_string()),
        };
        let Some(attribute) = attribute else {
            push(name);
            continue;
        };
        if let Some(sub) = path.sub
            && attribute.get(sub).is_none()
        {
            push(format!("{name}.{sub}"));
        }
    }
    out
}

/// The value the match attribute takes for this resource.
pub fn match_value<'a>(resource: &'a Value, attribute: &str) -> Option<&'a str> {
    resource.get(attribute).and_then(Value::as_str)
}

/// A digest of `resource` that does not depend on the order of its keys.
pub fn digest(resource: &Value) -> String {
    fn canonical(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<_> = map.keys().collect();
                keys.sort();
                out.push('{');
                for k in keys {
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                    out.push(',');
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for item in items {
                    canonical(item, out);
                    out.push(',');
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    canonical(resource, &mut text);
    let hash = Sha256::digest(text.as_bytes());
    hash[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::testkit;

    fn rules(pairs: &[(&str, &str)]) -> Vec<AttributeRule> {
        pairs
            .iter()
            .map(|(from, to)| AttributeRule {
                from: from.to_string(),
                to: to.to_string(),
            })
            .collect()
    }

    fn bob() -> UserRecord {
        let mut r = testkit::active("bob", testkit::MAPPING);
        r.fields.username = Some("bob".into());
        r.fields.email = Some("bob@example.com".into());
        r.fields.display_name = Some("Bob B".into());
        r.fields.attributes.insert("employeeNumber", "42");
        r.fields.attributes.insert("givenName", "Bob");
        r
    }

    #[test]
    fn the_attribute_map_builds_core_multi_valued_and_extension_attributes() {
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let r = resource(
            &bob(),
            &rules(&[
                ("username", "userName"),
                ("displayName", "displayName"),
                ("email", r#"emails[type eq "work"].value"#),
                ("attributes.givenName", "name.givenName"),
                ("anchor", "externalId"),
                (
                    "attributes.employeeNumber",
                    &format!("{enterprise}:employeeNumber"),
                ),
                ("userPrincipalName", "nickName"),
            ]),
        );
        assert_eq!(
            r,
            json!({
                "schemas": [USER_SCHEMA, enterprise],
                "userName": "bob",
                "displayName": "Bob B",
                "emails": [{"type": "work", "value": "bob@example.com", "primary": true}],
                "name": {"givenName": "Bob"},
                "externalId": bob().anchor,
                "nickName": bob().fields.user_principal_name,
                enterprise: {"employeeNumber": "42"},
            })
        );
    }

    #[test]
    fn what_the_user_lacks_is_removed_down_to_the_sub_attribute_each_once() {
        let enterprise = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let map = rules(&[
            ("username", "userName"),
            ("email", "emails[type eq \"work\"].value"),
            ("displayName", "emails[type eq \"home\"].display"),
            ("attributes.givenName", "name.givenName"),
            ("displayName", "name.formatted"),
            (
                "attributes.employeeNumber",
                &format!("{enterprise}:employeeNumber"),
            ),
            ("attributes.costCenter", &format!("{enterprise}:costCenter")),
            ("attributes.manager", &format!("{enterprise}:manager.value")),
            ("attributes.title", "title"),
        ]);
        let mut r = bob();
        r.fields.display_name = None;
        r.fields.email = None;
        // Everything there: nothing to remove.
        let mut full = bob();
        for (k, v) in [("costCenter", "7"), ("manager", "alice"), ("title", "Dr")] {
            full.fields.attributes.insert(k, v);
        }
        assert!(removed_paths(&map, &resource(&full, &map)).is_empty());
        assert_eq!(
            removed_paths(&map, &resource(&r, &map)),
            [
                "emails".to_string(),
                "name.formatted".into(),
                format!("{enterprise}:costCenter"),
                format!("{enterprise}:manager"),
                "title".into(),
            ]
        );
        // Without any of an extension's attributes, the extension goes whole.
        r.fields.attributes = Default::default();
        r.fields.attributes.insert("givenName", "Bob");
        assert_eq!(
            removed_paths(&map, &resource(&r, &map)),
            ["emails", "name.formatted", enterprise, "title"]
        );
    }

    #[test]
    fn a_missing_field_leaves_its_attribute_out() {
        let mut r = bob();
        r.fields.email = None;
        let v = resource(
            &r,
            &rules(&[
                ("username", "userName"),
                ("email", r#"emails[type eq "work"].value"#),
            ]),
        );
        assert_eq!(v, json!({"schemas": [USER_SCHEMA], "userName": "bob"}));
    }

    #[test]
    fn two_values_of_one_multi_valued_attribute_share_it_and_only_the_first_is_primary() {
        let mut r = bob();
        r.fields.user_principal_name = Some("bob@corp".into());
        let v = resource(
            &r,
            &rules(&[
                ("email", r#"emails[type eq "work"].value"#),
                ("userPrincipalName", r#"emails[type eq "other"].value"#),
            ]),
        );
        assert_eq!(
            v["emails"],
            json!([
                {"type": "work", "value": "bob@example.com", "primary": true},
                {"type": "other", "value": "bob@corp"},
            ])
        );
    }

    #[test]
    fn paths_are_parsed_as_the_crd_admits_them() {
        for good in [
            "userName",
            "name.givenName",
            r#"emails[type eq "work"].value"#,
            r#"phoneNumbers[type eq "mobile"]"#,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            assert!(is_valid_path(good), "{good}");
        }
        for bad in [
            "",
            "id",
            "active",
            "meta",
            "1abc",
            "a..b",
            "emails[type eq work]",
            "a b",
        ] {
            assert!(!is_valid_path(bad), "{bad}");
        }
    }

    #[test]
    fn the_digest_ignores_key_order_and_sees_every_value() {
        let a = json!({"userName": "bob", "name": {"givenName": "B", "familyName": "C"}});
        let b = json!({"name": {"familyName": "C", "givenName": "B"}, "userName": "bob"});
        assert_eq!(digest(&a), digest(&b));
        let c = json!({"userName": "bob", "name": {"givenName": "B", "familyName": "D"}});
        assert_ne!(digest(&a), digest(&c));
        assert_ne!(digest(&json!({"a": "1"})), digest(&json!({"a": 1})));
    }
}
