//! Authorization: every call passes one gate that asks polkit about the caller's bus name.
//!
//! Identity comes only from the message header (DESIGN §3 rule 1). Anything that prevents a
//! clear "yes" — an unknown method, an unresolvable caller, polkitd missing, slow or
//! erroring — is a "no".

pub mod table;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use pib_dbus_interfaces::DBusError;
use zbus::fdo::DBusProxy;
use zbus::message::{Flags, Header};
use zbus::names::{BusName, OwnedUniqueName};
use zbus::Connection;
use zbus_polkit::policykit1::{AuthorityProxy, CheckAuthorizationFlags, Subject};

use table::Requirement;

/// Who made an authorized call.
#[derive(Debug, Clone)]
pub struct Caller {
    pub uid: u32,
    pub bus_name: OwnedUniqueName,
}

/// How long a timed-out check waits for polkit to acknowledge its cancellation.
const CANCEL_LIMIT: Duration = Duration::from_secs(2);

pub struct Authorizer {
    dbus: DBusProxy<'static>,
    polkit: AuthorityProxy<'static>,
    timeout: Duration,
    interactive_timeout: Duration,
    next_check: AtomicU64,
    activity: crate::idle::Activity,
}

impl Authorizer {
    pub async fn new(
        conn: &Connection,
        timeout: Duration,
        interactive_timeout: Duration,
        activity: crate::idle::Activity,
    ) -> zbus::Result<Authorizer> {
        Ok(Authorizer {
            dbus: DBusProxy::new(conn).await?,
            polkit: AuthorityProxy::new(conn).await?,
            timeout,
            interactive_timeout,
            next_check: AtomicU64::new(1),
            activity,
        })
    }

    /// The caller's identity, from the bus.
    pub async fn caller(&self, header: &Header<'_>) -> Result<Caller, DBusError> {
        let sender = header
            .sender()
            .ok_or_else(|| DBusError::NotAuthorized("the call has no sender".into()))?;
        let uid = self
            .dbus
            .get_connection_unix_user(BusName::Unique(sender.clone()))
            .await
            .map_err(|e| DBusError::NotAuthorized(format!("cannot identify the caller: {e}")))?;
        Ok(Caller {
            uid,
            bus_name: sender.to_owned().into(),
        })
    }

    /// Authorizes the call in `header` by the central table. `job_owner` is the uid that
    /// started the job the call is about, for job methods. `details` go to polkit (and so to
    /// admins' .rules and the password dialog).
    pub async fn authorize(
        &self,
        header: &Header<'_>,
        job_owner: Option<u32>,
        details: &[(&str, &str)],
    ) -> Result<Caller, DBusError> {
        let (Some(interface), Some(member)) = (header.interface(), header.member()) else {
            return Err(DBusError::NotAuthorized("the call names no method".into()));
        };
        let Some(requirement) = table::requirement(interface.as_str(), member.as_str()) else {
            tracing::error!("no authorization rule for {interface}.{member}; denying");
            return Err(DBusError::NotAuthorized(format!(
                "{interface}.{member} has no authorization rule"
            )));
        };
        let caller = self.caller(header).await?;
        let action = match requirement {
            Requirement::JobOwnerOr(_) if job_owner == Some(caller.uid) => return Ok(caller),
            r => r.action(),
        };
        let interactive = header
            .primary()
            .flags()
            .contains(Flags::ALLOW_INTERACTIVE_AUTH);
        match self.check(header, action, interactive, details).await {
            Ok(()) => {}
            Err(e) => {
                tracing::info!(
                    CALLER_UID = caller.uid,
                    "denied {action} for {interface}.{member}: {}",
                    e.message()
                );
                return Err(e);
            }
        }
        // A caller that left while polkit thought about it gets nothing started on its behalf.
        let still_there = self
            .dbus
            .name_has_owner(BusName::Unique(caller.bus_name.as_ref()))
            .await
            .unwrap_or(false);
        if !still_there {
            return Err(DBusError::NotAuthorized(
                "the caller left the bus before authorization completed".into(),
            ));
        }
        tracing::debug!(
            CALLER_UID = caller.uid,
            "granted {action} for {interface}.{member}"
        );
        Ok(caller)
    }

    /// A further action a call needs beyond its table entry, decided by what it touches (a
    /// non-removable disk needs org.pibuilder.flash-system-device on top of the flash grant).
    pub async fn authorize_extra(
        &self,
        header: &Header<'_>,
        action: &str,
        details: &[(&str, &str)],
    ) -> Result<(), DBusError> {
        let interactive = header
            .primary()
            .flags()
            .contains(Flags::ALLOW_INTERACTIVE_AUTH);
        self.check(header, action, interactive, details).await
    }

    /// Whether the caller of `header` holds `action`, without ever prompting.
    pub async fn holds(&self, header: &Header<'_>, action: &str) -> bool {
        self.check(header, action, false, &[]).await.is_ok()
    }

    async fn check(
        &self,
        header: &Header<'_>,
        action: &str,
        interactive: bool,
        details: &[(&str, &str)],
    ) -> Result<(), DBusError> {
        let subject = Subject::new_for_message_header(header)
            .map_err(|e| DBusError::NotAuthorized(format!("cannot name the caller: {e}")))?;
        let flags = if interactive {
            CheckAuthorizationFlags::ALLOW_USER_INTERACTION
        } else {
            CheckAuthorizationFlags::empty()
        };
        let details: HashMap<&str, &str> = details.iter().copied().collect();
        let cancellation_id = format!(
            "pib-{}-{}",
            std::process::id(),
            self.next_check.fetch_add(1, Ordering::Relaxed)
        );
        let limit = if interactive {
            self.interactive_timeout
        } else {
            self.timeout
        };
        let check =
            self.polkit
                .check_authorization(&subject, action, &details, flags, &cancellation_id);
        let _held = self.activity.hold();
        let result = match tokio::time::timeout(limit, check).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => {
                return Err(DBusError::NotAuthorized(format!(
                    "polkit could not decide on {action}: {e}"
                )))
            }
            Err(_) => {
                // Bounded too: a polkitd that did not answer the check may not answer this.
                let cancel = self.polkit.cancel_check_authorization(&cancellation_id);
                let _ = tokio::time::timeout(CANCEL_LIMIT, cancel).await;
                return Err(DBusError::NotAuthorized(format!(
                    "polkit did not answer about {action} within {} s",
                    limit.as_secs()
                )));
            }
        };
        if result.is_authorized {
            return Ok(());
        }
        let why = if result.details.contains_key("polkit.dismissed") {
            "the authentication dialog was dismissed".to_owned()
        } else if result.is_challenge {
            "authentication is required; allow interactive authorization and run a polkit agent"
                .to_owned()
        } else {
            "not permitted by the system's polkit rules".to_owned()
        };
        Err(DBusError::NotAuthorized(format!("{action}: {why}")))
    }
}
