//! Types shared by several resources.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use kube::core::{Message, Rule};
use serde::{Deserialize, Serialize};

use crate::core::duration::{at_least_pattern, format_duration, minimum_message};

/// The API group of every usersync resource.
pub const GROUP: &str = "usersync.dev";
/// The one API version served so far.
pub const VERSION: &str = "v1alpha1";

/// Durations in the API are Go-style plus days (`30s`, `15m`, `24h`, `45d`, `1h30m`); the
/// CRD checks them with the same pattern the core's parser accepts.
pub use crate::core::duration::DURATION_PATTERN;

/// `text` as a CEL string literal, so that a regular expression shared with Rust
/// reaches the API server unchanged.
pub(crate) fn cel_string(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The CEL rule that a duration field carries; `field` names it in the message.
pub(crate) fn duration_rule(field: &str) -> Rule {
    Rule::new(format!("self.matches({})", cel_string(DURATION_PATTERN))).message(Message::Message(format!(
        "{field} must be a duration such as 30s, 15m, 24h or 45d (digits followed by ms, s, m, h or d)"
    )))
}

/// The CEL rule that keeps a duration field at `min` or more, for every value
/// [`DURATION_PATTERN`] admits (a malformed value is left to [`duration_rule`]).
///
/// CEL's `duration()` knows no days and overflows near 292 years, so a value
/// with one group of at least `min` is accepted by a regular expression first;
/// the rest has only groups below `min`, days among them only as zero, and
/// reads as a CEL duration once `d` is spelt `h`. The cost stays that of two
/// regular expressions over the field's 64 characters.
pub(crate) fn duration_minimum_rule(field: &str, min: Duration) -> Rule {
    assert!(
        min < Duration::from_secs(86_400),
        "a minimum of a day or more would need days in CEL's duration()"
    );
    Rule::new(format!(
        "!self.matches({pattern}) || self.matches({group}) || duration(self.replace('d', 'h')) >= duration('{min}')",
        pattern = cel_string(DURATION_PATTERN),
        group = cel_string(&at_least_pattern(min)),
        min = format_duration(min),
    ))
    .message(Message::Message(minimum_message(field, min)))
}

/// The longest label value Kubernetes accepts. The names of connectors and
/// mappings become label values on their users, so they are held to it.
pub const MAX_LABEL_VALUE_LEN: usize = 63;

/// The root rule of a kind whose object names become the value of `label`.
pub(crate) fn name_fits_label_rule(kind: &str, label: &str) -> Rule {
    Rule::new(format!("size(self.metadata.name) <= {MAX_LABEL_VALUE_LEN}")).message(Message::Message(format!(
        "a {kind} name must be at most {MAX_LABEL_VALUE_LEN} characters: it becomes the value of the {label} label on its users"
    )))
}

/// A DNS-1123 label: at most 63 lowercase letters, digits and '-', beginning and
/// ending with a letter or digit.
pub const DNS1123_LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A DNS-1123 subdomain, the syntax of most object names: DNS-1123 labels
/// joined by '.', at most 253 characters in all.
pub const DNS1123_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The longest DNS-1123 subdomain.
pub const MAX_DNS1123_SUBDOMAIN_LEN: usize = 253;

/// Whether `name` is a DNS-1123 label (what [`DNS1123_LABEL_PATTERN`] and 63
/// characters allow).
pub fn is_dns1123_label(name: &str) -> bool {
    name.len() <= MAX_LABEL_VALUE_LEN && is_label_syntax(name)
}

/// Whether `name` is a DNS-1123 subdomain, the syntax of the object names a
/// reference may carry. Check a reference with it before it goes into a request
/// path: `..`, '/' and '?' can never pass.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= MAX_DNS1123_SUBDOMAIN_LEN && name.split('.').all(is_label_syntax)
}

fn is_label_syntax(part: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = part.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alphanumeric(first)
                && alphanumeric(last)
                && bytes.iter().all(|&b| alphanumeric(b) || b == b'-')
        }
        _ => false,
    }
}

/// The CEL rule of a field that names an object (a `kind`) in the same namespace.
pub(crate) fn reference_rule(field: &str, kind: &str) -> Rule {
    Rule::new(format!("self.matches({})", cel_string(DNS1123_SUBDOMAIN_PATTERN))).message(Message::Message(format!(
        "{field} must be a valid {kind} name (lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit)"
    )))
}

/// The CEL rule of a field that names an object (a `kind`) whose names are DNS-1123
/// labels, such as a DirectoryMapping (its name becomes a label value).
pub(crate) fn label_reference_rule(field: &str, kind: &str) -> Rule {
    Rule::new(format!("self.matches({})", cel_string(DNS1123_LABEL_PATTERN))).message(Message::Message(format!(
        "{field} must be a valid {kind} name (at most {MAX_LABEL_VALUE_LEN} lowercase letters, digits and '-', beginning and ending with a letter or digit)"
    )))
}

/// A reference to one key of a Secret in the same namespace as the referring object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the namespace of the object that refers to it.
    #[x_kube(validation = reference_rule("secret name", "Secret"))]
    #[schemars(length(max = 253))]
    pub name: String,
    /// Key within the Secret's data whose value is used.
    #[x_kube(validation = kube::core::Rule::new("size(self) > 0").message("secret key must not be empty"))]
    #[schemars(length(max = 253))]
    pub key: String,
}

/// The condition of the given type in a condition list, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type is present with status `True`.
pub fn condition_is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Build a condition, keeping `lastTransitionTime` from `previous` when the status
/// did not change (the Kubernetes convention: the time marks a transition, not a write).
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    previous: Option<&Condition>,
    now: jiff::Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message: message.into(),
        observed_generation,
        last_transition_time,
    }
}

/// Put a condition into a list in place of the one of its type (keeping that one's
/// `lastTransitionTime` when the status holds), in a stable order by type.
#[allow(clippy::too_many_arguments)]
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let new = condition(
        type_,
        status,
        reason,
        message,
        observed_generation,
        find_condition(conditions, type_),
        now,
    );
    conditions.retain(|c| c.type_ != type_);
    conditions.push(new);
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::duration::{
        MIN_DELETE_AFTER, MIN_FULL_SYNC_INTERVAL, MIN_INTERVAL, MIN_PROBE_INTERVAL,
        MIN_STALE_AFTER, MIN_TARGET_INTERVAL, MIN_TIMEOUT, check_minimum, parse_duration,
    };
    use proptest::prelude::*;

    const MINIMUMS: [(&str, Duration); 7] = [
        ("targetInterval", MIN_TARGET_INTERVAL),
        ("interval", MIN_INTERVAL),
        ("fullSyncInterval", MIN_FULL_SYNC_INTERVAL),
        ("deleteAfter", MIN_DELETE_AFTER),
        ("probeInterval", MIN_PROBE_INTERVAL),
        ("staleAfter", MIN_STALE_AFTER),
        ("timeout", MIN_TIMEOUT),
    ];

    /// What the API server decides with [`duration_minimum_rule`], step by step:
    /// the pattern, the one-group shortcut, then CEL's `duration()` (which reads
    /// what is left as the core's parser does).
    fn minimum_rule_admits(value: &str, min: Duration) -> bool {
        let rule = duration_minimum_rule("field", min).rule;
        let group = at_least_pattern(min);
        assert!(rule.contains(&cel_string(&group)), "{rule}");
        !regex::Regex::new(DURATION_PATTERN).unwrap().is_match(value)
            || regex::Regex::new(&group).unwrap().is_match(value)
            || parse_duration(&value.replace('d', "h")).expect("a short duration") >= min
    }

    #[test]
    fn minimum_rule_and_check_minimum_agree_on_both_sides_of_each_bound() {
        for (field, min) in MINIMUMS {
            let ms = min.as_millis();
            let below = [
                format!("{}ms", ms - 1),
                format!("0d{}ms", ms - 1),
                format!("{}ms1ms", ms - 2),
                "0s".to_owned(),
                "0d".to_owned(),
            ];
            let at_or_above = [
                format!("{ms}ms"),
                format!("000{ms}ms"),
                format!("{}ms1ms", ms - 1),
                format_duration(min),
                format!("0d{}", format_duration(min)),
                "1d".to_owned(),
                "45d".to_owned(),
                // Beyond CEL's 292 years, within what the operator represents.
                "9999999999999999ms".to_owned(),
            ];
            for value in &below {
                assert!(!minimum_rule_admits(value, min), "{field}={value}");
                assert_eq!(
                    check_minimum(field, value, min),
                    Err(minimum_message(field, min))
                );
            }
            for value in &at_or_above {
                assert!(minimum_rule_admits(value, min), "{field}={value}");
                assert!(check_minimum(field, value, min).is_ok(), "{field}={value}");
            }
        }
    }

    #[test]
    fn minimum_rule_says_what_check_minimum_says() {
        let rule = duration_minimum_rule("deleteAfter", MIN_DELETE_AFTER);
        assert_eq!(
            rule.message,
            Some(Message::Message("deleteAfter must be at least 1h".into()))
        );
        assert!(rule.rule.ends_with(">= duration('1h')"), "{}", rule.rule);
    }

    #[test]
    fn cel_strings_escape_backslashes_and_quotes() {
        assert_eq!(cel_string(r"a\.b"), r"'a\\.b'");
        assert_eq!(cel_string("it's"), r"'it\'s'");
    }

    #[test]
    fn dns1123_names() {
        for good in ["a", "corp", "corp-ad", "0", "a1", "corp.example", "a-b.c-d"] {
            assert!(is_dns1123_subdomain(good), "{good:?}");
        }
        for good in ["a", "corp", "corp-ad", "0", "a1"] {
            assert!(is_dns1123_label(good), "{good:?}");
        }
        for bad in [
            "",
            "../../victim/secrets/db",
            "db?namespace=victim",
            "a/b",
            "Corp",
            "-a",
            "a-",
            ".a",
            "a.",
            "a..b",
            "a_b",
            "a b",
            "é",
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad:?}");
            assert!(!is_dns1123_label(bad), "{bad:?}");
        }
        assert!(!is_dns1123_label("corp.example"));
        assert!(is_dns1123_label(&"a".repeat(63)));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        assert!(is_dns1123_subdomain(&long));
        assert!(!is_dns1123_subdomain(&format!("{long}c")));
    }

    proptest! {
        #[test]
        fn dns1123_validators_agree_with_the_crd_patterns(name in "[a-z0-9.A/?_-]{0,8}") {
            let label = regex::Regex::new(DNS1123_LABEL_PATTERN).unwrap();
            let subdomain = regex::Regex::new(DNS1123_SUBDOMAIN_PATTERN).unwrap();
            prop_assert_eq!(is_dns1123_label(&name), label.is_match(&name));
            prop_assert_eq!(is_dns1123_subdomain(&name), subdomain.is_match(&name));
        }

        #[test]
        fn minimum_rule_and_check_minimum_agree_on_random_durations(
            groups in proptest::collection::vec(("0{0,2}[0-9]{1,9}", "ms|s|m|h|d"), 1..6),
            which in 0..MINIMUMS.len(),
        ) {
            let value: String = groups.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let (field, min) = MINIMUMS[which];
            prop_assert_eq!(
                minimum_rule_admits(&value, min),
                check_minimum(field, &value, min).is_ok(),
                "{}={}", field, value
            );
        }
    }
}
