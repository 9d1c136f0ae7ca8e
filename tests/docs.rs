//! The README is the operator's manual: every reason a condition can carry must
//! be explained in it, so that an admin who reads `kubectl describe` finds what
//! it means and what to do.

use std::collections::BTreeSet;
use std::path::Path;

/// The reasons the controllers write, found in their source: the first string
/// of each `set(...)`/`set_condition(...)` call, `Readiness::not("...")`,
/// `reason: "..."` fields and `=> "..."` / `=> (bool, "...")` arms.
fn controller_reasons() -> BTreeSet<String> {
    let patterns = [
        r#"(?s)\bset(?:_condition)?\([^"]*?"([A-Z][A-Za-z]+)""#,
        r#"Readiness::not\(\s*"([A-Z][A-Za-z]+)""#,
        r#"reason:\s*"([A-Z][A-Za-z]+)""#,
        r#"=>\s*"([A-Z][A-Za-z]+)""#,
        r#"=>\s*\((?:true|false),\s*"([A-Z][A-Za-z]+)"\)"#,
        r#"Verdict::new\(\s*Health::\w+,\s*"([A-Z][A-Za-z]+)""#,
    ]
    .map(|p| regex::Regex::new(p).unwrap());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut reasons = BTreeSet::new();
    // The controllers, and the health verdicts they write.
    let files = std::fs::read_dir(root.join("src/controller"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([root.join("src/core/health.rs")]);
    for path in files {
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        // Only the code, not its unit tests.
        let code = source.split("#[cfg(test)]").next().unwrap();
        for pattern in &patterns {
            for c in pattern.captures_iter(code) {
                reasons.insert(c[1].to_owned());
            }
        }
    }
    // Condition types are constants, but a literal one would match too.
    for kind in [
        "Ready",
        "Reconciling",
        "Stalled",
        "Connected",
        "Synced",
        "Syncing",
        "DeletionsBlocked",
    ] {
        reasons.remove(kind);
    }
    reasons
}

#[test]
fn every_condition_reason_is_explained_in_the_readme() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let found = controller_reasons();
    assert!(
        found.len() >= 15 && found.contains("PolicyNotFound") && found.contains("RunFailed"),
        "the scan of the controllers found too little: {found:?}"
    );
    let mut reasons = found;
    reasons.extend(usersync::directory::ldap::REASONS.map(str::to_owned));
    reasons.extend(usersync::directory::graph::REASONS.map(str::to_owned));
    let missing: Vec<_> = reasons
        .iter()
        .filter(|r| !readme.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "condition reasons the README does not explain: {missing:?}"
    );
}
