//! The durations of the API: `30s`, `15m`, `24h`, `45d`, `1h30m`.
//!
//! One grammar is shared by three places that must agree: this parser, the
//! CRD's admission rule ([`DURATION_PATTERN`]) and the formatter that writes
//! durations back into status. A value the API server admits is one the operator
//! can read, and a value the operator writes is one the API server admits.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The regular expression the CRD's validation rule applies to every duration
/// field. [`parse_duration`] accepts exactly the strings this pattern matches
/// (a test holds the two together), except values too large to represent.
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h|d))+$";

/// The shortest `interval` of a SyncPolicy: a shorter one runs syncs back to back.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `fullSyncInterval` of a SyncPolicy: a shorter one reads the whole scope back to back.
pub const MIN_FULL_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest `preservation.deleteAfter`: a preserved user keeps a window to come back.
pub const MIN_DELETE_AFTER: Duration = Duration::from_secs(3600);
/// The shortest `probeInterval` of a ConnectorHealth: zero would probe in a busy loop.
pub const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest `staleAfter` of a ConnectorHealth: zero would never allow a deletion.
pub const MIN_STALE_AFTER: Duration = Duration::from_secs(1);
/// The shortest connection and request `timeout` of a connector: zero fails every call.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The shortest `interval` of a ProvisioningTarget: a shorter one sends cycles back to back.
pub const MIN_TARGET_INTERVAL: Duration = Duration::from_secs(10);

/// What the API says when `field` is shorter than `min`; the CRD's rule and
/// [`check_minimum`] say the same words.
pub fn minimum_message(field: &str, min: Duration) -> String {
    format!("{field} must be at least {}", format_duration(min))
}

/// Parses `value` of the field `field` and checks that it is at least `min`,
/// with the admission rule's message. For objects stored before the CRD
/// enforced the minimums: they reach the operator without passing it.
pub fn check_minimum(field: &str, value: &str, min: Duration) -> Result<Duration, String> {
    let duration = parse_duration(value).map_err(|e| format!("{field}: {e}"))?;
    if duration < min {
        return Err(minimum_message(field, min));
    }
    Ok(duration)
}

/// A regular expression that finds, in a string of the grammar, a `<digits><unit>`
/// group that alone is at least `min`; leading zeros and group order do not matter.
///
/// The CRD's minimum rule needs it because the API server's CEL `duration()` has
/// no days and overflows near 292 years: a value with such a group is long
/// enough, and one without has only groups below `min` (so below a day, and
/// zero-day groups), which `duration()` reads once `d` is spelt `h`.
pub fn at_least_pattern(min: Duration) -> String {
    // `m` is a minute only when the next group or the end follows (not `ms`).
    const UNITS: [(&str, u128); 5] = [
        ("ms", 1),
        ("s", 1_000),
        ("m(?:[0-9]|$)", 60_000),
        ("h", 3_600_000),
        ("d", 86_400_000),
    ];
    let min_ms = min.as_millis().max(1);
    let mut by_number: Vec<(String, Vec<&str>)> = Vec::new();
    for (unit, size) in UNITS {
        let number = at_least_number(min_ms.div_ceil(size));
        match by_number.iter_mut().find(|(n, _)| *n == number) {
            Some((_, units)) => units.push(unit),
            None => by_number.push((number, vec![unit])),
        }
    }
    by_number
        .iter()
        .map(|(number, units)| match units.as_slice() {
            [unit] => format!("{number}{unit}"),
            units => format!("{number}(?:{})", units.join("|")),
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// A regular expression for the decimal numbers of at least `n` (n ≥ 1),
/// written from their first significant digit. A match is a suffix of a
/// group's digits, never larger than the whole number, so a match anywhere
/// proves the group is at least `n`.
fn at_least_number(n: u128) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let len = digits.len();
    let any_digits = |count: usize| match count {
        0 => String::new(),
        1 => "[0-9]".to_owned(),
        _ => format!("[0-9]{{{count}}}"),
    };
    let digit_from = |digit: u8| match digit {
        9 => "9".to_owned(),
        d => format!("[{d}-9]"),
    };
    // Past the last significant digit any digits do: a number with the same
    // prefix and a larger or equal digit there is large enough.
    let significant = len - digits.iter().rev().take_while(|&&d| d == 0).count();
    if significant == 1 && digits[0] == 1 {
        // A power of ten: every number of at least `len` digits.
        return match len - 1 {
            0 => "[1-9][0-9]*".to_owned(),
            rest => format!("[1-9][0-9]{{{rest},}}"),
        };
    }
    let mut alternatives = vec![format!("[1-9][0-9]{{{len},}}")];
    let mut prefix = String::new();
    for (i, &digit) in digits[..significant].iter().enumerate() {
        let rest = any_digits(len - i - 1);
        if i + 1 == significant {
            alternatives.push(format!("{prefix}{}{rest}", digit_from(digit)));
        } else if digit < 9 {
            alternatives.push(format!("{prefix}{}{rest}", digit_from(digit + 1)));
        }
        prefix.push(char::from(b'0' + digit));
    }
    format!("(?:{})", alternatives.join("|"))
}

/// Why a string is not a duration of the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing to parse.
    #[error(
        "a duration cannot be empty: write a number followed by a unit, e.g. 30s, 15m, 24h, 45d"
    )]
    Empty,
    /// A character that is neither a digit nor a unit where one was expected.
    #[error(
        "invalid duration {input:?}: expected a whole number at position {position}; \
         durations are whole numbers with units ms, s, m, h, d (e.g. 1h30m)"
    )]
    ExpectedNumber { input: String, position: usize },
    /// A number without a unit, or with a unit this API does not know (`1w`).
    #[error(
        "invalid duration {input:?}: missing or unknown unit at position {position}; \
         the units are ms, s, m, h and d (days of 24h)"
    )]
    ExpectedUnit { input: String, position: usize },
    /// The value does not fit in the range the operator can represent.
    #[error("duration {input:?} is too large")]
    Overflow { input: String },
}

/// Parses a duration of the API: one or more `<digits><unit>` groups with the
/// units `ms`, `s`, `m`, `h` and `d` (a day is 24 hours), e.g. `1h30m`.
///
/// Signs, fractions, spaces and other units are refused rather than guessed at,
/// because a misread retention period deletes users at the wrong time.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = input.as_bytes();
    let overflow = || DurationError::Overflow {
        input: input.to_owned(),
    };
    let mut total_ms: u64 = 0;
    let mut pos = 0;
    while pos < bytes.len() {
        let digits_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == digits_start {
            return Err(DurationError::ExpectedNumber {
                input: input.to_owned(),
                position: pos,
            });
        }
        let value: u64 = input[digits_start..pos].parse().map_err(|_| overflow())?;
        // `ms` is tried before `m`, the same order as the pattern's alternation.
        let (unit_ms, unit_len) = match &bytes[pos..] {
            [b'm', b's', ..] => (1, 2),
            [b's', ..] => (1_000, 1),
            [b'm', ..] => (60_000, 1),
            [b'h', ..] => (3_600_000, 1),
            [b'd', ..] => (86_400_000, 1),
            _ => {
                return Err(DurationError::ExpectedUnit {
                    input: input.to_owned(),
                    position: pos,
                });
            }
        };
        pos += unit_len;
        total_ms = value
            .checked_mul(unit_ms)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(overflow)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration in the API's grammar, largest units first (`90m` becomes
/// `1h30m`, zero becomes `0s`). Precision below a millisecond is dropped: the
/// grammar cannot express it.
pub fn format_duration(duration: Duration) -> String {
    const UNITS: [(&str, u128); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut rest = duration.as_millis();
    if rest == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let count = rest / size;
        if count > 0 {
            out.push_str(&count.to_string());
            out.push_str(unit);
            rest -= count * size;
        }
    }
    out
}

/// A duration as the API spells it. It serialises as the canonical string
/// ([`format_duration`]) and deserialises through [`parse_duration`], so a
/// malformed value fails at the boundary with the parser's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ApiDuration(Duration);

impl ApiDuration {
    /// Wraps a duration (sub-millisecond precision is lost when written out).
    pub const fn new(duration: Duration) -> Self {
        Self(duration)
    }

    /// The duration itself.
    pub const fn get(self) -> Duration {
        self.0
    }
}

impl From<Duration> for ApiDuration {
    fn from(duration: Duration) -> Self {
        Self(duration)
    }
}

impl From<ApiDuration> for Duration {
    fn from(duration: ApiDuration) -> Self {
        duration.0
    }
}

impl FromStr for ApiDuration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Self)
    }
}

impl fmt::Display for ApiDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl Serialize for ApiDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for ApiDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for ApiDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ApiDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: whole numbers with units ms, s, m, h, d (24h), e.g. 30s, 15m, 24h, 45d, 1h30m."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(15 * MINUTE));
        assert_eq!(parse_duration("24h"), Ok(24 * HOUR));
        assert_eq!(parse_duration("45d"), Ok(45 * DAY));
    }

    #[test]
    fn parses_combined_groups() {
        assert_eq!(parse_duration("1h30m"), Ok(HOUR + 30 * MINUTE));
        assert_eq!(parse_duration("1d12h"), Ok(DAY + 12 * HOUR));
        assert_eq!(
            parse_duration("1m1ms"),
            Ok(MINUTE + Duration::from_millis(1))
        );
        // Groups need not be ordered or distinct; the pattern allows it too.
        assert_eq!(parse_duration("30m1h"), Ok(HOUR + 30 * MINUTE));
    }

    #[test]
    fn refuses_what_the_api_does_not_spell() {
        for bad in [
            "", "5", "1.5h", "-1s", "+1s", "1w", "h", "1h ", " 1h", "1H", "1hm", "1y", "ms", "1µs",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn error_messages_name_the_problem() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        let unit = parse_duration("1w").unwrap_err().to_string();
        assert!(unit.contains("unit") && unit.contains("\"1w\""), "{unit}");
        let number = parse_duration("-1s").unwrap_err().to_string();
        assert!(number.contains("whole number"), "{number}");
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn formats_largest_units_first() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(90 * MINUTE), "1h30m");
        assert_eq!(format_duration(45 * DAY), "45d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_nanos(1_999_999)), "1ms");
    }

    #[test]
    fn api_duration_round_trips_through_json() {
        let d: ApiDuration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.get(), HOUR + 30 * MINUTE);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let err = serde_json::from_str::<ApiDuration>("\"1.5h\"").unwrap_err();
        assert!(err.to_string().contains("1.5h"), "{err}");
    }

    #[test]
    fn schema_carries_the_admission_pattern() {
        let schema = schemars::schema_for!(ApiDuration);
        let json = serde_json::to_value(&schema).unwrap();
        assert_eq!(json["pattern"], DURATION_PATTERN);
        assert_eq!(json["type"], "string");
    }

    /// The samples cover both sides of the grammar's edges; the property below
    /// covers random strings over the alphabet that matters.
    #[test]
    fn parser_accepts_exactly_what_the_pattern_accepts() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        let samples = [
            "0s", "1ms", "30s", "15m", "24h", "45d", "1h30m", "1m1ms", "10ms5s", "007s", "1d1d",
            "", "5", "1.5h", "-1s", "1w", "ms", "s", "1", "1hh", "1h3", "h1", "1 h", "1msm",
            "1sms", "1M", "1h\n", "\n1h", "١s",
        ];
        for sample in samples {
            assert_eq!(
                pattern.is_match(sample),
                parse_duration(sample).is_ok(),
                "pattern and parser disagree on {sample:?}"
            );
        }
    }

    #[test]
    fn check_minimum_refuses_below_and_accepts_from_the_bound() {
        let refused = |message: &str| Err(message.to_owned());
        for (field, value, min, expected) in [
            ("interval", "1m", MIN_INTERVAL, Ok(MINUTE)),
            ("interval", "30s30s", MIN_INTERVAL, Ok(MINUTE)),
            (
                "interval",
                "59s999ms",
                MIN_INTERVAL,
                refused("interval must be at least 1m"),
            ),
            ("deleteAfter", "0d60m", MIN_DELETE_AFTER, Ok(HOUR)),
            (
                "deleteAfter",
                "59m59s",
                MIN_DELETE_AFTER,
                refused("deleteAfter must be at least 1h"),
            ),
            (
                "timeout",
                "999ms",
                MIN_TIMEOUT,
                refused("timeout must be at least 1s"),
            ),
        ] {
            assert_eq!(
                check_minimum(field, value, min),
                expected,
                "{field}={value}"
            );
        }
        let malformed = check_minimum("staleAfter", "5 minutes", MIN_STALE_AFTER).unwrap_err();
        assert!(
            malformed.starts_with("staleAfter: invalid duration"),
            "{malformed}"
        );
    }

    #[test]
    fn at_least_numbers_read_as_intended() {
        assert_eq!(at_least_number(1), "[1-9][0-9]*");
        assert_eq!(at_least_number(1000), "[1-9][0-9]{3,}");
        assert_eq!(at_least_number(60), "(?:[1-9][0-9]{2,}|[6-9][0-9])");
        assert_eq!(
            at_least_number(3600),
            "(?:[1-9][0-9]{4,}|[4-9][0-9]{3}|3[6-9][0-9]{2})"
        );
        assert_eq!(at_least_number(99), "(?:[1-9][0-9]{2,}|99)");
        assert_eq!(
            at_least_number(205),
            "(?:[1-9][0-9]{3,}|[3-9][0-9]{2}|2[1-9][0-9]|20[5-9])"
        );
    }

    /// The groups of a string of the grammar, in milliseconds (saturating).
    fn groups_ms(s: &str) -> Vec<u128> {
        let group = regex::Regex::new("([0-9]+)(ms|s|m|h|d)").unwrap();
        group
            .captures_iter(s)
            .map(|c| {
                let n: u128 = c[1].parse().unwrap_or(u128::MAX);
                let unit = match &c[2] {
                    "ms" => 1,
                    "s" => 1_000,
                    "m" => 60_000,
                    "h" => 3_600_000,
                    _ => 86_400_000,
                };
                n.saturating_mul(unit)
            })
            .collect()
    }

    const MINIMUMS: [Duration; 6] = [
        MIN_INTERVAL,
        MIN_FULL_SYNC_INTERVAL,
        MIN_DELETE_AFTER,
        MIN_PROBE_INTERVAL,
        MIN_STALE_AFTER,
        MIN_TIMEOUT,
    ];

    #[test]
    fn at_least_pattern_finds_a_group_that_alone_reaches_the_minimum() {
        let samples = [
            "1m",
            "59s",
            "60s",
            "060s",
            "59999ms",
            "60000ms",
            "1m1ms",
            "1ms",
            "1h",
            "3599s",
            "3600s",
            "59m",
            "60m",
            "0d",
            "1d",
            "00000000000000000000001s",
            "0m59s",
            "30s30s",
            "9999ms",
            "999ms",
            "1000ms",
            "0001000ms",
            "100000000000000000000000ms",
        ];
        for min in MINIMUMS
            .into_iter()
            .chain([Duration::from_millis(205), 23 * HOUR])
        {
            let pattern = regex::Regex::new(&at_least_pattern(min)).unwrap();
            for sample in samples {
                let expected = groups_ms(sample).iter().any(|&g| g >= min.as_millis());
                assert_eq!(
                    pattern.is_match(sample),
                    expected,
                    "{sample:?} against {min:?}: {pattern}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn parser_and_pattern_agree_on_random_strings(s in "[0-9msdhw.\\- ]{0,8}") {
            let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
            prop_assert_eq!(pattern.is_match(&s), parse_duration(&s).is_ok());
        }

        #[test]
        fn at_least_pattern_agrees_with_the_groups(
            groups in proptest::collection::vec(("0{0,3}[0-9]{1,8}", "ms|s|m|h|d"), 1..5),
            min_ms in 1u64..86_400_000,
        ) {
            let s: String = groups.iter().map(|(n, u)| format!("{n}{u}")).collect();
            let min = Duration::from_millis(min_ms);
            let pattern = regex::Regex::new(&at_least_pattern(min)).unwrap();
            let expected = groups_ms(&s).iter().any(|&g| g >= min.as_millis());
            prop_assert_eq!(pattern.is_match(&s), expected, "{} against {:?}", s, min);
        }

        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000_000_000) {
            let d = Duration::from_millis(ms);
            let text = format_duration(d);
            prop_assert!(regex::Regex::new(DURATION_PATTERN).unwrap().is_match(&text));
            prop_assert_eq!(parse_duration(&text), Ok(d));
        }
    }
}
