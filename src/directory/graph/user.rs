//! One Graph user object → the [`DirectoryEntry`] projection the planner needs.
//!
//! Each user is projected as it arrives, so a read holds only the projections
//! and one page of raw JSON. The anchor is the user's object `id`, which never
//! changes; a rename or a new UPN keeps it, and a new user that takes an old
//! UPN gets a new one.

use serde_json::{Map, Value};

use super::error::GraphError;
use super::settings::GraphAttributes;
use crate::core::DirectoryEntry;

const ID: &str = "id";
const ACCOUNT_ENABLED: &str = "accountEnabled";

/// A property, or a value inside a complex property (`a/b`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PropertyPath(Vec<String>);

impl PropertyPath {
    fn new(path: &str) -> Self {
        Self(path.split('/').map(str::to_owned).collect())
    }

    /// The top-level property to `$select`.
    fn selected(&self) -> &str {
        &self.0[0]
    }

    /// The value as text: strings as they are, numbers and booleans written
    /// out, the first non-empty string of a collection (as LDAP's first
    /// value); null, empty and objects are absent.
    fn read(&self, user: &Map<String, Value>) -> Option<String> {
        let mut value = get(user, &self.0[0])?;
        for part in &self.0[1..] {
            value = get(value.as_object()?, part)?;
        }
        text(value)
    }
}

/// Graph returns properties in their canonical case; an admin may not write
/// them so.
fn get<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(items) => items.iter().find_map(|item| match item {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            _ => None,
        }),
        _ => None,
    }
}

/// Which properties a scope reads and how they become a [`DirectoryEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    username: PropertyPath,
    email: PropertyPath,
    display_name: PropertyPath,
    user_principal_name: PropertyPath,
    extra: Vec<(String, PropertyPath)>,
}

/// What became of one user object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Projected {
    User(DirectoryEntry),
    /// No `id`: a user without identity cannot be tracked.
    WithoutAnchor,
}

impl Projection {
    /// The projection of `attributes`, with the presets for unset fields.
    pub fn new(attributes: &GraphAttributes) -> Self {
        let field = |set: &Option<String>, preset: &str| {
            PropertyPath::new(set.as_deref().unwrap_or(preset))
        };
        Self {
            username: field(&attributes.username, "userPrincipalName"),
            email: field(&attributes.email, "mail"),
            display_name: field(&attributes.display_name, "displayName"),
            user_principal_name: field(&attributes.user_principal_name, "userPrincipalName"),
            extra: attributes
                .extra
                .iter()
                .map(|(key, path)| (key.clone(), PropertyPath::new(path)))
                .collect(),
        }
    }

    /// The `$select` list: `id`, `accountEnabled` (Graph returns it only when
    /// asked) and every property the fields read, each once.
    pub fn select(&self) -> String {
        let mut names: Vec<&str> = vec![ID, ACCOUNT_ENABLED];
        for path in [
            &self.user_principal_name,
            &self.username,
            &self.email,
            &self.display_name,
        ]
        .into_iter()
        .chain(self.extra.iter().map(|(_, p)| p))
        {
            let name = path.selected();
            if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                names.push(name);
            }
        }
        names.join(",")
    }

    /// The user's projection. A user object without `accountEnabled` means
    /// the answer did not honour the `$select`; it is an error rather than a
    /// guess, since guessing "disabled" would preserve users and guessing
    /// "enabled" could re-enable them.
    pub fn project(&self, user: &Map<String, Value>, what: &str) -> Result<Projected, GraphError> {
        let Some(anchor) = user
            .get(ID)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return Ok(Projected::WithoutAnchor);
        };
        let Some(enabled) = get(user, ACCOUNT_ENABLED).and_then(Value::as_bool) else {
            return Err(GraphError::read_failed(
                what,
                format!("user {anchor} came without accountEnabled although it was selected"),
            ));
        };
        Ok(Projected::User(DirectoryEntry {
            anchor: anchor.to_owned(),
            enabled,
            username: self.username.read(user),
            email: self.email.read(user),
            display_name: self.display_name.read(user),
            user_principal_name: self.user_principal_name.read(user),
            attributes: self
                .extra
                .iter()
                .filter_map(|(key, path)| path.read(user).map(|v| (key.clone(), v)))
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// A user as Graph v1.0 returns it for the default `$select`.
    fn captured_user() -> Map<String, Value> {
        object(serde_json::json!({
            "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
            "accountEnabled": true,
            "userPrincipalName": "AdeleV@contoso.com",
            "mail": "AdeleV@contoso.com",
            "displayName": "Adele Vance",
            "department": "Retail",
            "businessPhones": ["+1 425 555 0109"],
            "employeeHireDate": null,
            "onPremisesExtensionAttributes": {"extensionAttribute1": "cost-42", "extensionAttribute2": null}
        }))
    }

    #[test]
    fn presets_read_upn_mail_and_display_name() {
        let projection = Projection::new(&GraphAttributes::default());
        assert_eq!(
            projection.select(),
            "id,accountEnabled,userPrincipalName,mail,displayName"
        );
        let Projected::User(entry) = projection.project(&captured_user(), "x").unwrap() else {
            panic!()
        };
        assert_eq!(entry.anchor, "87d349ed-44d7-43e1-9a83-5f2406dee5bd");
        assert!(entry.enabled);
        assert_eq!(entry.username.as_deref(), Some("AdeleV@contoso.com"));
        assert_eq!(
            entry.user_principal_name.as_deref(),
            Some("AdeleV@contoso.com")
        );
        assert_eq!(entry.email.as_deref(), Some("AdeleV@contoso.com"));
        assert_eq!(entry.display_name.as_deref(), Some("Adele Vance"));
        assert!(entry.attributes.is_empty());
    }

    #[test]
    fn mapped_and_extra_properties_are_selected_and_read() {
        let mut attributes = GraphAttributes {
            username: Some("mailNickname".into()),
            ..Default::default()
        };
        for (k, v) in [
            ("dept", "department"),
            ("phone", "businessPhones"),
            ("hired", "employeeHireDate"),
            ("cost", "onPremisesExtensionAttributes/extensionAttribute1"),
            ("none", "onPremisesExtensionAttributes/extensionAttribute2"),
        ] {
            attributes.extra.insert(k.into(), v.into());
        }
        let projection = Projection::new(&attributes);
        assert_eq!(
            projection.select(),
            "id,accountEnabled,userPrincipalName,mailNickname,mail,displayName,onPremisesExtensionAttributes,department,employeeHireDate,businessPhones"
        );
        let Projected::User(entry) = projection.project(&captured_user(), "x").unwrap() else {
            panic!()
        };
        assert_eq!(entry.username, None);
        assert_eq!(entry.attributes["dept"], "Retail");
        assert_eq!(entry.attributes["phone"], "+1 425 555 0109");
        assert_eq!(entry.attributes["cost"], "cost-42");
        assert!(!entry.attributes.contains_key("hired"));
        assert!(!entry.attributes.contains_key("none"));
    }

    #[test]
    fn disabled_users_are_not_enabled_and_a_missing_flag_is_an_error() {
        let projection = Projection::new(&GraphAttributes::default());
        let mut user = captured_user();
        user.insert("accountEnabled".into(), Value::Bool(false));
        let Projected::User(entry) = projection.project(&user, "x").unwrap() else {
            panic!()
        };
        assert!(!entry.enabled);
        user.remove("accountEnabled");
        let e = projection.project(&user, "reading users").unwrap_err();
        assert_eq!(e.reason(), "ReadFailed");
        user.remove("id");
        assert_eq!(
            projection.project(&user, "x").unwrap(),
            Projected::WithoutAnchor
        );
    }
}
