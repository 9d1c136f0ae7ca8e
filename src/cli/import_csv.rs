//! `usersync import-csv FILE`: users of origin CSV from a file. Every row is checked
//! first and every bad row reported with its line number; then the whole set is
//! validated by the API server (a server-side dry run) before anything is written,
//! so a bad file changes nothing.

use std::collections::{BTreeMap, HashMap};

use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use crate::api::{DirectoryUser, Origin};

/// The field manager of imported users: an admin's tool, not the operator.
pub const IMPORT_FIELD_MANAGER: &str = "usersync-import-csv";

/// One user from the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvUser {
    /// The line it came from (1 is the header).
    pub line: u64,
    /// The DirectoryUser's name: `csv-` plus the username, made DNS-safe.
    pub name: String,
    pub username: String,
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub user_principal_name: Option<String>,
    pub profile: Option<String>,
    /// Every other column.
    pub attributes: BTreeMap<String, String>,
}

/// A row that cannot be imported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

const KNOWN: [&str; 5] = [
    "username",
    "email",
    "displayName",
    "userPrincipalName",
    "profile",
];

/// Parse the file: a header row naming the columns (`username` required; `email`,
/// `displayName`, `userPrincipalName`, `profile`; any other column is an attribute).
pub fn parse(text: &str) -> Result<Vec<CsvUser>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(vec![RowError {
                line: 1,
                message: format!("cannot read the header: {e}"),
            }]);
        }
    };
    if !headers.iter().any(|h| h == "username") {
        return Err(vec![RowError {
            line: 1,
            message: "the header has no `username` column".into(),
        }]);
    }
    let mut users = Vec::new();
    let mut errors = Vec::new();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(RowError {
                    line,
                    message: format!("malformed row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .and_then(|i| record.get(i))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let Some(username) = field("username") else {
            errors.push(RowError {
                line,
                message: "username is empty".into(),
            });
            continue;
        };
        let name = record_name(&username);
        if name.is_none() {
            errors.push(RowError { line, message: format!("username {username:?} cannot name a record (use letters, digits, '.', '-', '_', '@')") });
            continue;
        }
        if let Some(email) = field("email").filter(|e| !e.contains('@')) {
            errors.push(RowError {
                line,
                message: format!("email {email:?} is not an address"),
            });
            continue;
        }
        if let Some(first) = seen.insert(username.to_lowercase(), line) {
            errors.push(RowError {
                line,
                message: format!("username {username:?} already appears on line {first}"),
            });
            continue;
        }
        let attributes = headers
            .iter()
            .zip(record.iter())
            .filter(|(h, v)| !KNOWN.contains(h) && !v.is_empty())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        users.push(CsvUser {
            line,
            name: name.expect("checked above"),
            email: field("email"),
            display_name: field("displayName"),
            user_principal_name: field("userPrincipalName"),
            profile: field("profile"),
            username,
            attributes,
        });
    }
    if errors.is_empty() {
        Ok(users)
    } else {
        Err(errors)
    }
}

/// `csv-<username>` as a DNS-1123 subdomain, or `None` when the username has
/// characters that cannot be mapped without losing identity.
fn record_name(username: &str) -> Option<String> {
    let lower = username.to_lowercase();
    if !lower
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
    {
        return None;
    }
    let name: String = format!("csv-{}", lower.replace(['_', '@'], "-"));
    let name = name.trim_end_matches(['-', '.']).to_string();
    (name.len() <= 253).then_some(name)
}

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub created: usize,
    pub updated: usize,
}

/// Import `users` into `namespace`: refuse rows that would take over a record of
/// another origin, validate everything with a server-side dry run, then write.
pub async fn import(
    client: Client,
    namespace: &str,
    users: &[CsvUser],
    dry_run: bool,
) -> anyhow::Result<Result<ImportReport, Vec<RowError>>> {
    let api: Api<DirectoryUser> = Api::namespaced(client, namespace);
    let existing: HashMap<String, DirectoryUser> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|u| (u.name_any(), u))
        .collect();
    let mut errors = Vec::new();
    for user in users {
        if let Some(other) = existing
            .get(&user.name)
            .filter(|u| u.spec.origin != Origin::CSV)
        {
            errors.push(RowError {
                line: user.line,
                message: format!(
                    "record {} already exists with origin {:?}; CSV import never changes it",
                    user.name, other.spec.origin
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Ok(Err(errors));
    }
    // Pass one: the API server checks every object (schema and CEL rules) without storing any.
    let mut dry = PatchParams::apply(IMPORT_FIELD_MANAGER).force();
    dry.dry_run = true;
    for user in users {
        if let Err(e) = api
            .patch(&user.name, &dry, &Patch::Apply(&object(user)))
            .await
        {
            errors.push(RowError {
                line: user.line,
                message: format!("refused by the API server: {e}"),
            });
        }
    }
    if !errors.is_empty() || dry_run {
        return Ok(if errors.is_empty() {
            Ok(ImportReport::default())
        } else {
            Err(errors)
        });
    }
    let params = PatchParams::apply(IMPORT_FIELD_MANAGER).force();
    let mut report = ImportReport::default();
    for user in users {
        api.patch(&user.name, &params, &Patch::Apply(&object(user)))
            .await?;
        if existing.contains_key(&user.name) {
            report.updated += 1
        } else {
            report.created += 1
        }
    }
    Ok(Ok(report))
}

/// Import `users` into `namespace` of the PostgreSQL store, in one transaction.
pub async fn import_postgres(
    db: &crate::store::postgres::Database,
    namespace: &str,
    users: &[CsvUser],
    dry_run: bool,
) -> anyhow::Result<Result<ImportReport, Vec<RowError>>> {
    let records: Vec<(String, crate::core::UserFields)> = users
        .iter()
        .map(|u| {
            let fields = crate::core::UserFields {
                username: Some(u.username.clone()),
                email: u.email.clone(),
                display_name: u.display_name.clone(),
                user_principal_name: u.user_principal_name.clone(),
                profile: u.profile.clone(),
                attributes: (&u.attributes).into(),
            };
            (u.name.clone(), fields)
        })
        .collect();
    let actor = format!("usersync import-csv ({})", super::whoami());
    let outcome = db
        .store(namespace)
        .import_csv(&records, &actor, dry_run)
        .await?;
    Ok(match outcome {
        Ok(done) => Ok(ImportReport {
            created: done.created,
            updated: done.updated,
        }),
        Err(refused) => Err(refused
            .into_iter()
            .map(|(i, message)| RowError {
                line: users[i].line,
                message,
            })
            .collect()),
    })
}

fn object(user: &CsvUser) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "usersync.dev/v1alpha1",
        "kind": "DirectoryUser",
        "metadata": {"name": user.name, "labels": {"usersync.dev/origin": "csv"}},
        "spec": {
            "origin": "CSV",
            "username": user.username,
            "email": user.email,
            "displayName": user.display_name,
            "userPrincipalName": user.user_principal_name,
            "profile": user.profile,
            "attributes": user.attributes,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_file_parses_with_extra_columns_as_attributes() {
        let users = parse(
            "username,email,displayName,department\nann,ann@example.org,Ann A,Sales\nbo,,,\n",
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].name, "csv-ann");
        assert_eq!(users[0].line, 2);
        assert_eq!(
            users[0].attributes.get("department").map(String::as_str),
            Some("Sales")
        );
        assert_eq!(users[1].email, None);
    }

    #[test]
    fn each_bad_row_is_reported_with_its_line_number() {
        let errors = parse("username,email\nann,ann@example.org\n,x@example.org\nbo,not-an-address\nANN,a2@example.org\nc d,\n").unwrap_err();
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6], "{errors:?}");
        assert!(
            errors[2].message.contains("already appears on line 2"),
            "{}",
            errors[2]
        );
    }

    #[test]
    fn a_file_without_a_username_column_is_refused() {
        let errors = parse("email\nx@example.org\n").unwrap_err();
        assert_eq!(errors[0].line, 1);
    }
}
