//! What can go wrong talking to Entra ID and Microsoft Graph, in words an admin
//! can act on.
//!
//! Every variant maps to one reason of a fixed set ([`GraphError::reason`]),
//! which the connector's `Connected` condition and the metrics use as a label.
//! Messages name the endpoint or the request, the HTTP status and Microsoft's
//! error code, and never a client secret, a private key, a client assertion or
//! an access token: those only ever live in a
//! [`SecretString`](crate::secret::SecretString) and are never formatted.

/// The reasons a Graph operation fails, as used in the `Connected` condition.
pub const REASONS: [&str; 11] = [
    "AuthFailed",
    "TLSError",
    "Forbidden",
    "Unreachable",
    "Throttled",
    "Timeout",
    "InvalidConfig",
    "ReadFailed",
    "ResponseTooLarge",
    "LinkCycle",
    "ReadBudgetExceeded",
];

/// An application permission the app registration needs, named in
/// [`GraphError::Forbidden`] so the admin knows what to grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Reading users: `User.Read.All`.
    UserReadAll,
    /// Reading group memberships (transitive members, checkMemberGroups):
    /// `GroupMember.Read.All`, besides `User.Read.All`.
    GroupMemberReadAll,
}

impl Permission {
    /// The permission's name as the Entra admin center shows it.
    pub fn name(self) -> &'static str {
        match self {
            Permission::UserReadAll => "User.Read.All",
            Permission::GroupMemberReadAll => "GroupMember.Read.All",
        }
    }
}

/// A Graph operation that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The settings or the scope can never work; retrying will not help.
    #[error("invalid Entra ID settings: {0}")]
    InvalidConfig(String),

    /// The token endpoint refused the app's credential (a wrong or expired
    /// client secret, a certificate that is not registered, an unknown tenant or
    /// client ID), or Graph kept refusing fresh tokens.
    #[error("authentication at {endpoint} failed: {detail}")]
    AuthFailed { endpoint: String, detail: String },

    /// Graph refused the request for lack of permission.
    #[error(
        "Microsoft Graph refused {what}: {detail}; grant the app registration the application permission {} (with admin consent)",
        .permission.name()
    )]
    Forbidden {
        what: String,
        permission: Permission,
        detail: String,
    },

    /// The server's certificate was refused (an unknown CA, another name,
    /// expired): not retried, since asking again cannot change it.
    #[error("TLS with {endpoint} failed: {detail}")]
    Tls { endpoint: String, detail: String },

    /// No answer: the host did not resolve, refused, the TLS handshake failed
    /// for a passing reason, or the service kept answering that it is unavailable.
    #[error("cannot reach {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },

    /// Graph or the token endpoint kept throttling past the retry budget.
    #[error("{what} was throttled: {detail}")]
    Throttled { what: String, detail: String },

    /// No answer within the configured timeout, on every attempt.
    #[error("{what} timed out: {detail}")]
    Timeout { what: String, detail: String },

    /// Any other failure of a read: an unexpected status or answer, a group
    /// that does not exist, a malformed page.
    #[error("{what} failed: {detail}")]
    ReadFailed { what: String, detail: String },

    /// An answer grew past the response size cap: reading on would let one
    /// broken or hostile answer take the operator's memory.
    #[error(
        "the answer to {what} from {endpoint} is larger than the response cap of {}, so the read stopped there and changes nothing; if Graph really sends pages this large, raise spec.entraID.maxResponseMiB",
        describe_size(*.limit)
    )]
    ResponseTooLarge {
        what: String,
        endpoint: String,
        limit: u64,
    },

    /// A page link pointed back to a page this listing had already read: the
    /// pages go round in a cycle, and following them would never end.
    #[error(
        "Graph sent a page link (@odata.nextLink) that {what} had already followed, after {pages} page(s): the links go round in a cycle, so the read stopped and changes nothing; this is a fault of the Graph endpoint, not a setting"
    )]
    LinkCycle { what: String, pages: u64 },

    /// The whole read took longer than its time budget (an endless chain of
    /// page links, or a server that answers ever so slowly).
    #[error(
        "{what} did not finish within the read budget of {}, so the read stopped and changes nothing; if the tenant is large enough to need longer, raise spec.entraID.readBudget",
        crate::core::duration::format_duration(*.budget)
    )]
    ReadBudgetExceeded {
        what: String,
        budget: std::time::Duration,
    },
}

/// A byte count in MiB when it is a whole number of them, else in bytes.
fn describe_size(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

impl GraphError {
    /// The condition reason for this error, one of [`REASONS`].
    pub fn reason(&self) -> &'static str {
        match self {
            GraphError::InvalidConfig(_) => "InvalidConfig",
            GraphError::AuthFailed { .. } => "AuthFailed",
            GraphError::Forbidden { .. } => "Forbidden",
            GraphError::Unreachable { .. } => "Unreachable",
            GraphError::Tls { .. } => "TLSError",
            GraphError::Throttled { .. } => "Throttled",
            GraphError::Timeout { .. } => "Timeout",
            GraphError::ReadFailed { .. } => "ReadFailed",
            GraphError::ResponseTooLarge { .. } => "ResponseTooLarge",
            GraphError::LinkCycle { .. } => "LinkCycle",
            GraphError::ReadBudgetExceeded { .. } => "ReadBudgetExceeded",
        }
    }

    /// Whether retrying later may help (everything but a configuration error).
    pub fn is_transient(&self) -> bool {
        !matches!(self, GraphError::InvalidConfig(_))
    }

    pub(crate) fn read_failed(what: impl Into<String>, detail: impl Into<String>) -> Self {
        GraphError::ReadFailed {
            what: what.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_is_in_the_fixed_set() {
        let s = String::new;
        let errors = [
            GraphError::InvalidConfig(s()),
            GraphError::AuthFailed {
                endpoint: s(),
                detail: s(),
            },
            GraphError::Forbidden {
                what: s(),
                permission: Permission::UserReadAll,
                detail: s(),
            },
            GraphError::Unreachable {
                endpoint: s(),
                detail: s(),
            },
            GraphError::Throttled {
                what: s(),
                detail: s(),
            },
            GraphError::Tls {
                endpoint: s(),
                detail: s(),
            },
            GraphError::Timeout {
                what: s(),
                detail: s(),
            },
            GraphError::ReadFailed {
                what: s(),
                detail: s(),
            },
            GraphError::ResponseTooLarge {
                what: s(),
                endpoint: s(),
                limit: 1,
            },
            GraphError::LinkCycle {
                what: s(),
                pages: 2,
            },
            GraphError::ReadBudgetExceeded {
                what: s(),
                budget: std::time::Duration::from_secs(1),
            },
        ];
        let mut seen: Vec<&str> = errors.iter().map(GraphError::reason).collect();
        seen.sort_unstable();
        let mut all = REASONS.to_vec();
        all.sort_unstable();
        assert_eq!(seen, all);
    }

    #[test]
    fn forbidden_names_the_permission_to_grant() {
        let e = GraphError::Forbidden {
            what: "reading the members of group g".into(),
            permission: Permission::GroupMemberReadAll,
            detail: "403 Authorization_RequestDenied".into(),
        };
        assert!(e.to_string().contains("GroupMember.Read.All"), "{e}");
        assert_eq!(e.reason(), "Forbidden");
    }
}
