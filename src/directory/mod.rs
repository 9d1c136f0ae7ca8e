//! Directory sources: where users are read from. Each source yields the small
//! per-user projection the planner needs ([`crate::core::DirectoryEntry`]).
//! [`Source`] puts the kinds behind one interface, so the runner and the prober
//! know nothing of LDAP or Graph.

pub mod graph;
pub mod ldap;
pub mod tls;

use std::time::Duration;

use jiff::Timestamp;

use crate::core::{DirectoryEntry, DirectoryView};

/// A connected directory of any kind.
pub enum Source {
    /// Active Directory, OpenLDAP or another LDAP server: full reads and lookups,
    /// and incremental reads where the server offers them.
    Ldap(ldap::LdapSource, Box<ldap::IncrementalSource>),
    /// Microsoft Entra ID through Microsoft Graph.
    Graph(Box<graph::GraphSource>),
}

/// Which users of a directory a mapping covers, per kind of directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// An LDAP search.
    Ldap(ldap::LdapScope),
    /// Entra ID users: the whole tenant, a filter, and/or transitive group members.
    Graph(graph::GraphScope),
}

/// A source's failure, classified for the `Connected` condition and run status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SourceError {
    /// A fixed reason (`Unreachable`, `TLSError`, `BindFailed`, `Timeout`, …).
    pub reason: &'static str,
    /// What happened, for a person; never contains a secret.
    pub message: String,
}

impl From<ldap::LdapError> for SourceError {
    fn from(e: ldap::LdapError) -> Self {
        Self {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

impl From<graph::GraphError> for SourceError {
    fn from(e: graph::GraphError) -> Self {
        Self {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

/// The connector and the mapping are of different kinds (an LDAP scope on a Graph
/// connector, or the other way round).
fn mismatch() -> SourceError {
    SourceError {
        reason: "InvalidConfig",
        message: "the mapping's scope is not of the connector's kind (spec.ldap needs an LDAP connector, spec.entraID an Entra ID one)".into(),
    }
}

/// A complete, full read and where the next incremental read may continue from
/// (`None`: the directory offers no incremental reads).
#[derive(Clone, Debug)]
pub struct CursorRead {
    pub read: Read,
    pub cursor: Option<String>,
}

/// The outcome of an incremental read.
#[derive(Clone, Debug)]
pub enum Incremental {
    /// What changed since the cursor (an incremental view), and the next cursor.
    Changes(CursorRead),
    /// The cursor cannot be used (expired, another server, another scope): read
    /// everything instead. Nothing was read.
    FullReadRequired(String),
}

/// A complete read of one scope.
#[derive(Clone, Debug)]
pub struct Read {
    /// The users the scope matched.
    pub view: DirectoryView,
    /// Entries left out because they had no usable anchor.
    pub skipped_without_anchor: u64,
}

/// What a push channel reports while it is open, and why one closed.
pub use ldap::{PushEnd, PushEvent};

impl Source {
    /// Open a push channel for `scope` (the policy's push mode) and report to
    /// `on_event` until it closes; an `Err` is a lost or refused connection.
    /// A directory that pushes nothing (Entra ID, a Generic LDAP server)
    /// answers [`PushEnd::NotSupported`] at once.
    pub async fn listen(
        &self,
        scope: &Scope,
        on_event: impl FnMut(PushEvent),
    ) -> Result<PushEnd, SourceError> {
        match (self, scope) {
            (Source::Ldap(_, s), Scope::Ldap(scope)) => Ok(s.listen(scope, on_event).await?),
            (Source::Graph(_), Scope::Graph(_)) => Ok(PushEnd::NotSupported(
                "Microsoft Graph pushes changes only to a public endpoint (change notifications); its changes are polled".into(),
            )),
            _ => Err(mismatch()),
        }
    }

    /// Authenticate and make one minimal read; returns the round trip.
    pub async fn probe(&self) -> Result<Duration, SourceError> {
        match self {
            Source::Ldap(s, _) => Ok(s.probe().await?.latency),
            Source::Graph(s) => Ok(s.probe().await?.latency),
        }
    }

    /// Which of `anchors` the scope matches (a targeted lookup, DESIGN rule 9).
    pub async fn lookup(
        &self,
        scope: &Scope,
        anchors: &[String],
        now: Timestamp,
    ) -> Result<Vec<DirectoryEntry>, SourceError> {
        match (self, scope) {
            (Source::Ldap(s, _), Scope::Ldap(scope)) => Ok(s.lookup(scope, anchors, now).await?),
            (Source::Graph(s), Scope::Graph(scope)) => Ok(s.lookup(scope, anchors).await?),
            _ => Err(mismatch()),
        }
    }

    /// Read a whole scope, and mark where an incremental read can continue. Any
    /// failure is an error: the caller treats it as an incomplete read, which
    /// changes no lifecycle state. `in_scope` are the anchors the caller holds
    /// as in scope: where the directory's answer is only eventually consistent
    /// (Graph's advanced queries), one missing from it is looked up before it
    /// is left out of the view.
    pub async fn read_with_cursor(
        &self,
        scope: &Scope,
        in_scope: &[String],
        now: Timestamp,
    ) -> Result<CursorRead, SourceError> {
        match (self, scope) {
            (Source::Ldap(_, s), Scope::Ldap(scope)) => {
                let (read, cursor) = s.read_full_with_cursor(scope, now).await?;
                Ok(CursorRead {
                    read: Read {
                        view: read.view,
                        skipped_without_anchor: read.skipped_without_anchor,
                    },
                    cursor: cursor.map(|c| c.to_string()),
                })
            }
            (Source::Graph(s), Scope::Graph(scope)) => match s.read_full(scope, in_scope).await? {
                graph::DeltaOutcome::Changes(read) => Ok(CursorRead {
                    cursor: read.delta.as_ref().map(graph::DeltaLink::to_token),
                    read: Read {
                        view: read.view,
                        skipped_without_anchor: read.skipped_without_anchor,
                    },
                }),
                graph::DeltaOutcome::FullReadNeeded { reason } => Err(SourceError {
                    reason: "ReadFailed",
                    message: format!("a first delta round could not be read: {reason}"),
                }),
            },
            _ => Err(mismatch()),
        }
    }

    /// What changed in the scope since `cursor`. Absence from the result means
    /// nothing; only `removed` says a user left. `in_scope` are the anchors of
    /// the users the store holds as matched by the scope: when a group an LDAP
    /// scope selects changed, those who left it are reported as removed.
    pub async fn read_since(
        &self,
        scope: &Scope,
        cursor: &str,
        in_scope: &[String],
        now: Timestamp,
    ) -> Result<Incremental, SourceError> {
        match (self, scope) {
            (Source::Ldap(_, s), Scope::Ldap(scope)) => {
                let Ok(cursor) = ldap::Cursor::parse(cursor) else {
                    return Ok(Incremental::FullReadRequired(
                        "the stored cursor is not an LDAP cursor".into(),
                    ));
                };
                match s.read_incremental(scope, &cursor, in_scope, now).await? {
                    ldap::IncrementalOutcome::Changes(r) => Ok(Incremental::Changes(CursorRead {
                        read: Read {
                            view: r.view,
                            skipped_without_anchor: r.skipped_without_anchor,
                        },
                        cursor: Some(r.cursor.to_string()),
                    })),
                    ldap::IncrementalOutcome::FullReadRequired(reason) => {
                        Ok(Incremental::FullReadRequired(reason.to_string()))
                    }
                }
            }
            (Source::Graph(s), Scope::Graph(scope)) => {
                let Ok(link) = graph::DeltaLink::from_token(cursor) else {
                    return Ok(Incremental::FullReadRequired(
                        "the stored cursor is not a delta link".into(),
                    ));
                };
                match s.read_delta(scope, Some(&link)).await? {
                    graph::DeltaOutcome::Changes(read) => Ok(Incremental::Changes(CursorRead {
                        cursor: read.delta.as_ref().map(graph::DeltaLink::to_token),
                        read: Read {
                            view: read.view,
                            skipped_without_anchor: read.skipped_without_anchor,
                        },
                    })),
                    graph::DeltaOutcome::FullReadNeeded { reason } => {
                        Ok(Incremental::FullReadRequired(reason))
                    }
                }
            }
            _ => Err(mismatch()),
        }
    }
}
