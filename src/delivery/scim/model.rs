//! The SCIM resources and messages the client sends and reads (RFC 7643,
//! RFC 7644), read as real applications write them: `active` as `"True"`,
//! `Operations` capitalised, `totalResults` or `Resources` left out, the
//! version in `meta.version` or only in the `ETag` header.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

use super::error::ScimError;

pub(crate) const PATCH_OP_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
pub const ENTERPRISE_USER_SCHEMA: &str =
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The attribute a user is matched by in the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchAttribute {
    UserName,
    ExternalId,
}

impl MatchAttribute {
    /// The SCIM attribute name, as in a filter.
    pub fn as_str(self) -> &'static str {
        match self {
            MatchAttribute::UserName => "userName",
            MatchAttribute::ExternalId => "externalId",
        }
    }
}

impl Serialize for MatchAttribute {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MatchAttribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.as_str() {
            "userName" => Ok(MatchAttribute::UserName),
            "externalId" => Ok(MatchAttribute::ExternalId),
            other => Err(serde::de::Error::custom(format!(
                "unknown matching attribute {other:?}: use userName or externalId"
            ))),
        }
    }
}

/// `attr eq "value"`, the value a JSON string as RFC 7644 §3.4.2.2 has it, so
/// that a quote or a backslash in it cannot end the string early.
pub fn eq_filter(attr: MatchAttribute, value: &str) -> String {
    let quoted = serde_json::to_string(value).expect("a string serialises");
    format!("{} eq {quoted}", attr.as_str())
}

/// A user as the application holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteUser {
    pub id: String,
    pub user_name: Option<String>,
    pub external_id: Option<String>,
    pub active: Option<bool>,
    /// The version for `If-Match`: `meta.version`, else the `ETag` header.
    pub etag: Option<String>,
    /// The resource as the application sent it.
    pub raw: Value,
}

impl RemoteUser {
    /// The user in `value`; `None` when it has no `id` (nothing can address it).
    pub fn from_value(value: Value, etag_header: Option<&str>) -> Option<Self> {
        let id = match value.get("id")? {
            Value::String(s) if !s.is_empty() => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return None,
        };
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let etag = value
            .get("meta")
            .and_then(|m| m.get("version"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| etag_header.map(str::to_owned));
        Some(Self {
            id,
            user_name: text("userName"),
            external_id: text("externalId"),
            active: value.get("active").and_then(lenient_bool),
            etag,
            raw: value,
        })
    }
}

/// A boolean as applications send it: `true`, or `"True"` / `"false"`.
pub(crate) fn lenient_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The kind of a PATCH operation, sent lowercase as RFC 7644 §3.5.2 has it
/// (and read in any case, as Entra writes `Replace`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    Add,
    Replace,
    Remove,
}

impl PatchOpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Replace => "replace",
            PatchOpKind::Remove => "remove",
        }
    }
}

impl Serialize for PatchOpKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PatchOpKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match name.to_ascii_lowercase().as_str() {
            "add" => Ok(PatchOpKind::Add),
            "replace" => Ok(PatchOpKind::Replace),
            "remove" => Ok(PatchOpKind::Remove),
            _ => Err(serde::de::Error::custom(format!(
                "unknown PATCH operation {name:?}: add, replace or remove"
            ))),
        }
    }
}

/// One operation of a PATCH request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatchOp {
    pub op: PatchOpKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    pub fn replace(path: &str, value: Value) -> Self {
        Self {
            op: PatchOpKind::Replace,
            path: Some(path.to_owned()),
            value: Some(value),
        }
    }

    pub fn add(path: &str, value: Value) -> Self {
        Self {
            op: PatchOpKind::Add,
            path: Some(path.to_owned()),
            value: Some(value),
        }
    }

    pub fn remove(path: &str) -> Self {
        Self {
            op: PatchOpKind::Remove,
            path: Some(path.to_owned()),
            value: None,
        }
    }
}

/// The body of a PATCH request for `ops`. Consecutive `add` or `replace`
/// operations on plain attribute paths are sent as one operation without a
/// path whose value holds them all (RFC 7644 §3.5.2.1, §3.5.2.3), so a change
/// of several attributes is one operation the application applies whole.
pub fn patch_body(ops: &[PatchOp]) -> Value {
    let mut out: Vec<PatchOp> = Vec::new();
    for op in ops {
        if let Some(last) = out.last_mut()
            && merge_into(last, op)
        {
            continue;
        }
        match mergeable(op) {
            Some(keys) => {
                let mut value = Map::new();
                insert_at(&mut value, &keys, op.value.clone().unwrap_or(Value::Null));
                out.push(PatchOp {
                    op: op.op,
                    path: None,
                    value: Some(Value::Object(value)),
                });
            }
            None => out.push(op.clone()),
        }
    }
    json!({ "schemas": [PATCH_OP_SCHEMA], "Operations": out })
}

/// The keys a mergeable operation's value goes under in a path-less value:
/// `active` → [active]; `name.givenName` → [name, givenName]; an extension
/// attribute `urn:…:User:department` → [urn:…:User, department]. `None` for a
/// remove, a path with a value filter (`emails[type eq "work"]`), or no path.
fn mergeable(op: &PatchOp) -> Option<Vec<String>> {
    if op.op == PatchOpKind::Remove || op.value.is_none() {
        return None;
    }
    let path = op.path.as_deref()?;
    if path.is_empty() || path.contains('[') || path.contains(' ') {
        return None;
    }
    if path.starts_with("urn:") {
        let (schema, attr) = path.rsplit_once(':')?;
        let mut keys = vec![schema.to_owned()];
        keys.extend(attr.split('.').map(str::to_owned));
        return Some(keys);
    }
    Some(path.split('.').map(str::to_owned).collect())
}

/// Add `op` to the path-less operation `last`, when both are of one kind and
/// no attribute of `op` is set in `last` already.
fn merge_into(last: &mut PatchOp, op: &PatchOp) -> bool {
    if last.op != op.op || last.path.is_some() {
        return false;
    }
    let Some(keys) = mergeable(op) else {
        return false;
    };
    let Some(Value::Object(value)) = last.value.as_mut() else {
        return false;
    };
    if taken(value, &keys) {
        return false;
    }
    insert_at(value, &keys, op.value.clone().unwrap_or(Value::Null));
    true
}

/// Whether `keys` (or a prefix of them holding a non-object) is set in `map`.
fn taken(map: &Map<String, Value>, keys: &[String]) -> bool {
    match keys {
        [] => false,
        [key] => map.contains_key(key),
        [key, rest @ ..] => match map.get(key) {
            None => false,
            Some(Value::Object(inner)) => taken(inner, rest),
            Some(_) => true,
        },
    }
}

fn insert_at(map: &mut Map<String, Value>, keys: &[String], value: Value) {
    match keys {
        [] => {}
        [key] => {
            map.insert(key.clone(), value);
        }
        [key, rest @ ..] => {
            let inner = map
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = inner {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// What the application says it supports (`/ServiceProviderConfig`, and
/// `/ResourceTypes` or `/Schemas` for the enterprise extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub patch: bool,
    pub filter: bool,
    pub filter_max_results: Option<u32>,
    pub etag: bool,
    pub bulk: bool,
    /// The User resource type takes the enterprise extension
    /// (`urn:ietf:params:scim:schemas:extension:enterprise:2.0:User`).
    pub enterprise_user: bool,
}

impl Capabilities {
    /// The features of a `/ServiceProviderConfig` body; `enterprise_user` is
    /// left false, it comes from the other endpoints.
    pub(crate) fn from_service_provider_config(body: &Value) -> Result<Self, ScimError> {
        if !body.is_object() {
            return Err(ScimError::Protocol(
                "/ServiceProviderConfig is not a JSON object".into(),
            ));
        }
        let supported = |feature: &str| {
            body.get(feature)
                .and_then(|f| f.get("supported"))
                .and_then(lenient_bool)
                .unwrap_or(false)
        };
        let filter_max_results = body
            .get("filter")
            .and_then(|f| f.get("maxResults"))
            .and_then(lenient_u64)
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        Ok(Self {
            patch: supported("patch"),
            filter: supported("filter"),
            filter_max_results,
            etag: supported("etag"),
            bulk: supported("bulk"),
            enterprise_user: false,
        })
    }
}

/// A number as applications send it: `5`, or `"5"`.
pub(crate) fn lenient_u64(value: &Value) -> Option<u64> {
    match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Whether a `/ResourceTypes` answer (a ListResponse, or a bare list) gives
/// the User type the enterprise extension; `None` when it names no User type.
pub(crate) fn enterprise_in_resource_types(body: &Value) -> Option<bool> {
    let user = resources(body)
        .iter()
        .find(|t| {
            t.get("id").and_then(Value::as_str) == Some("User")
                || t.get("name").and_then(Value::as_str) == Some("User")
        })?
        .clone();
    let extensions = user.get("schemaExtensions").and_then(Value::as_array);
    Some(extensions.is_some_and(|list| {
        list.iter()
            .any(|e| e.get("schema").and_then(Value::as_str) == Some(ENTERPRISE_USER_SCHEMA))
    }))
}

/// Whether a `/Schemas` answer holds the enterprise extension's schema.
pub(crate) fn enterprise_in_schemas(body: &Value) -> bool {
    resources(body)
        .iter()
        .any(|s| s.get("id").and_then(Value::as_str) == Some(ENTERPRISE_USER_SCHEMA))
}

/// The items of a list answer: `Resources` (any case), or the body itself
/// when it is a bare array; none when absent, as some applications send an
/// empty list.
pub(crate) fn resources(body: &Value) -> Vec<Value> {
    if let Value::Array(items) = body {
        return items.clone();
    }
    body.as_object()
        .and_then(|o| {
            o.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Resources"))
                .map(|(_, v)| v)
        })
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// One page of users.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub users: Vec<RemoteUser>,
    /// All users there are; when the application leaves it out, those before
    /// this page and on it.
    pub total_results: u64,
    pub start_index: u64,
    /// Items on the page, with or without an `id`: where the next page starts.
    pub items: u64,
}

impl ListPage {
    /// The page in a ListResponse `body` asked for from `asked_start`. Items
    /// without an `id` are left out: nothing could address them.
    pub(crate) fn from_value(body: &Value, asked_start: u64) -> Result<Self, ScimError> {
        if !body.is_object() && !body.is_array() {
            return Err(ScimError::Protocol(
                "a list of users is not a JSON object (ListResponse)".into(),
            ));
        }
        let items = resources(body);
        let count = items.len() as u64;
        let users: Vec<RemoteUser> = items
            .into_iter()
            .filter_map(|item| RemoteUser::from_value(item, None))
            .collect();
        let start_index = body
            .get("startIndex")
            .and_then(lenient_u64)
            .unwrap_or(asked_start)
            .max(1);
        let total_results = body
            .get("totalResults")
            .and_then(lenient_u64)
            .unwrap_or(start_index - 1 + count);
        Ok(Self {
            users,
            total_results,
            start_index,
            items: count,
        })
    }
}

/// One request and its answer, for a dry run's or `usersync provision`'s
/// account of what was sent. It holds no credential, and a `password`
/// attribute's value shows as `<redacted>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    pub method: String,
    /// Relative to the base URL, with the query: `/Users?filter=…`.
    pub path: String,
    pub request: Option<Value>,
    pub status: u16,
    pub response: Option<Value>,
}

/// `value` with the value of every `password` attribute replaced.
pub(crate) fn redact_passwords(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if k.eq_ignore_ascii_case("password") {
                        Value::String("<redacted>".into())
                    } else {
                        redact_passwords(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_passwords).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_value_is_a_json_string_with_quotes_and_backslashes_escaped() {
        assert_eq!(
            eq_filter(MatchAttribute::UserName, "alice"),
            r#"userName eq "alice""#
        );
        assert_eq!(
            eq_filter(MatchAttribute::ExternalId, r#"o"brien\x"#),
            r#"externalId eq "o\"brien\\x""#
        );
        assert_eq!(
            eq_filter(MatchAttribute::UserName, "tab\there"),
            r#"userName eq "tab\there""#
        );
    }

    #[test]
    fn a_user_is_read_with_string_booleans_and_either_version() {
        let user = RemoteUser::from_value(
            json!({"id": "7", "userName": "a", "active": "False", "meta": {"version": "W/\"3\""}}),
            Some("W/\"9\""),
        )
        .unwrap();
        assert_eq!(user.active, Some(false));
        assert_eq!(user.etag.as_deref(), Some("W/\"3\""));
        let header_only =
            RemoteUser::from_value(json!({"id": "7", "active": "True"}), Some("W/\"9\"")).unwrap();
        assert_eq!(header_only.active, Some(true));
        assert_eq!(header_only.etag.as_deref(), Some("W/\"9\""));
        assert!(RemoteUser::from_value(json!({"userName": "no id"}), None).is_none());
    }

    #[test]
    fn a_list_without_resources_or_total_is_read_and_items_without_id_are_skipped() {
        let empty = ListPage::from_value(
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 0}),
            1,
        )
        .unwrap();
        assert!(empty.users.is_empty());
        assert_eq!(empty.total_results, 0);
        let page = ListPage::from_value(
            &json!({"resources": [{"id": "1"}, {"userName": "ghost"}, {"id": "3"}], "startIndex": "11"}),
            11,
        )
        .unwrap();
        assert_eq!(page.users.len(), 2);
        assert_eq!(page.start_index, 11);
        assert_eq!(page.total_results, 13);
        assert!(ListPage::from_value(&json!("nope"), 1).is_err());
    }

    #[test]
    fn consecutive_replaces_of_plain_attributes_are_one_operation_with_real_booleans() {
        let body = patch_body(&[
            PatchOp::replace("active", json!(false)),
            PatchOp::replace("displayName", json!("Ann B")),
            PatchOp::replace("name.givenName", json!("Ann")),
            PatchOp::replace(
                &format!("{ENTERPRISE_USER_SCHEMA}:department"),
                json!("R&D"),
            ),
            PatchOp::remove("title"),
            PatchOp::add(r#"emails[type eq "work"].value"#, json!("a@x")),
        ]);
        assert_eq!(
            body,
            json!({
                "schemas": [PATCH_OP_SCHEMA],
                "Operations": [
                    {"op": "replace", "value": {
                        "active": false,
                        "displayName": "Ann B",
                        "name": {"givenName": "Ann"},
                        ENTERPRISE_USER_SCHEMA: {"department": "R&D"}
                    }},
                    {"op": "remove", "path": "title"},
                    {"op": "add", "path": "emails[type eq \"work\"].value", "value": "a@x"}
                ]
            })
        );
    }

    #[test]
    fn an_attribute_set_twice_starts_a_new_operation() {
        let body = patch_body(&[
            PatchOp::replace("name", json!({"givenName": "A"})),
            PatchOp::replace("name.familyName", json!("B")),
            PatchOp::replace("active", json!(true)),
            PatchOp::replace("active", json!(false)),
        ]);
        let ops = body["Operations"].as_array().unwrap();
        // A complex value's sub-attributes merge (a replace leaves the others
        // as they are, RFC 7644 §3.5.2.3); a second `active` cannot.
        assert_eq!(ops.len(), 2, "{body}");
        assert_eq!(
            ops[0]["value"],
            json!({"name": {"givenName": "A", "familyName": "B"}, "active": true})
        );
        assert_eq!(ops[1]["value"], json!({"active": false}));
    }

    #[test]
    fn op_names_are_read_in_any_case_and_sent_lowercase() {
        let op: PatchOp =
            serde_json::from_value(json!({"op": "Replace", "path": "active", "value": "True"}))
                .unwrap();
        assert_eq!(op.op, PatchOpKind::Replace);
        assert_eq!(serde_json::to_value(&op).unwrap()["op"], "replace");
    }

    #[test]
    fn capabilities_read_string_booleans_and_the_enterprise_extension() {
        let caps = Capabilities::from_service_provider_config(&json!({
            "patch": {"supported": "True"},
            "filter": {"supported": true, "maxResults": "200"},
            "etag": {"supported": false},
        }))
        .unwrap();
        assert!(caps.patch && caps.filter && !caps.etag && !caps.bulk);
        assert_eq!(caps.filter_max_results, Some(200));
        let types = json!({"Resources": [{"id": "User", "schemaExtensions": [{"schema": ENTERPRISE_USER_SCHEMA}]}]});
        assert_eq!(enterprise_in_resource_types(&types), Some(true));
        assert_eq!(
            enterprise_in_resource_types(&json!([{"name": "User"}])),
            Some(false)
        );
        assert_eq!(
            enterprise_in_resource_types(&json!({"Resources": []})),
            None
        );
        assert!(enterprise_in_schemas(
            &json!([{"id": ENTERPRISE_USER_SCHEMA}])
        ));
    }

    #[test]
    fn passwords_are_redacted_in_an_exchange() {
        let shown = redact_passwords(
            &json!({"userName": "a", "password": "pw-1", "x": [{"Password": "pw-2"}]}),
        );
        let text = shown.to_string();
        assert!(!text.contains("pw-1") && !text.contains("pw-2"), "{text}");
    }
}
