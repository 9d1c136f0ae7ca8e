//! The LDAP source: probe a directory, and look users up by anchor. Each
//! operation opens its own session and closes it, so no connection state (a
//! half-read search, a server that restarted) carries over from one run to
//! the next. Reads of a mapping's scope, full or incremental, are
//! [`IncrementalSource`](super::IncrementalSource)'s.

use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::connection::Connector;
use super::error::LdapError;
use super::flavor::Flavor;
use super::scope_read::ScopeReader;
use super::settings::{LdapScope, LdapSettings};
use crate::core::DirectoryEntry;

/// A directory reached over LDAP.
pub struct LdapSource {
    connector: Connector,
}

/// A successful probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Connect, TLS, bind and the root DSE read, end to end.
    pub latency: Duration,
    /// The root DSE's `namingContexts`: the trees the server holds.
    pub naming_contexts: Vec<String>,
}

impl LdapSource {
    /// A source for `settings`, checked. No network traffic: an unreachable
    /// server shows in the first operation.
    pub fn new(settings: &LdapSettings) -> Result<Self, LdapError> {
        Ok(Self {
            connector: Connector::new(settings)?,
        })
    }

    pub fn flavor(&self) -> Flavor {
        self.connector.settings.flavor
    }

    /// The name of the anchor attribute in use.
    pub fn anchor_attribute(&self) -> &str {
        self.connector.settings.anchor.name()
    }

    /// Connect, bind and read the root DSE: what `Connected=True` rests on.
    pub async fn probe(&self) -> Result<ProbeReport, LdapError> {
        let started = Instant::now();
        let mut session = self.connector.open().await?;
        let root = session
            .root_dse(&["namingContexts", "supportedLDAPVersion"])
            .await?;
        let latency = started.elapsed();
        session.close().await;
        let naming_contexts = root.texts("namingContexts").map(str::to_owned).collect();
        Ok(ProbeReport {
            latency,
            naming_contexts,
        })
    }

    /// The users of `scope` whose anchor is one of `anchors` (rule 9: before a
    /// user is preserved as unmapped, does another mapping match it?). Anchors
    /// that are not in the scope, or cannot be an anchor of this directory (a
    /// malformed GUID), are simply not in the result.
    pub async fn lookup(
        &self,
        scope: &LdapScope,
        anchors: &[String],
        now: Timestamp,
    ) -> Result<Vec<DirectoryEntry>, LdapError> {
        let mut reader = ScopeReader::new(&self.connector.settings, scope)?;
        let mut wanted: Vec<&String> = anchors.iter().collect();
        wanted.sort();
        wanted.dedup();
        let batches = reader.anchor_batches(wanted.into_iter());
        let mut found = Vec::new();
        if batches.is_empty() {
            return Ok(found);
        }
        let mut session = self.connector.open().await?;
        reader.nest_groups(&mut session).await?;
        for any_anchor in &batches {
            let collected = reader.read(&mut session, Some(any_anchor), now).await?;
            found.extend(collected.entries.into_values());
        }
        session.close().await;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}

    /// The controller runs reads on a multi-threaded runtime and keeps sources
    /// and errors in shared state: all of them must cross threads.
    #[test]
    fn sources_futures_and_errors_cross_threads() {
        let source = LdapSource::new(&LdapSettings::new("ldap://x", Flavor::OpenLdap)).unwrap();
        let scope = LdapScope::new("dc=x");
        let now = Timestamp::UNIX_EPOCH;
        assert_send_sync(&source);
        assert_send(&source.probe());
        assert_send(&source.lookup(&scope, &[], now));
        assert_send_sync(&LdapError::InvalidConfig(String::new()));
    }
}
