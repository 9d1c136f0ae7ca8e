//! `usersync users`, `usersync preserve` and `usersync unpreserve`: the registry as an
//! admin sees it, and the admin's manual preserve, whichever store keeps the users.

use std::fmt::Write as _;

use crate::core::UserRecord;
use crate::store::{Backend, UserStore};

/// Every user of `namespace`, in name order.
pub async fn list(
    client: &kube::Client,
    backend: &Backend,
    namespace: &str,
) -> anyhow::Result<Vec<UserRecord>> {
    let mut records =
        std::sync::Arc::unwrap_or_clone(backend.open(client, namespace).snapshot().await?);
    records.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(records)
}

/// The users as a table for a terminal.
pub fn render(records: &[UserRecord]) -> String {
    let rows: Vec<[String; 8]> = records
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                r.fields.username.clone().unwrap_or_default(),
                r.origin.to_string(),
                r.state.to_string(),
                r.reason.map(|x| x.to_string()).unwrap_or_default(),
                r.mapping.clone().unwrap_or_default(),
                if r.manual_preserve { "yes" } else { "" }.to_string(),
                r.delete_after_time
                    .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "USERNAME",
        "ORIGIN",
        "STATE",
        "REASON",
        "MAPPING",
        "PRESERVE",
        "DELETE AFTER",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let text: Vec<String> = cells.zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", text.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// Set (`true`) or lift (`false`) an admin's manual preserve of user `name`.
pub async fn set_preserve(
    client: &kube::Client,
    backend: &Backend,
    namespace: &str,
    name: &str,
    preserve: bool,
) -> anyhow::Result<()> {
    let actor = format!("usersync {} ({})", verb(preserve), super::whoami());
    backend
        .open(client, namespace)
        .set_manual_preserve(name, preserve, &actor)
        .await?;
    Ok(())
}

fn verb(preserve: bool) -> &'static str {
    if preserve { "preserve" } else { "unpreserve" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Origin, Reason, State, UserFields};

    #[test]
    fn the_table_lines_up_and_shows_a_manual_preserve() {
        let record = UserRecord {
            name: "corp-0123".into(),
            origin: Origin::Directory,
            connector: "corp".into(),
            anchor: "a".into(),
            mapping: Some("staff".into()),
            fields: UserFields {
                username: Some("ann".into()),
                ..Default::default()
            },
            manual_preserve: true,
            state: State::Preserved,
            reason: Some(Reason::Manual),
            preserved_at: None,
            deleted_at: None,
            delete_after_time: Some("2026-01-08T00:00:00.5Z".parse().unwrap()),
        };
        let text = render(&[record]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "NAME       USERNAME  ORIGIN     STATE      REASON  MAPPING  PRESERVE  DELETE AFTER"
        );
        assert_eq!(
            lines[1],
            "corp-0123  ann       Directory  Preserved  Manual  staff    yes       2026-01-08T00:00:00Z"
        );
    }
}
