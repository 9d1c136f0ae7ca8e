//! What can go wrong talking to an LDAP server, in words an admin can act on.
//!
//! Every variant maps to one reason of a fixed set ([`LdapError::reason`]), which
//! the connector's `Connected` condition and the metrics use as a label. Messages
//! name the URL, the bind DN or the base DN involved and the server's result code,
//! and never a password: the password only ever lives in a
//! [`SecretString`](crate::secret::SecretString) and is never formatted.

/// The reasons an LDAP operation fails, as used in the `Connected` condition.
pub const REASONS: [&str; 10] = [
    "Unreachable",
    "TLSError",
    "BindFailed",
    "Timeout",
    "SizeLimitExceeded",
    "SearchFailed",
    "InvalidConfig",
    "CookieRepeated",
    "EntryLimitExceeded",
    "EntryTooLarge",
];

/// An LDAP operation that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum LdapError {
    /// The settings or the scope can never work; retrying will not help.
    #[error("invalid LDAP settings: {0}")]
    InvalidConfig(String),

    /// No TCP connection: the host did not resolve, refused, or is unreachable.
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        url: String,
        detail: String,
        #[source]
        source: std::io::Error,
    },

    /// The TLS handshake (LDAPS or StartTLS) failed: most often an unknown CA, a
    /// certificate that does not name the host, or a server without TLS.
    #[error("TLS with {url} failed: {detail}")]
    Tls {
        url: String,
        detail: String,
        #[source]
        source: Option<Box<ldap3::LdapError>>,
    },

    /// The server refused the bind.
    #[error("bind as {dn} failed: {}", describe_result(*.rc, .text))]
    BindFailed { dn: String, rc: u32, text: String },

    /// The server did not answer within the configured timeout, or stopped a
    /// search at its own time limit.
    #[error("{operation} on {url} timed out: {detail}")]
    Timeout {
        url: String,
        operation: &'static str,
        detail: String,
    },

    /// The server stopped a search at one of its limits: the read is incomplete.
    #[error(
        "search of {base_dn} was cut off by a server limit: {} (raise the limit for the bind account, or lower pageSize)",
        describe_result(*.rc, .text)
    )]
    SizeLimitExceeded {
        base_dn: String,
        rc: u32,
        text: String,
    },

    /// The server answered a page of this search a second time, ending in the
    /// paged-results cookie it had sent after it before: its pages go round in
    /// a cycle, and following them would never end.
    #[error(
        "{url} sent a paged-results cookie for {base_dn} that this search had already used, after the same page, at page {pages}: the pages go round in a cycle, so the read stopped and changes nothing; this is a fault of the server, not a setting"
    )]
    CookieRepeated {
        base_dn: String,
        url: String,
        pages: u64,
    },

    /// A search returned more entries than `maxEntries`: a server that never
    /// stops sending them, or a scope larger than the limit.
    #[error(
        "the search of {base_dn} returned more than {limit} entries, so the read stopped and changes nothing; if the scope really holds more entries, raise spec.ldap.maxEntries"
    )]
    EntryLimitExceeded { base_dn: String, limit: u64 },

    /// One entry carried more attribute data than any user entry holds. Its
    /// size is known when it arrived whole; one far past the limit is stopped
    /// on the way, before it is held in memory.
    #[error(
        "an entry of the search of {base_dn} carries {}, more than the {limit} bytes an entry may have, so the read stopped and changes nothing; a user entry holds a few KiB of the attributes a mapping reads: check the server, or map a smaller attribute",
        match size { Some(size) => format!("{size} bytes of attributes"), None => "more data than the connection lets one message carry".to_string() }
    )]
    EntryTooLarge {
        base_dn: String,
        size: Option<usize>,
        limit: usize,
    },

    /// Any other failure of a search, including a connection lost mid-read.
    #[error("search of {base_dn} failed: {detail}")]
    SearchFailed {
        base_dn: String,
        detail: String,
        #[source]
        source: Option<Box<ldap3::LdapError>>,
    },
}

impl LdapError {
    /// The condition reason for this error, one of [`REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            LdapError::InvalidConfig(_) => "InvalidConfig",
            LdapError::Unreachable { .. } => "Unreachable",
            LdapError::Tls { .. } => "TLSError",
            LdapError::BindFailed { .. } => "BindFailed",
            LdapError::Timeout { .. } => "Timeout",
            LdapError::SizeLimitExceeded { .. } => "SizeLimitExceeded",
            LdapError::SearchFailed { .. } => "SearchFailed",
            LdapError::CookieRepeated { .. } => "CookieRepeated",
            LdapError::EntryLimitExceeded { .. } => "EntryLimitExceeded",
            LdapError::EntryTooLarge { .. } => "EntryTooLarge",
        }
    }

    /// Whether retrying later may help (everything but a configuration error).
    pub fn is_transient(&self) -> bool {
        !matches!(self, LdapError::InvalidConfig(_))
    }
}

/// `"invalid credentials (49): <server text>"`: the result code's name, its
/// number (what admins search for), and the server's own words when it gave any.
pub(crate) fn describe_result(rc: u32, text: &str) -> String {
    let name = result_code_name(rc);
    let text = text.trim_end_matches('\0').trim();
    if text.is_empty() {
        format!("{name} ({rc})")
    } else {
        format!("{name} ({rc}): {text}")
    }
}

/// RFC 4511 result codes, in words.
fn result_code_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        1 => "operations error",
        2 => "protocol error",
        3 => "time limit exceeded",
        4 => "size limit exceeded",
        7 => "authentication method not supported",
        8 => "stronger authentication required",
        10 => "referral",
        11 => "administrative limit exceeded",
        12 => "unavailable critical extension",
        13 => "confidentiality required",
        32 => "no such object",
        34 => "invalid DN syntax",
        48 => "inappropriate authentication",
        49 => "invalid credentials",
        50 => "insufficient access rights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwilling to perform",
        80 => "other",
        88 => "cancelled",
        _ => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_failure_names_the_dn_and_the_result_code() {
        let e = LdapError::BindFailed {
            dn: "cn=x".into(),
            rc: 49,
            text: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "bind as cn=x failed: invalid credentials (49)"
        );
        assert_eq!(e.reason(), "BindFailed");
    }

    #[test]
    fn server_text_is_kept_without_trailing_nul() {
        assert_eq!(
            describe_result(49, "80090308: LdapErr: data 52e\0"),
            "invalid credentials (49): 80090308: LdapErr: data 52e"
        );
    }

    #[test]
    fn every_reason_is_in_the_fixed_set() {
        let errors = [
            LdapError::InvalidConfig(String::new()),
            LdapError::Unreachable {
                url: String::new(),
                detail: String::new(),
                source: std::io::Error::other("x"),
            },
            LdapError::Tls {
                url: String::new(),
                detail: String::new(),
                source: None,
            },
            LdapError::BindFailed {
                dn: String::new(),
                rc: 49,
                text: String::new(),
            },
            LdapError::Timeout {
                url: String::new(),
                operation: "bind",
                detail: String::new(),
            },
            LdapError::SizeLimitExceeded {
                base_dn: String::new(),
                rc: 4,
                text: String::new(),
            },
            LdapError::SearchFailed {
                base_dn: String::new(),
                detail: String::new(),
                source: None,
            },
            LdapError::CookieRepeated {
                base_dn: String::new(),
                url: String::new(),
                pages: 2,
            },
            LdapError::EntryLimitExceeded {
                base_dn: String::new(),
                limit: 1,
            },
            LdapError::EntryTooLarge {
                base_dn: String::new(),
                size: Some(2),
                limit: 1,
            },
        ];
        let mut seen: Vec<&str> = errors.iter().map(LdapError::reason).collect();
        seen.sort_unstable();
        let mut all = REASONS.to_vec();
        all.sort_unstable();
        assert_eq!(seen, all);
    }
}
