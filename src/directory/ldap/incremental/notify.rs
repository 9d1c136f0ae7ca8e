//! Active Directory's change notifications (the LDAP_SERVER_NOTIFICATION_OID
//! control, 1.2.840.113556.1.4.528): a search the DC keeps open, answered with
//! each object of its scope as it changes, and never with the objects as they
//! are. Samba AD DCs answer it too. The filter must be `(objectClass=*)`: the
//! DC refuses any other one as too complex.

use ldap3::controls::RawControl;
use ldap3::{ResultEntry, Scope};

use crate::directory::ldap::connection::Session;
use crate::directory::ldap::error::{LdapError, describe_result};
use crate::directory::ldap::incremental::push::{PushEnd, PushEvent, push_search};

const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";
/// unavailableCriticalExtension: a server that has no change notifications.
const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
/// unwillingToPerform: a DC that will not notify on this search.
const UNWILLING_TO_PERFORM: u32 = 53;

/// Listen for changes below `base_dn` within `scope`, telling `on_event` once
/// the DC took the search and of every change after. Returns when the DC ends
/// the search.
pub(in crate::directory::ldap::incremental) async fn notifications(
    session: &mut Session,
    base_dn: &str,
    scope: Scope,
    mut on_event: impl FnMut(PushEvent),
) -> Result<PushEnd, LdapError> {
    // Critical: a server without notifications must refuse the search rather
    // than answer it as a plain search of the whole scope.
    let control = RawControl {
        ctype: NOTIFICATION_OID.to_owned(),
        crit: true,
        val: None,
    };
    // The DC does not acknowledge the search: it is listening unless it
    // refuses the search at once.
    on_event(PushEvent::Listening);
    let result = push_search(session, base_dn, scope, control, |message: ResultEntry| {
        if !message.is_ref() && !message.is_intermediate() {
            on_event(PushEvent::Changed);
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .await?;
    let Ok(result) = result;
    Ok(match result.rc {
        UNAVAILABLE_CRITICAL_EXTENSION | UNWILLING_TO_PERFORM => PushEnd::NotSupported(format!(
            "the domain controller refused a change notification search of {base_dn} ({})",
            describe_result(result.rc, &result.text)
        )),
        0 => PushEnd::RefreshRequired,
        rc => return Err(session.result_error(base_dn, rc, result.text)),
    })
}
