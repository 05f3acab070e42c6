//! Devices being written right now, so a second job for the same card is refused at once
//! with DeviceBusy instead of waiting on the kernel's exclusive open.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct BusyDevices(Arc<Mutex<HashSet<(u32, u32)>>>);

/// Held while a device is written; dropping it frees the device.
pub struct Claim {
    set: BusyDevices,
    dev: (u32, u32),
}

impl BusyDevices {
    /// Claims `dev`, or None when another job has it.
    pub fn claim(&self, dev: (u32, u32)) -> Option<Claim> {
        let fresh = self.0.lock().expect("busy set").insert(dev);
        fresh.then(|| Claim {
            set: self.clone(),
            dev,
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.0.lock().expect("busy set").remove(&self.dev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_device() {
        let busy = BusyDevices::default();
        let a = busy.claim((7, 1)).unwrap();
        assert!(busy.claim((7, 1)).is_none());
        assert!(busy.claim((7, 2)).is_some());
        drop(a);
        assert!(busy.claim((7, 1)).is_some());
    }
}
