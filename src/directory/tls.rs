//! A failed certificate check, found in an error chain and put in words.
//!
//! An unknown issuer, a certificate for another name or an expired one does
//! not get better by asking again: the sources report it at once, as its own
//! failure (`TLSError`), naming the host and what the admin can change,
//! instead of retrying it until a timeout hides the cause.

use std::error::Error;

/// Why the server's certificate was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateProblem {
    /// Not signed by a CA the connector trusts (a private CA, most often).
    UnknownIssuer,
    /// It does not name the host the connector was told to reach.
    NameMismatch,
    /// It has expired, or is not valid yet (a wrong clock on either side).
    Expired,
    NotYetValid,
    /// Anything else rustls refused, in its words.
    Other(String),
}

/// The certificate check that failed somewhere in `error`'s chain, if one did.
///
/// rustls errors reach us wrapped in `std::io::Error`s (one in another, with
/// hyper), whose `source()` skips the error they wrap, so each I/O error is
/// looked into as well.
pub fn certificate_problem(error: &(dyn Error + 'static)) -> Option<CertificateProblem> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(cert)) = wrapped_rustls_error(e) {
            return Some(CertificateProblem::from(cert));
        }
        next = e.source();
    }
    None
}

/// The rustls error `e` is, or that the I/O errors it is wrap.
fn wrapped_rustls_error<'a>(mut e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    loop {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
        e = inner;
    }
}

impl From<&rustls::CertificateError> for CertificateProblem {
    fn from(error: &rustls::CertificateError) -> Self {
        use rustls::CertificateError as E;
        match error {
            E::UnknownIssuer | E::BadSignature => CertificateProblem::UnknownIssuer,
            E::NotValidForName | E::NotValidForNameContext { .. } => {
                CertificateProblem::NameMismatch
            }
            E::Expired | E::ExpiredContext { .. } => CertificateProblem::Expired,
            E::NotValidYet | E::NotValidYetContext { .. } => CertificateProblem::NotYetValid,
            other => CertificateProblem::Other(format!("{other:?}")),
        }
    }
}

impl CertificateProblem {
    /// What went wrong with `host`'s certificate, then what to do about it;
    /// `ca_field` is the setting that names a CA to trust, e.g.
    /// `spec.ldap.caSecretRef`.
    pub fn describe(&self, host: &str, ca_field: &str) -> String {
        match self {
            CertificateProblem::UnknownIssuer => format!(
                "the certificate of {host} is not signed by a CA this connector trusts (UnknownIssuer); \
                 if the server's certificate comes from a private CA, set {ca_field} to a Secret holding that CA's certificate"
            ),
            CertificateProblem::NameMismatch => format!(
                "the certificate of {host} does not name {host} (NotValidForName); \
                 use a host name the certificate names, or have it reissued for {host}"
            ),
            CertificateProblem::Expired => format!(
                "the certificate of {host} has expired (Expired); have the server's certificate renewed"
            ),
            CertificateProblem::NotYetValid => format!(
                "the certificate of {host} is not valid yet (NotValidYet); check the clocks of the server and of this cluster"
            ),
            CertificateProblem::Other(what) => format!(
                "the certificate of {host} was refused ({what}); \
                 if it comes from a private CA, set {ca_field} to a Secret holding that CA's certificate"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::CertificateError;

    #[test]
    fn a_certificate_error_is_found_inside_io_errors() {
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::other(rustls_error);
        #[derive(Debug, thiserror::Error)]
        #[error("connecting failed")]
        struct Outer(#[source] std::io::Error);
        let outer = Outer(wrapped);
        assert_eq!(
            certificate_problem(&outer),
            Some(CertificateProblem::UnknownIssuer)
        );
        let twice = std::io::Error::other(std::io::Error::other(
            rustls::Error::InvalidCertificate(CertificateError::Expired),
        ));
        assert_eq!(
            certificate_problem(&Outer(twice)),
            Some(CertificateProblem::Expired)
        );
        let plain = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(certificate_problem(&Outer(plain)), None);
        let handshake = std::io::Error::other(rustls::Error::HandshakeNotComplete);
        assert_eq!(certificate_problem(&handshake), None);
    }

    #[test]
    fn each_problem_names_the_host_the_cause_and_what_to_change() {
        let field = "spec.entraID.caSecretRef";
        let cases = [
            (
                CertificateError::UnknownIssuer,
                "UnknownIssuer",
                Some(field),
            ),
            (CertificateError::NotValidForName, "NotValidForName", None),
            (CertificateError::Expired, "Expired", None),
            (CertificateError::NotValidYet, "NotValidYet", None),
        ];
        for (error, cause, hint) in cases {
            let text = CertificateProblem::from(&error).describe("graph.example:443", field);
            assert!(
                text.starts_with("the certificate of graph.example:443"),
                "{text}"
            );
            assert!(text.contains(cause), "{text}");
            assert_eq!(text.contains(field), hint.is_some(), "{text}");
            assert!(!text.contains("insecureSkipVerify"), "{text}");
        }
    }
}
