//! The directory the emulator serves: users, groups (nested), and the change
//! log the delta query reads.
//!
//! Every change to a user object bumps the tenant's version and stamps the
//! user, and each property that changed, with it: the users delta reports a
//! user only when a property it `$select`s changed, as Graph does. Deletions
//! are logged with their version and reason. Group membership is not a change
//! of the user object (Graph's users delta does not report it either); each
//! group logs its own member changes, which the groups delta reports.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// Properties Graph returns for a user when no `$select` is given:
/// `accountEnabled` is not among them.
pub const DEFAULT_SELECT: [&str; 11] = [
    "id",
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
];

/// User properties the emulator knows (Graph answers 400 for others);
/// directory extensions (`extension_<app>_<name>`) are accepted too.
pub const KNOWN_PROPERTIES: [&str; 25] = [
    "id",
    "accountEnabled",
    "businessPhones",
    "city",
    "companyName",
    "country",
    "department",
    "displayName",
    "employeeId",
    "employeeType",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
    "preferredLanguage",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
    "createdDateTime",
];

pub fn is_known_property(name: &str) -> bool {
    KNOWN_PROPERTIES
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
        || name.starts_with("extension_")
}

pub struct User {
    pub props: Map<String, Value>,
    /// The tenant version of the user's last change.
    pub changed: u64,
    /// The tenant version the user was created at.
    pub created: u64,
    /// Per property (lowercase name): the tenant version of its last change.
    pub prop_changed: BTreeMap<String, u64>,
}

impl User {
    /// Whether the users delta since `since` reports this user: created since,
    /// or a selected property changed since (any property without `$select`).
    pub fn changed_since(&self, since: u64, select: Option<&[String]>) -> bool {
        if self.created > since {
            return true;
        }
        match select {
            None => self.changed > since,
            Some(names) => names.iter().any(|n| {
                self.prop_changed
                    .get(&n.to_ascii_lowercase())
                    .is_some_and(|v| *v > since)
            }),
        }
    }
}

#[derive(Default)]
pub struct Group {
    pub display_name: String,
    /// Direct members: user or group IDs.
    pub members: BTreeSet<String>,
    /// Member changes, oldest first: the tenant version, the member, and
    /// whether it was added (else removed).
    pub log: Vec<(u64, String, bool)>,
}

/// A deleted user, as the delta query reports it.
pub struct Removal {
    pub id: String,
    pub version: u64,
    /// `changed` (soft-deleted, in the recycle bin) or `deleted` (for good).
    pub reason: &'static str,
}

#[derive(Default)]
pub struct Tenant {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, Group>,
    pub removals: Vec<Removal>,
    pub version: u64,
    /// Objects served without their `id` (in listings, delta pages and
    /// `@removed` entries): the case a client must not skip.
    pub without_id: BTreeSet<String>,
}

impl Tenant {
    pub fn add_user(&mut self, id: String, mut props: Map<String, Value>) {
        self.version += 1;
        props.insert("id".into(), Value::String(id.clone()));
        props.entry("accountEnabled").or_insert(Value::Bool(true));
        self.users.insert(
            id,
            User {
                props,
                changed: self.version,
                created: self.version,
                prop_changed: BTreeMap::new(),
            },
        );
    }

    /// Add (or remove) a direct member of a group, logged for the groups delta;
    /// `false` when nothing changed.
    pub fn set_member(&mut self, group: &str, member: &str, present: bool) -> bool {
        let version = self.version + 1;
        let Some(g) = self.groups.get_mut(group) else {
            return false;
        };
        let changed = if present {
            g.members.insert(member.to_owned())
        } else {
            g.members.remove(member)
        };
        if changed {
            g.log.push((version, member.to_owned(), present));
            self.version = version;
        }
        changed
    }

    /// Change a user's properties; `false` when there is no such user.
    pub fn update_user(&mut self, id: &str, change: impl FnOnce(&mut Map<String, Value>)) -> bool {
        let Some(user) = self.users.get_mut(id) else {
            return false;
        };
        self.version += 1;
        let before = user.props.clone();
        change(&mut user.props);
        user.changed = self.version;
        let names: BTreeSet<&String> = before.keys().chain(user.props.keys()).collect();
        for name in names {
            if before.get(name) != user.props.get(name) {
                user.prop_changed
                    .insert(name.to_ascii_lowercase(), self.version);
            }
        }
        true
    }

    pub fn delete_user(&mut self, id: &str, reason: &'static str) -> bool {
        if self.users.remove(id).is_none() {
            return false;
        }
        self.version += 1;
        for group in self.groups.values_mut() {
            if group.members.remove(id) {
                group.log.push((self.version, id.to_owned(), false));
            }
        }
        self.removals.push(Removal {
            id: id.to_owned(),
            version: self.version,
            reason,
        });
        true
    }

    /// The users a group holds directly or through nested groups, once each.
    pub fn transitive_users(&self, group: &str) -> Vec<String> {
        let mut users = BTreeSet::new();
        for g in std::iter::once(group.to_owned()).chain(self.nested_groups(group)) {
            if let Some(g) = self.groups.get(&g) {
                users.extend(
                    g.members
                        .iter()
                        .filter(|m| self.users.contains_key(*m))
                        .cloned(),
                );
            }
        }
        users.into_iter().collect()
    }

    /// The groups nested in a group, at any depth, once each (not the group
    /// itself, unless a cycle leads back to it).
    pub fn nested_groups(&self, group: &str) -> BTreeSet<String> {
        let mut nested = BTreeSet::new();
        let mut stack = vec![group.to_owned()];
        while let Some(g) = stack.pop() {
            let Some(g) = self.groups.get(&g) else {
                continue;
            };
            for member in &g.members {
                if self.groups.contains_key(member) && nested.insert(member.clone()) {
                    stack.push(member.clone());
                }
            }
        }
        nested
    }

    /// Which of `groups` the user is a transitive member of.
    pub fn member_groups(&self, user: &str, groups: &[String]) -> Vec<String> {
        groups
            .iter()
            .filter(|g| self.transitive_users(g).iter().any(|u| u == user))
            .cloned()
            .collect()
    }

    /// A user as Graph returns it: the selected properties (`id` always;
    /// selected but unset ones as null), or the default set.
    pub fn render(&self, id: &str, select: Option<&[String]>) -> Option<Value> {
        let user = self.users.get(id)?;
        let mut out = Map::new();
        if !self.without_id.contains(id) {
            out.insert("id".into(), json!(id));
        }
        let names: Vec<&str> = match select {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => DEFAULT_SELECT.to_vec(),
        };
        for name in names {
            if name == "id" {
                continue;
            }
            let (key, value) = user
                .props
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap_or_else(|| (canonical(name), Value::Null));
            out.insert(key, value);
        }
        Some(Value::Object(out))
    }
}

/// A property's canonical spelling.
fn canonical(name: &str) -> String {
    KNOWN_PROPERTIES
        .iter()
        .find(|p| p.eq_ignore_ascii_case(name))
        .map(|p| (*p).to_owned())
        .unwrap_or_else(|| name.to_owned())
}
