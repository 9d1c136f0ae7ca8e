//! What every HTTP client of the program shares: TLS roots (the system's and an
//! admin's CA bundle), the reading of `Retry-After`, jitter for back-off, and
//! an error put in words with its causes, a server's message cut to its first line.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

/// The system's trusted roots, loaded once per process.
static SYSTEM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let loaded = rustls_native_certs::load_native_certs();
    for error in &loaded.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    loaded.certs
});

/// TLS with the ring provider (as the rest of the program), trusting the
/// system roots and the admin's CA bundle. The error says what is wrong with
/// the bundle; the caller names the setting it came from.
pub(crate) fn tls_config(ca_pem: Option<&[u8]>) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(SYSTEM_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the CA bundle is not valid PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA bundle holds an unusable certificate: {e}"))?;
            added += 1;
        }
        if added == 0 {
            return Err(
                "the CA bundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            );
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The longest `Retry-After` taken as it is (a day): past it, the value is
/// nonsense, but still longer than any budget, so the request fails at once.
pub(crate) const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(86_400);

/// `Retry-After` as a wait from `now`: seconds, whole or fractional (Graph
/// documents `Retry-After: 2.128`), or an HTTP-date (RFC 9110; a date past is
/// no wait). `None` when absent or unreadable: then the caller's backoff.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = value.parse().ok()?;
        return Some(
            Duration::try_from_secs_f64(seconds)
                .map_or(LONGEST_RETRY_AFTER, |d| d.min(LONGEST_RETRY_AFTER)),
        );
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let at = SystemTime::from(date);
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(LONGEST_RETRY_AFTER),
    )
}

/// A random duration between zero and `most`.
pub(crate) fn jitter(most: Duration) -> Duration {
    let mut b = [0u8; 4];
    let fraction = match SystemRandom::new().fill(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX),
        Err(_) => 0.5,
    };
    most.mul_f64(fraction)
}

/// An error and its sources, joined: reqwest's own text alone rarely says
/// what went wrong (a refused connection, an unknown CA).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text += ": ";
            text += &next;
        }
        source = e.source();
    }
    text
}

/// The first line of a server's message, at most `max` bytes (cut on a
/// character boundary, with an ellipsis): further lines carry trace IDs and
/// stack traces, not the cause.
pub(crate) fn first_line(message: &str, max: usize) -> String {
    let line = message.lines().next().unwrap_or_default().trim();
    if line.len() <= max {
        return line.to_owned();
    }
    let mut end = max;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds_fractional_seconds_and_http_dates() {
        let now = SystemTime::from(jiff::Timestamp::from_second(1_445_412_470).unwrap());
        let read = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, value.parse().unwrap());
            retry_after(&headers, now)
        };
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
        assert_eq!(read("7"), Some(Duration::from_secs(7)));
        assert_eq!(read("2.128"), Some(Duration::from_millis(2128)));
        assert_eq!(read(" 0.5 "), Some(Duration::from_millis(500)));
        // 2015-10-21 07:28:00 UTC is 10 s after `now`.
        assert_eq!(
            read("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(read("Wed, 21 Oct 2015 07:27:00 GMT"), Some(Duration::ZERO));
        assert_eq!(read("99999999999999999999"), Some(LONGEST_RETRY_AFTER));
        assert_eq!(read("soon"), None);
        assert_eq!(read("1.2.3"), None);
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_refused() {
        for pem in [&b""[..], b"not pem"] {
            assert!(matches!(tls_config(Some(pem)), Err(m) if m.contains("CA bundle")));
        }
        assert!(tls_config(None).is_ok());
    }
}
