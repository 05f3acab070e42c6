//! The pi-builder D-Bus contract, shared by the daemon, the client and the tests.
//!
//! The introspection XML under `xml/` is the authority; this crate gives it Rust names:
//! constants for bus names, paths and polkit actions, the error enum, the option and status
//! vocabulary, and `#[proxy]` traits for clients.

pub mod actions;
pub mod error;
pub mod names;
pub mod proxy;
pub mod stage;
pub mod types;

pub use error::DBusError;

/// The introspection XML of `org.pibuilder.PiBuilder1.Manager`.
pub const MANAGER_XML: &str = include_str!("../xml/org.pibuilder.PiBuilder1.Manager.xml");
/// The introspection XML of `org.pibuilder.PiBuilder1.Job`.
pub const JOB_XML: &str = include_str!("../xml/org.pibuilder.PiBuilder1.Job.xml");
