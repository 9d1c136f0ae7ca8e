//! One LDAP session: TCP connect, TLS (LDAPS or StartTLS), simple bind, and
//! the searches run on it: paged searches of a scope, and searches that carry
//! request controls of their own (the syncrepl refresh). Every step has the
//! settings' timeout.
//!
//! The TCP connection is opened here rather than inside ldap3, so that a
//! failure to reach the host (Unreachable) is told apart from a failed TLS
//! handshake on a host that answered (TLSError).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly};
use ldap3::controls::{Control, ControlType, PagedResults, RawControl};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, ResultEntry, Scope, StdStream};
use rustls::ClientConfig;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::entry::{RawEntry, entry_bytes};
use super::error::{LdapError, describe_result};
use super::settings::{LdapSettings, MAX_ENTRY_BYTES, SearchScope, Transport, ValidSettings};
use super::tls::{client_config, describe_tls_failure};
use crate::secret::SecretString;

/// Everything needed to open sessions to one directory, checked once.
pub struct Connector {
    pub(super) settings: ValidSettings,
    tls: Option<Arc<ClientConfig>>,
    insecure_skip_verify: bool,
    bind: Option<(String, SecretString)>,
}

impl Connector {
    /// Check `settings` and prepare the TLS configuration. No network traffic.
    pub fn new(settings: &LdapSettings) -> Result<Self, LdapError> {
        let valid = settings.validate()?;
        let tls = match valid.transport {
            Transport::Plain => None,
            Transport::StartTls | Transport::Ldaps => Some(client_config(
                settings.ca_pem.as_deref(),
                settings.insecure_skip_verify,
            )?),
        };
        Ok(Self {
            settings: valid,
            tls,
            insecure_skip_verify: settings.insecure_skip_verify,
            bind: settings.bind.clone(),
        })
    }

    /// Connect, secure and bind: a session ready for searches.
    pub async fn open(&self) -> Result<Session, LdapError> {
        let s = &self.settings;
        let timeout = s.timeout;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect((s.host.as_str(), s.port)))
            .await
        {
            Err(_) => {
                return Err(
                    self.timeout_error("connect", format!("no answer within {}", secs(timeout)))
                );
            }
            Ok(Err(e)) => return Err(self.unreachable(e)),
            Ok(Ok(tcp)) => tcp,
        };
        // A connection that waits for long (a push channel) learns of a peer
        // that is gone without a word, as behind a firewall that forgot it:
        // after a minute of silence the kernel probes it every 15 s, and ends
        // the connection after nine unanswered probes.
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(60))
            .with_interval(Duration::from_secs(15));
        if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive) {
            tracing::debug!(error = %e, "TCP keepalive could not be set");
        }
        // Through the relay that stops a message far past the entry cap before
        // ldap3 holds it whole: twice the cap leaves room for BER and TLS framing.
        let (tcp, gauge) = super::relay::relay(tcp, 2 * MAX_ENTRY_BYTES)
            .await
            .map_err(|e| self.unreachable(e))?;
        let std_stream = tcp.into_std().map_err(|e| self.unreachable(e))?;
        let mut conn_settings = LdapConnSettings::new()
            .set_conn_timeout(timeout)
            .set_std_stream(StdStream::Tcp(std_stream));
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings
                .set_config(tls.clone())
                .set_starttls(s.transport == Transport::StartTls)
                .set_no_tls_verify(self.insecure_skip_verify);
        }
        let (conn, ldap) = match LdapConnAsync::with_settings(conn_settings, &s.url).await {
            Ok(pair) => pair,
            Err(ldap3::LdapError::Timeout { .. }) => {
                return Err(self.timeout_error(
                    "TLS handshake",
                    format!("no answer within {}", secs(timeout)),
                ));
            }
            Err(e) if self.tls.is_some() => {
                return Err(LdapError::Tls {
                    url: s.url.clone(),
                    detail: describe_tls_failure(&e, &format!("{}:{}", s.host, s.port)),
                    source: Some(Box::new(e)),
                });
            }
            Err(e) => return Err(self.unreachable(e.into())),
        };
        let driver = tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(%error, "LDAP connection ended with an error");
            }
        });
        let mut session = Session {
            ldap,
            gauge,
            driver,
            url: s.url.clone(),
            timeout,
            max_entries: s.max_entries,
        };
        if let Some((dn, password)) = &self.bind {
            session.bind(dn, password).await?;
        }
        Ok(session)
    }

    fn unreachable(&self, source: std::io::Error) -> LdapError {
        LdapError::Unreachable {
            url: self.settings.url.clone(),
            detail: source.to_string(),
            source,
        }
    }

    fn timeout_error(&self, operation: &'static str, detail: String) -> LdapError {
        LdapError::Timeout {
            url: self.settings.url.clone(),
            operation,
            detail,
        }
    }
}

/// An open, bound connection. Dropping it closes the connection, which also
/// ends a search given up half-way.
pub struct Session {
    ldap: Ldap,
    /// The relay's count of what the server sent since the last message taken.
    gauge: Arc<super::relay::Gauge>,
    driver: JoinHandle<()>,
    url: String,
    timeout: Duration,
    /// The most entries one search may return, over all its pages.
    max_entries: u64,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The driver task owns the socket; a session given up mid-search
        // (an error, a cancelled read) must not leave it running.
        self.driver.abort();
    }
}

impl Session {
    async fn bind(&mut self, dn: &str, password: &SecretString) -> Result<(), LdapError> {
        let result = self
            .ldap
            .with_timeout(self.timeout)
            .simple_bind(dn, password.expose())
            .await;
        match result {
            Ok(result) if result.rc == 0 => Ok(()),
            Ok(result) => Err(LdapError::BindFailed {
                dn: dn.to_owned(),
                rc: result.rc,
                text: result.text,
            }),
            Err(ldap3::LdapError::Timeout { .. }) => Err(LdapError::Timeout {
                url: self.url.clone(),
                operation: "bind",
                detail: format!("no answer within {}", secs(self.timeout)),
            }),
            Err(e) => Err(LdapError::Unreachable {
                url: self.url.clone(),
                detail: format!("the connection failed during the bind: {e}"),
                source: e.into(),
            }),
        }
    }

    /// Run a paged search (RFC 2696) and hand each entry to `on_entry` as it
    /// arrives. `Ok` only when the server reported success for the whole
    /// search: a size or time limit, a lost connection or any other error
    /// mid-read is an `Err`, and the entries seen so far must not be taken
    /// for the whole scope.
    ///
    /// The pages are asked for one by one, each with the cookie the last one
    /// ended with, so that a broken or hostile server cannot keep the read
    /// going: a cookie it sent before in this search, at the end of the same
    /// page, is [`LdapError::CookieRepeated`] (the pages go round in a
    /// cycle), and the entries over all pages are bounded by `maxEntries`
    /// ([`LdapError::EntryLimitExceeded`]). The page counts because a cookie
    /// alone may repeat: Samba sends one cookie for every page of a search.
    pub async fn paged_search(
        &mut self,
        search: &SearchRequest<'_>,
        mut on_entry: impl FnMut(RawEntry),
    ) -> Result<(), LdapError> {
        let mut count = EntryCount::default();
        let mut pages = SeenPages::default();
        let mut cookie = Vec::new();
        loop {
            let mut page_digest = Sha256::new();
            let page = ControlSearch {
                base_dn: search.base_dn,
                scope: search.scope.into(),
                filter: search.filter,
                attributes: search.attributes,
                controls: vec![
                    PagedResults {
                        size: search.page_size,
                        cookie: std::mem::take(&mut cookie),
                    }
                    .into(),
                ],
            };
            // Referrals (AD's continuation references to other partitions) are
            // not followed: the scope is what this server holds.
            let adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>> =
                vec![Box::new(EntriesOnly::new())];
            let outcome = self
                .stream(adapters, page, &mut count, |raw| {
                    RawEntry::from_result(raw).map(|entry| {
                        page_digest.update(entry.dn.as_bytes());
                        page_digest.update([0u8]);
                        on_entry(entry)
                    })
                })
                .await?;
            let result = match outcome {
                Err(detail) => return Err(self.malformed(search.base_dn, detail)),
                Ok(result) if result.rc == 0 => result,
                Ok(result) => {
                    return Err(self.result_error(search.base_dn, result.rc, result.text));
                }
            };
            let next = result.ctrls.iter().find_map(|control| match control {
                Control(Some(ControlType::PagedResults), raw) => {
                    Some(raw.parse::<PagedResults>().cookie)
                }
                _ => None,
            });
            match next {
                // The last page; or a server that does not page (the control
                // is not critical) and sent the whole result at once.
                None => return Ok(()),
                Some(next) if next.is_empty() => return Ok(()),
                Some(next) => {
                    page_digest.update(&next);
                    if !pages.first_time(page_digest.finalize().into()) {
                        return Err(LdapError::CookieRepeated {
                            base_dn: search.base_dn.to_owned(),
                            url: self.url.clone(),
                            pages: pages.count() + 1,
                        });
                    }
                    cookie = next;
                }
            }
        }
    }

    /// Run `search` with its request controls, and hand every message
    /// (entries, referrals, intermediate messages, each with its response
    /// controls) to `on_message` as it arrives: what a syncrepl refresh
    /// needs, and a paged search drops.
    ///
    /// The outer `Err` is a timeout or a lost connection. The inner one is
    /// the handler's: it stops the read, and the session must then be
    /// dropped or closed, not reused. Otherwise the server's result, whatever
    /// its code, is the caller's to judge (see [`Self::result_error`]).
    pub async fn search_with_controls<E>(
        &mut self,
        search: ControlSearch<'_>,
        on_message: impl FnMut(ResultEntry) -> Result<(), E>,
    ) -> Result<Result<LdapResult, E>, LdapError> {
        let mut count = EntryCount::default();
        self.stream(Vec::new(), search, &mut count, on_message)
            .await
    }

    /// Run `search`, which the server keeps open to report changes as they
    /// happen (a syncrepl refreshAndPersist search, an Active Directory change
    /// notification), and hand every message to `on_message` as it arrives.
    /// Unlike [`Self::search_with_controls`] it has no time limit and no cap on
    /// the entries over its life: it ends when the server ends it (its result),
    /// the handler stops it (the inner `Err`) or the connection is lost (the
    /// outer `Err`). Waiting costs nothing: the task sleeps on the socket.
    pub async fn persistent_search<E>(
        &mut self,
        search: ControlSearch<'_>,
        on_message: impl FnMut(ResultEntry) -> Result<(), E>,
    ) -> Result<Result<LdapResult, E>, LdapError> {
        let mut count = EntryCount::default();
        let unbounded = Bounds {
            timeout: None,
            max_entries: u64::MAX,
        };
        self.stream_within(unbounded, Vec::new(), search, &mut count, on_message)
            .await
    }

    /// One streaming search through `adapters`, every message handed to
    /// `on_message` until it stops the read (the inner `Err`) or the server's
    /// result arrives. Each entry is checked first: one larger than
    /// [`MAX_ENTRY_BYTES`] is [`LdapError::EntryTooLarge`], and one past the
    /// session's `maxEntries` (counted in `count`, across the pages of a
    /// paged search) is [`LdapError::EntryLimitExceeded`].
    async fn stream<E>(
        &mut self,
        adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>>,
        search: ControlSearch<'_>,
        count: &mut EntryCount,
        on_message: impl FnMut(ResultEntry) -> Result<(), E>,
    ) -> Result<Result<LdapResult, E>, LdapError> {
        let bounds = Bounds {
            timeout: Some(self.timeout),
            max_entries: self.max_entries,
        };
        self.stream_within(bounds, adapters, search, count, on_message)
            .await
    }

    /// [`Self::stream`] with the time limit of each message and the cap on
    /// entries given.
    async fn stream_within<E>(
        &mut self,
        bounds: Bounds,
        adapters: Vec<Box<dyn Adapter<'_, String, Vec<String>>>>,
        search: ControlSearch<'_>,
        count: &mut EntryCount,
        mut on_message: impl FnMut(ResultEntry) -> Result<(), E>,
    ) -> Result<Result<LdapResult, E>, LdapError> {
        let max_entries = bounds.max_entries;
        let base_dn = search.base_dn;
        // What earlier operations received is spent.
        self.gauge.took();
        let ldap = &mut self.ldap;
        if let Some(timeout) = bounds.timeout {
            ldap.with_timeout(timeout);
        }
        if !search.controls.is_empty() {
            ldap.with_controls(search.controls);
        }
        let mut stream = ldap
            .streaming_search_with(
                adapters,
                base_dn,
                search.scope,
                search.filter,
                search.attributes.to_vec(),
            )
            .await
            .map_err(|e| self.search_error(base_dn, e))?;
        loop {
            match stream.next().await {
                Ok(Some(message)) => {
                    if !message.is_ref() && !message.is_intermediate() {
                        count.entries += 1;
                        if count.entries > max_entries {
                            return Err(LdapError::EntryLimitExceeded {
                                base_dn: base_dn.to_owned(),
                                limit: max_entries,
                            });
                        }
                        let size = entry_bytes(&message.0);
                        if size > MAX_ENTRY_BYTES {
                            return Err(LdapError::EntryTooLarge {
                                base_dn: base_dn.to_owned(),
                                size: Some(size),
                                limit: MAX_ENTRY_BYTES,
                            });
                        }
                    }
                    self.gauge.took();
                    if let Err(stop) = on_message(message) {
                        return Ok(Err(stop));
                    }
                }
                Ok(None) => break,
                Err(_) if self.gauge.oversized() => {
                    return Err(LdapError::EntryTooLarge {
                        base_dn: base_dn.to_owned(),
                        size: None,
                        limit: MAX_ENTRY_BYTES,
                    });
                }
                Err(e) => return Err(self.search_error(base_dn, e)),
            }
        }
        Ok(Ok(stream.finish().await))
    }

    /// A base search of the root DSE: proves the server answers searches.
    pub async fn root_dse(&mut self, attributes: &[&str]) -> Result<RawEntry, LdapError> {
        self.gauge.took();
        let result = self
            .ldap
            .with_timeout(self.timeout)
            .search("", Scope::Base, "(objectClass=*)", attributes.to_vec())
            .await
            .map_err(|e| self.search_error("the root DSE", e))?;
        let (entries, result) = (result.0, result.1);
        if result.rc != 0 {
            return Err(self.result_error("the root DSE", result.rc, result.text));
        }
        let entry = entries
            .into_iter()
            .next()
            .ok_or_else(|| LdapError::SearchFailed {
                base_dn: "the root DSE".into(),
                detail: "the server returned no root DSE entry".into(),
                source: None,
            })?;
        RawEntry::from_result(entry).map_err(|detail| self.malformed("the root DSE", detail))
    }

    /// A reply that does not decode as the protocol says: the read cannot be
    /// trusted to be complete.
    fn malformed(&self, base_dn: &str, detail: &str) -> LdapError {
        LdapError::SearchFailed {
            base_dn: base_dn.into(),
            detail: format!("{} sent {detail}", self.url),
            source: None,
        }
    }

    /// Unbind and close, best effort: the work is already done.
    pub async fn close(mut self) {
        let _ = self.ldap.with_timeout(self.timeout).unbind().await;
    }

    fn search_error(&self, base_dn: &str, error: ldap3::LdapError) -> LdapError {
        match error {
            ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
                url: self.url.clone(),
                operation: "search",
                detail: format!(
                    "no answer within {} while reading {base_dn}",
                    secs(self.timeout)
                ),
            },
            ldap3::LdapError::LdapResult { result } => {
                self.result_error(base_dn, result.rc, result.text)
            }
            ldap3::LdapError::FilterParsing => {
                LdapError::InvalidConfig(format!("a search filter for {base_dn} does not parse"))
            }
            other => LdapError::SearchFailed {
                base_dn: base_dn.to_owned(),
                detail: format!("the connection failed mid-read: {other}"),
                source: Some(Box::new(other)),
            },
        }
    }

    /// A search of `base_dn` that ended with result code `rc` (not success).
    pub(super) fn result_error(&self, base_dn: &str, rc: u32, text: String) -> LdapError {
        match rc {
            // sizeLimitExceeded, and adminLimitExceeded: AD's MaxResultSetSize
            // and OpenLDAP's size.pr limits.
            4 | 11 => LdapError::SizeLimitExceeded {
                base_dn: base_dn.to_owned(),
                rc,
                text,
            },
            3 => LdapError::Timeout {
                url: self.url.clone(),
                operation: "search",
                detail: format!(
                    "the server stopped reading {base_dn} at its time limit: {}",
                    describe_result(rc, &text)
                ),
            },
            _ => LdapError::SearchFailed {
                base_dn: base_dn.to_owned(),
                detail: describe_result(rc, &text),
                source: None,
            },
        }
    }
}

/// How long a search may wait for each message, and how many entries it may
/// return over its life.
struct Bounds {
    timeout: Option<Duration>,
    max_entries: u64,
}

/// The entries one search has returned so far, over all its pages.
#[derive(Default)]
struct EntryCount {
    entries: u64,
}

/// The pages one search has read, each as a digest of its entries' DNs and
/// the cookie it ended with: the same page ending in the same cookie again
/// means the pages go round in a cycle.
#[derive(Default)]
struct SeenPages {
    seen: HashSet<[u8; 32]>,
}

impl SeenPages {
    /// Record a page; false when this search read it before.
    fn first_time(&mut self, page: [u8; 32]) -> bool {
        self.seen.insert(page)
    }

    /// Pages read so far that ended with a cookie.
    fn count(&self) -> u64 {
        self.seen.len() as u64
    }
}

/// One search: where, which entries, which attributes, how many per page.
#[derive(Debug, Clone)]
pub struct SearchRequest<'a> {
    pub base_dn: &'a str,
    pub scope: SearchScope,
    pub filter: &'a str,
    pub attributes: &'a [String],
    pub page_size: i32,
}

/// A search with request controls of its own (see
/// [`Session::search_with_controls`]). Unlike a [`SearchRequest`] it is not
/// paged, and may read a base entry.
pub struct ControlSearch<'a> {
    pub base_dn: &'a str,
    pub scope: Scope,
    pub filter: &'a str,
    pub attributes: &'a [String],
    pub controls: Vec<RawControl>,
}

impl From<SearchScope> for Scope {
    fn from(scope: SearchScope) -> Self {
        match scope {
            SearchScope::Subtree => Scope::Subtree,
            SearchScope::OneLevel => Scope::OneLevel,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f32())
}
