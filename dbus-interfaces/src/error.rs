//! The one error type at the D-Bus boundary.

use zbus::DBusError as DeriveDBusError;

/// Errors returned by the service, named `org.pibuilder.PiBuilder1.Error.<Variant>`.
///
/// Every variant carries a human-readable message saying what went wrong.
#[derive(Debug, Clone, PartialEq, DeriveDBusError)]
#[zbus(prefix = "org.pibuilder.PiBuilder1.Error")]
pub enum DBusError {
    /// A transport-level error, never sent by the daemon.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// polkit did not grant the action, or could not be asked.
    NotAuthorized(String),
    /// An argument or option is malformed, unknown or out of range.
    InvalidArgs(String),
    /// The named job, image or device does not exist.
    NotFound(String),
    /// Conflicting work is already running.
    Busy(String),
    /// The system is in a state pi-builder will not override.
    Conflict(String),
    /// The host lacks what this needs.
    NotSupported(String),
    /// The Docker engine cannot be reached.
    DockerUnavailable(String),
    /// The job was cancelled.
    Cancelled(String),
    /// The output or the daemon's disk is full, or a requested size cannot hold the content.
    NoSpace(String),
    /// A device is in use: opened exclusively by someone else, or being written by another job.
    DeviceBusy(String),
    /// The device holds the running system or the daemon's state.
    SystemDisk(String),
    /// The device is not something pi-builder writes: a partition, not a block device, read-only, in use by swap, LVM, dm or md, or a loop device the configuration does not allow.
    DeviceRefused(String),
    /// The device is no longer the one that was chosen (it was swapped between selection and write).
    DeviceChanged(String),
    /// The device went away while it was being written.
    DeviceLost(String),
    /// What was read back from the card differs from the image.
    VerifyFailed(String),
    /// Anything else.
    Failed(String),
}

impl DBusError {
    /// The short name of the error (the last component of its D-Bus name).
    pub fn short_name(&self) -> &'static str {
        match self {
            DBusError::ZBus(_) => "ZBus",
            DBusError::NotAuthorized(_) => "NotAuthorized",
            DBusError::InvalidArgs(_) => "InvalidArgs",
            DBusError::NotFound(_) => "NotFound",
            DBusError::Busy(_) => "Busy",
            DBusError::Conflict(_) => "Conflict",
            DBusError::NotSupported(_) => "NotSupported",
            DBusError::DockerUnavailable(_) => "DockerUnavailable",
            DBusError::Cancelled(_) => "Cancelled",
            DBusError::NoSpace(_) => "NoSpace",
            DBusError::DeviceBusy(_) => "DeviceBusy",
            DBusError::SystemDisk(_) => "SystemDisk",
            DBusError::DeviceRefused(_) => "DeviceRefused",
            DBusError::DeviceChanged(_) => "DeviceChanged",
            DBusError::DeviceLost(_) => "DeviceLost",
            DBusError::VerifyFailed(_) => "VerifyFailed",
            DBusError::Failed(_) => "Failed",
        }
    }

    /// The full D-Bus error name, e.g. `org.pibuilder.PiBuilder1.Error.NotAuthorized`; for a
    /// transport error, the name the bus or peer replied with (e.g.
    /// `org.freedesktop.DBus.Error.ServiceUnknown`), when there is one.
    pub fn dbus_name(&self) -> String {
        match self {
            DBusError::ZBus(zbus::Error::MethodError(name, _, _)) => name.to_string(),
            DBusError::ZBus(zbus::Error::FDO(e)) => zbus::DBusError::name(&**e).to_string(),
            _ => format!("{}.{}", crate::names::ERROR_PREFIX, self.short_name()),
        }
    }

    /// The message carried by the error.
    pub fn message(&self) -> String {
        match self {
            DBusError::ZBus(e) => e.to_string(),
            DBusError::NotAuthorized(m)
            | DBusError::InvalidArgs(m)
            | DBusError::NotFound(m)
            | DBusError::Busy(m)
            | DBusError::Conflict(m)
            | DBusError::NotSupported(m)
            | DBusError::DockerUnavailable(m)
            | DBusError::Cancelled(m)
            | DBusError::NoSpace(m)
            | DBusError::DeviceBusy(m)
            | DBusError::SystemDisk(m)
            | DBusError::DeviceRefused(m)
            | DBusError::DeviceChanged(m)
            | DBusError::DeviceLost(m)
            | DBusError::VerifyFailed(m)
            | DBusError::Failed(m) => m.clone(),
        }
    }

    /// Rebuilds an error from its D-Bus name and message (e.g. a job's ErrorName and Message).
    /// Names outside the service's namespace become `Failed`.
    pub fn from_name(name: &str, message: String) -> DBusError {
        let short = name
            .strip_prefix(crate::names::ERROR_PREFIX)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or("");
        match short {
            "NotAuthorized" => DBusError::NotAuthorized(message),
            "InvalidArgs" => DBusError::InvalidArgs(message),
            "NotFound" => DBusError::NotFound(message),
            "Busy" => DBusError::Busy(message),
            "Conflict" => DBusError::Conflict(message),
            "NotSupported" => DBusError::NotSupported(message),
            "DockerUnavailable" => DBusError::DockerUnavailable(message),
            "Cancelled" => DBusError::Cancelled(message),
            "NoSpace" => DBusError::NoSpace(message),
            "DeviceBusy" => DBusError::DeviceBusy(message),
            "SystemDisk" => DBusError::SystemDisk(message),
            "DeviceRefused" => DBusError::DeviceRefused(message),
            "DeviceChanged" => DBusError::DeviceChanged(message),
            "DeviceLost" => DBusError::DeviceLost(message),
            "VerifyFailed" => DBusError::VerifyFailed(message),
            _ => DBusError::Failed(message),
        }
    }
}

impl From<zbus::fdo::Error> for DBusError {
    fn from(e: zbus::fdo::Error) -> Self {
        DBusError::ZBus(zbus::Error::FDO(Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let all = [
            DBusError::NotAuthorized("m".into()),
            DBusError::InvalidArgs("m".into()),
            DBusError::NotFound("m".into()),
            DBusError::Busy("m".into()),
            DBusError::Conflict("m".into()),
            DBusError::NotSupported("m".into()),
            DBusError::DockerUnavailable("m".into()),
            DBusError::Cancelled("m".into()),
            DBusError::NoSpace("m".into()),
            DBusError::DeviceBusy("m".into()),
            DBusError::SystemDisk("m".into()),
            DBusError::DeviceRefused("m".into()),
            DBusError::DeviceChanged("m".into()),
            DBusError::DeviceLost("m".into()),
            DBusError::VerifyFailed("m".into()),
            DBusError::Failed("m".into()),
        ];
        for e in all {
            let name = e.dbus_name();
            assert!(name.starts_with("org.pibuilder.PiBuilder1.Error."));
            assert_eq!(DBusError::from_name(&name, "m".into()), e);
            assert_eq!(zbus::DBusError::name(&e).as_str(), name);
        }
        assert_eq!(
            DBusError::from_name("org.example.Other", "x".into()),
            DBusError::Failed("x".into())
        );
        let unknown = DBusError::from(zbus::fdo::Error::ServiceUnknown("gone".into()));
        assert_eq!(
            unknown.dbus_name(),
            "org.freedesktop.DBus.Error.ServiceUnknown"
        );
    }
}
