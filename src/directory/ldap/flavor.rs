//! Directory flavors: what differs between Active Directory, OpenLDAP and other
//! LDAP servers — the anchor, the disabled signal, the user filter and the
//! usual attribute names. Every preset only fills what the admin left unset.

/// Which kind of LDAP server a connector talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// Microsoft Active Directory (or Samba AD): anchor `objectGUID`; disabled by
    /// `userAccountControl` or an `accountExpires` in the past.
    ActiveDirectory,
    /// OpenLDAP: anchor `entryUUID`; disabled when the ppolicy overlay has locked
    /// the account (`pwdAccountLockedTime`).
    OpenLdap,
    /// Any other server: the anchor and the disabled filter come from the settings.
    Generic,
}

impl Flavor {
    /// The anchor attribute when the settings name none.
    pub fn default_anchor_attribute(self) -> Option<&'static str> {
        match self {
            Flavor::ActiveDirectory => Some("objectGUID"),
            Flavor::OpenLdap => Some("entryUUID"),
            Flavor::Generic => None,
        }
    }

    /// The filter, evaluated by the server, that marks disabled accounts when
    /// the settings name none. Active Directory needs none: its signal is
    /// decided from `userAccountControl` and `accountExpires`.
    pub fn default_disabled_filter(self) -> Option<&'static str> {
        match self {
            Flavor::OpenLdap => Some("(pwdAccountLockedTime=*)"),
            Flavor::ActiveDirectory | Flavor::Generic => None,
        }
    }

    /// The filter every scope of this flavor is narrowed to: user objects only.
    pub fn user_filter(self) -> Option<&'static str> {
        match self {
            // objectCategory=person excludes computer accounts, which are
            // objectClass=user too.
            Flavor::ActiveDirectory => Some("(&(objectCategory=person)(objectClass=user))"),
            Flavor::OpenLdap => Some("(objectClass=inetOrgPerson)"),
            Flavor::Generic => None,
        }
    }

    /// Whether the disabled signal includes Active Directory's account control
    /// attributes (see [`super::account::ad_account_disabled`]).
    pub fn reads_account_control(self) -> bool {
        self == Flavor::ActiveDirectory
    }

    /// The attribute(s) a user field is read from when the mapping names none,
    /// in order of preference: the first one the entry has wins.
    pub fn default_attributes(self, field: UserField) -> &'static [&'static str] {
        match (self, field) {
            (Flavor::ActiveDirectory, UserField::Username) => &["sAMAccountName"],
            (Flavor::ActiveDirectory, UserField::Email) => &["mail"],
            (Flavor::ActiveDirectory, UserField::DisplayName) => &["displayName"],
            (Flavor::ActiveDirectory, UserField::UserPrincipalName) => &["userPrincipalName"],
            // OpenLDAP and other servers: the inetOrgPerson names (RFC 2798).
            (_, UserField::Username) => &["uid"],
            (_, UserField::Email) => &["mail"],
            (_, UserField::DisplayName) => &["displayName", "cn"],
            (_, UserField::UserPrincipalName) => &[],
        }
    }
}

/// The user fields a mapping's `attributes` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserField {
    Username,
    Email,
    DisplayName,
    UserPrincipalName,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_flavor_has_its_anchor_preset() {
        assert_eq!(
            Flavor::ActiveDirectory.default_anchor_attribute(),
            Some("objectGUID")
        );
        assert_eq!(
            Flavor::OpenLdap.default_anchor_attribute(),
            Some("entryUUID")
        );
        assert_eq!(Flavor::Generic.default_anchor_attribute(), None);
    }

    #[test]
    fn openldap_display_name_falls_back_to_cn() {
        assert_eq!(
            Flavor::OpenLdap.default_attributes(UserField::DisplayName),
            ["displayName", "cn"]
        );
        assert!(
            Flavor::OpenLdap
                .default_attributes(UserField::UserPrincipalName)
                .is_empty()
        );
    }
}
