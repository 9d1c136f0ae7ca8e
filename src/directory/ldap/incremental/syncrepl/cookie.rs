//! OpenLDAP's sync cookies: which ones slapd can continue from, and whether
//! a change is newer than a cookie.

/// The parts of an OpenLDAP cookie (`rid=000,sid=001,csn=<csn>;<csn>`) that
/// say how far it reaches: one CSN per provider (server ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OpenLdapCookie {
    csns: Vec<String>,
}

impl OpenLdapCookie {
    /// `None` unless the cookie has a replica ID and at least one well-formed
    /// CSN, which is what slapd needs to continue from it.
    pub fn parse(cookie: &str) -> Option<Self> {
        let mut rid = false;
        let mut csns = Vec::new();
        for field in cookie.split(',') {
            let (key, value) = field.split_once('=')?;
            match key {
                "rid" => {
                    rid = !value.is_empty()
                        && value.len() <= 3
                        && value.bytes().all(|b| b.is_ascii_digit());
                }
                "csn" => {
                    for csn in value.split(';') {
                        csn_sid(csn)?;
                        csns.push(csn.to_owned());
                    }
                }
                _ => {}
            }
        }
        (rid && !csns.is_empty()).then_some(Self { csns })
    }

    /// Whether the cookie is older than a change with CSN `entry_csn`, that
    /// is, whether a refresh from it may send that entry. A CSN of a provider
    /// the cookie does not know, or that cannot be read, may be sent.
    pub fn precedes(&self, entry_csn: &str) -> bool {
        let Some(sid) = csn_sid(entry_csn) else {
            return true;
        };
        // CSNs of one provider have a fixed width: text order is time order.
        self.csns
            .iter()
            .filter(|c| csn_sid(c) == Some(sid))
            .all(|c| entry_csn > c.as_str())
    }
}

/// The server ID of a CSN (`20250601120000.000000Z#000000#001#000000`), or
/// `None` when it is not one.
fn csn_sid(csn: &str) -> Option<&str> {
    let mut parts = csn.split('#');
    let (time, count, sid, modifier) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let time_ok = time.len() == 22
        && time.bytes().enumerate().all(|(i, b)| match i {
            14 => b == b'.',
            21 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    (parts.next().is_none() && time_ok && hex(count, 6) && hex(sid, 3) && hex(modifier, 6))
        .then_some(sid)
}

#[cfg(test)]
mod tests {
    use super::super::COOKIE;
    use super::*;

    #[test]
    fn openldap_cookie_needs_a_replica_id_and_csns() {
        assert!(OpenLdapCookie::parse(COOKIE).is_some());
        assert!(
            OpenLdapCookie::parse(
                "rid=001,sid=002,csn=20250101000000.000000Z#000000#001#000000;20250101000000.000000Z#000000#002#000000"
            )
            .is_some()
        );
        for bad in [
            "",
            "garbage",
            "csn=20261123152306.390105Z#000000#000#000000",
            "rid=000",
            "rid=000,csn=xyz",
            "rid=abc,csn=20261123152306.390105Z#000000#000#000000",
            "rid=000,csn=20261123152306.390105Z#000000#000",
        ] {
            assert!(OpenLdapCookie::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn cookie_precedes_only_later_changes_of_the_same_provider() {
        let cookie = OpenLdapCookie::parse(COOKIE).unwrap();
        assert!(cookie.precedes("20261123152306.390106Z#000000#000#000000"));
        assert!(!cookie.precedes("20261123152306.390105Z#000000#000#000000"));
        assert!(!cookie.precedes("20200101000000.000000Z#000000#000#000000"));
        // Another provider's change, or an unreadable CSN: cannot tell.
        assert!(cookie.precedes("20200101000000.000000Z#000000#001#000000"));
        assert!(cookie.precedes("garbage"));
    }
}
