//! LDAP directories: Active Directory (and Samba AD), OpenLDAP, and other LDAP
//! servers, read with streaming paged searches over LDAP, LDAPS or StartTLS.
//!
//! - [`settings`]: the plain, validated settings and scope types;
//! - [`flavor`]: per-server presets (anchor, disabled signal, user filter, attributes);
//! - [`filter`]: RFC 4515 escaping, filter building, DN normalisation;
//! - [`anchor`]: reading the anchor, and objectGUID bytes ↔ string;
//! - [`account`]: Active Directory's disabled signal, with `now` as a parameter;
//! - [`entry`]: one search entry → a [`DirectoryEntry`](crate::core::DirectoryEntry);
//! - `tls`, `connection` (internal): TLS, connect, bind, timeouts, and the
//!   searches of a session: paged, and with request controls (syncrepl);
//! - `scope_read` (internal): a mapping's scope read on a session, whole or
//!   narrowed: the one reader of users, for full reads, incremental reads and
//!   lookups alike;
//! - `groups` (internal): the groups a mapping selects and those nested in
//!   them, and whether any changed since a cursor;
//! - [`source`]: [`LdapSource`] — probe, and lookup by anchor;
//! - [`incremental`]: [`IncrementalSource`] — full reads with a [`Cursor`], and
//!   reads of only the changes since one (AD uSNChanged, OpenLDAP syncrepl);
//! - [`error`]: [`LdapError`] and its condition reasons.

pub mod account;
pub mod anchor;
mod connection;
pub mod entry;
pub mod error;
pub mod filter;
pub mod flavor;
mod groups;
pub mod incremental;
mod relay;
mod scope_read;
pub mod settings;
pub mod source;
mod tls;

pub use anchor::{AnchorAttribute, AnchorEncoding, guid_bytes_to_string, guid_string_to_bytes};
pub use error::{LdapError, REASONS};
pub use filter::{escape_filter_value, normalize_dn};
pub use flavor::Flavor;
pub use incremental::{
    Cursor, CursorParseError, FULL_READ_REASONS, FullReadReason, IncrementalOutcome,
    IncrementalRead, IncrementalSource, LdapRead, PushEnd, PushEvent,
};
pub use settings::{AttributeMap, LdapScope, LdapSettings, SearchScope};
pub use source::{LdapSource, ProbeReport};
