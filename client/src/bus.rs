//! The connection to the service, and the one way calls are made: with the
//! interactive-authorization flag when the user may be asked for a password, and with a text
//! polkit agent running when that is useful.

use std::collections::HashMap;
use std::io::IsTerminal;

use pib_dbus_interfaces::names::{BUS_NAME, JOB_INTERFACE};
use pib_dbus_interfaces::proxy::{JobProxy, ManagerProxy};
use zbus::fdo::PropertiesProxy;
use zbus::proxy::{CacheProperties, MethodFlags};
use zbus::wire::DynamicDeserialize;
use zbus::{Connection, DynamicType, OwnedVariant, Proxy};

use crate::agent::Agent;
use crate::calls::{self, Attempt};
use crate::errors::ClientError;
use crate::output::Ui;

pub struct Bus {
    conn: Connection,
    interactive: bool,
    /// Held until the client exits, when dropping it stops the agent.
    agent: Option<Agent>,
    agent_tried: bool,
}

impl Bus {
    pub async fn system(ui: &Ui) -> Result<Bus, ClientError> {
        let conn = Connection::system().await.map_err(ClientError::Connect)?;
        Ok(Bus {
            conn,
            interactive: ui.interactive_auth(),
            agent: None,
            agent_tried: false,
        })
    }

    /// Whether calls may make polkit ask for a password.
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    pub async fn manager(&self) -> Result<ManagerProxy<'static>, ClientError> {
        ManagerProxy::builder(&self.conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(ClientError::call(&calls::GET_STATUS))
    }

    /// Properties are read explicitly (see `follow`), so zbus's cache would only cost a call.
    pub async fn job(&self, path: &str) -> Result<JobProxy<'static>, ClientError> {
        JobProxy::builder(&self.conn)
            .path(path.to_owned())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(ClientError::call(&calls::READ_JOB))
    }

    pub async fn properties(&self, path: &str) -> Result<PropertiesProxy<'static>, ClientError> {
        PropertiesProxy::builder(&self.conn)
            .destination(BUS_NAME)
            .path(path.to_owned())
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(ClientError::call(&calls::READ_JOB))
    }

    pub async fn job_properties(
        &self,
        props: &PropertiesProxy<'_>,
    ) -> Result<HashMap<String, OwnedVariant>, ClientError> {
        let iface = JOB_INTERFACE
            .try_into()
            .expect("the job interface name is valid");
        props.get_all(iface).await.map_err(|e| ClientError::Call {
            attempt: &calls::READ_JOB,
            error: e.into(),
        })
    }

    /// Calls `attempt.method` on `proxy`. The generated proxy methods cannot set message flags,
    /// hence the detour through the untyped proxy.
    pub async fn call<B, R>(
        &mut self,
        proxy: &Proxy<'_>,
        attempt: &'static Attempt,
        body: &B,
    ) -> Result<R, ClientError>
    where
        B: serde::Serialize + DynamicType,
        R: for<'d> DynamicDeserialize<'d>,
    {
        let mut flags = MethodFlags::empty();
        if self.interactive {
            flags |= MethodFlags::ALLOW_INTERACTIVE_AUTH;
            if attempt.may_prompt {
                self.ensure_agent().await;
            }
        }
        proxy
            .call_with_flags(attempt.method, flags, body)
            .await
            .map_err(ClientError::call(attempt))?
            .ok_or_else(|| ClientError::call(attempt)(zbus::Error::InvalidReply))
    }

    /// The agent needs a terminal to ask on; a graphical agent, if any, serves the rest.
    async fn ensure_agent(&mut self) {
        if self.agent_tried {
            return;
        }
        self.agent_tried = true;
        if std::io::stdin().is_terminal() {
            self.agent = Agent::start().await;
        }
    }
}
