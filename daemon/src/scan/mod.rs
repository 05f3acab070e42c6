//! `Scan`: finding Raspberry Pi boards on the local IPv4 networks, as the original pi-builder's
//! `make scan` did with arp-scan, by the MAC prefixes Raspberry Pi's boards carry.
//!
//! The pipeline: pick the interfaces and their subnets (`interfaces`, `subnet`, bounded),
//! sweep each interface with ARP requests on a packet socket (`arp`, `socket`, `sweep`), keep
//! the answers with a Raspberry Pi prefix (`oui`), look their names up (`names`).

mod arp;
mod interfaces;
mod mac;
mod names;
pub mod oui;
pub mod request;
mod run;
mod socket;
mod subnet;
mod sweep;

pub use run::run;
