//! A connection for a search that carries request controls of its own and
//! needs the response controls of every message: the syncrepl refresh
//! (RFC 4533), whose Sync State controls and Sync Info messages the paged
//! reader of [`connection`](super::super::connection) drops.
//!
//! The caller has already opened an ordinary session to the same server, so
//! connect, TLS and bind failures have been reported the usual way by then;
//! this connection reuses the same checked settings and TLS configuration.

use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, ResultEntry, Scope};
use rustls::ClientConfig;
use tokio::task::JoinHandle;

use super::super::error::{LdapError, describe_result};
use super::super::settings::{LdapSettings, Transport, ValidSettings};
use super::super::tls::{client_config, describe_tls_failure};
use crate::secret::SecretString;

/// What is needed to open control sessions to one directory, checked once.
pub(super) struct ControlLink {
    url: String,
    transport: Transport,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
    insecure_skip_verify: bool,
    bind: Option<(String, SecretString)>,
}

/// An open, bound connection. Dropping it closes the connection, which also
/// ends a search given up half-way.
pub(super) struct ControlSession {
    ldap: Ldap,
    driver: JoinHandle<()>,
    url: String,
    timeout: Duration,
}

/// One search of a control session.
pub(super) struct ControlSearch<'a> {
    pub base_dn: &'a str,
    pub scope: Scope,
    pub filter: &'a str,
    pub attributes: &'a [String],
    pub controls: Vec<RawControl>,
}

impl ControlLink {
    pub fn new(settings: &LdapSettings, valid: &ValidSettings) -> Result<Self, LdapError> {
        let tls = match valid.transport {
            Transport::Plain => None,
            Transport::StartTls | Transport::Ldaps => Some(client_config(
                settings.ca_pem.as_deref(),
                settings.insecure_skip_verify,
            )?),
        };
        Ok(Self {
            url: valid.url.clone(),
            transport: valid.transport,
            timeout: valid.timeout,
            tls,
            insecure_skip_verify: settings.insecure_skip_verify,
            bind: settings.bind.clone(),
        })
    }

    /// Connect, secure and bind.
    pub async fn open(&self) -> Result<ControlSession, LdapError> {
        let mut conn_settings = LdapConnSettings::new().set_conn_timeout(self.timeout);
        if let Some(tls) = &self.tls {
            conn_settings = conn_settings
                .set_config(tls.clone())
                .set_starttls(self.transport == Transport::StartTls)
                .set_no_tls_verify(self.insecure_skip_verify);
        }
        let (conn, ldap) = match LdapConnAsync::with_settings(conn_settings, &self.url).await {
            Ok(pair) => pair,
            Err(ldap3::LdapError::Timeout { .. }) => {
                return Err(self.timeout_error("connect"));
            }
            Err(e) if self.tls.is_some() => {
                return Err(LdapError::Tls {
                    url: self.url.clone(),
                    detail: describe_tls_failure(&e),
                    source: Some(Box::new(e)),
                });
            }
            Err(e) => {
                return Err(LdapError::Unreachable {
                    url: self.url.clone(),
                    detail: e.to_string(),
                    source: e.into(),
                });
            }
        };
        let driver = tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(%error, "LDAP connection ended with an error");
            }
        });
        let mut session = ControlSession {
            ldap,
            driver,
            url: self.url.clone(),
            timeout: self.timeout,
        };
        if let Some((dn, password)) = &self.bind {
            let result = session
                .ldap
                .with_timeout(self.timeout)
                .simple_bind(dn, password.expose())
                .await;
            match result {
                Ok(result) if result.rc == 0 => {}
                Ok(result) => {
                    return Err(LdapError::BindFailed {
                        dn: dn.clone(),
                        rc: result.rc,
                        text: result.text,
                    });
                }
                Err(ldap3::LdapError::Timeout { .. }) => return Err(self.timeout_error("bind")),
                Err(e) => {
                    return Err(LdapError::Unreachable {
                        url: self.url.clone(),
                        detail: format!("the connection failed during the bind: {e}"),
                        source: e.into(),
                    });
                }
            }
        }
        Ok(session)
    }

    fn timeout_error(&self, operation: &'static str) -> LdapError {
        LdapError::Timeout {
            url: self.url.clone(),
            operation,
            detail: format!("no answer within {}s", self.timeout.as_secs_f32()),
        }
    }
}

impl Drop for ControlSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ControlSession {
    /// Run `search` and hand every message (entries, referrals, intermediate
    /// messages, each with its controls) to `on_message` as it arrives.
    ///
    /// The outer `Err` is a timeout or a lost connection. The inner one is
    /// the handler's: it stops the read, and the session must then be
    /// dropped, not reused. Otherwise the server's result, whatever its code,
    /// is the caller's to judge.
    pub async fn search<E>(
        &mut self,
        search: ControlSearch<'_>,
        mut on_message: impl FnMut(ResultEntry) -> Result<(), E>,
    ) -> Result<Result<LdapResult, E>, LdapError> {
        let mut stream = self
            .ldap
            .with_timeout(self.timeout)
            .with_controls(search.controls)
            .streaming_search(
                search.base_dn,
                search.scope,
                search.filter,
                search.attributes.to_vec(),
            )
            .await
            .map_err(|e| self.search_error(search.base_dn, e))?;
        loop {
            match stream.next().await {
                Ok(Some(message)) => {
                    if let Err(stop) = on_message(message) {
                        return Ok(Err(stop));
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(self.search_error(search.base_dn, e)),
            }
        }
        Ok(Ok(stream.finish().await))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Unbind and close, best effort.
    pub async fn close(mut self) {
        let _ = self.ldap.with_timeout(self.timeout).unbind().await;
    }

    fn search_error(&self, base_dn: &str, error: ldap3::LdapError) -> LdapError {
        match error {
            ldap3::LdapError::Timeout { .. } => LdapError::Timeout {
                url: self.url.clone(),
                operation: "search",
                detail: format!(
                    "no answer within {}s while reading {base_dn}",
                    self.timeout.as_secs_f32()
                ),
            },
            ldap3::LdapError::LdapResult { result } => LdapError::SearchFailed {
                base_dn: base_dn.to_owned(),
                detail: describe_result(result.rc, &result.text),
                source: None,
            },
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
}
