//! Active Directory's disabled signal: the ACCOUNTDISABLE bit of
//! `userAccountControl`, and `accountExpires`. Pure functions of the attribute
//! values and `now`, which the caller passes in (the clock is a parameter).

use jiff::Timestamp;

/// `userAccountControl` bit set on a disabled account (ADS_UF_ACCOUNTDISABLE).
pub const UF_ACCOUNTDISABLE: i64 = 0x2;

/// `accountExpires` value meaning "never" (besides 0).
pub const ACCOUNT_NEVER_EXPIRES: i64 = i64::MAX;

/// 100-nanosecond intervals between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_EPOCH: i128 = 116_444_736_000_000_000;

/// Whether Active Directory considers the account disabled at `now`: the
/// ACCOUNTDISABLE bit is set, or `accountExpires` is a moment at or before `now`.
///
/// A missing or unreadable attribute says nothing: AD always returns both to a
/// reader allowed to see the user, so their absence is not a signal either way.
pub fn ad_account_disabled(
    user_account_control: Option<&str>,
    account_expires: Option<&str>,
    now: Timestamp,
) -> bool {
    let disabled_bit = user_account_control
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|uac| uac & UF_ACCOUNTDISABLE != 0);
    let expired = account_expires
        .and_then(|v| v.trim().parse::<i64>().ok())
        .is_some_and(|filetime| account_expired(filetime, now));
    disabled_bit || expired
}

/// Whether an `accountExpires` FILETIME (100ns intervals since 1601, UTC) has
/// passed at `now`. 0 and 0x7FFFFFFFFFFFFFFF mean the account never expires.
pub fn account_expired(filetime: i64, now: Timestamp) -> bool {
    if filetime <= 0 || filetime == ACCOUNT_NEVER_EXPIRES {
        return false;
    }
    filetime as i128 <= timestamp_to_filetime(now)
}

/// `now` as a FILETIME, for comparing with `accountExpires`.
pub fn timestamp_to_filetime(now: Timestamp) -> i128 {
    now.as_nanosecond() / 100 + FILETIME_UNIX_EPOCH
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    /// The FILETIME of an RFC 3339 moment.
    fn filetime(at: &str) -> String {
        timestamp_to_filetime(at.parse().unwrap()).to_string()
    }

    #[test]
    fn filetime_conversion_matches_a_known_value() {
        // 2000-01-01T00:00:00Z is 125911584000000000 in FILETIME.
        assert_eq!(filetime("2000-01-01T00:00:00Z"), "125911584000000000");
    }

    #[test]
    fn account_disable_bit_means_disabled() {
        assert!(ad_account_disabled(Some("514"), Some("0"), now()));
        assert!(ad_account_disabled(Some("66050"), None, now()));
        assert!(!ad_account_disabled(Some("512"), Some("0"), now()));
        assert!(!ad_account_disabled(Some("66048"), None, now()));
    }

    #[test]
    fn account_expires_never_values_mean_enabled() {
        assert!(!ad_account_disabled(Some("512"), Some("0"), now()));
        assert!(!ad_account_disabled(
            Some("512"),
            Some("9223372036854775807"),
            now()
        ));
    }

    #[test]
    fn account_expires_in_the_past_means_disabled() {
        let past = filetime("2025-05-31T12:00:00Z");
        assert!(ad_account_disabled(Some("512"), Some(&past), now()));
        // Exactly now counts as expired.
        assert!(ad_account_disabled(
            Some("512"),
            Some(&filetime("2025-06-01T12:00:00Z")),
            now()
        ));
    }

    #[test]
    fn account_expires_in_the_future_means_enabled() {
        let future = filetime("2025-06-02T12:00:00Z");
        assert!(!ad_account_disabled(Some("512"), Some(&future), now()));
        // The same value is expired once `now` has moved past it.
        assert!(ad_account_disabled(
            Some("512"),
            Some(&future),
            "2025-06-03T00:00:00Z".parse().unwrap()
        ));
    }

    #[test]
    fn missing_or_unreadable_values_say_nothing() {
        assert!(!ad_account_disabled(None, None, now()));
        assert!(!ad_account_disabled(Some("x"), Some("soon"), now()));
    }
}
