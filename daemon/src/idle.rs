//! Idle tracking: the daemon is activated on demand and leaves when nobody needs it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so tests can run idle periods with paused time.
use tokio::time::Instant;

/// When the daemon last did something for someone (a call, a job ending).
#[derive(Clone)]
pub struct Activity(Arc<Mutex<Instant>>);

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(Mutex::new(Instant::now())))
    }

    pub fn touch(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn idle_for(&self) -> Duration {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).elapsed()
    }
}

/// Resolves once there was no activity for `timeout` while `busy` reported nothing running.
pub async fn wait_until_idle(activity: &Activity, timeout: Duration, busy: impl Fn() -> bool) {
    let tick = (timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        if busy() {
            continue;
        }
        if activity.idle_for() >= timeout {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_for_quiet_and_no_work() {
        let activity = Activity::new();
        let busy = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let b = busy.clone();
        let waiter = tokio::spawn({
            let activity = activity.clone();
            async move {
                wait_until_idle(&activity, Duration::from_secs(10), move || {
                    b.load(std::sync::atomic::Ordering::SeqCst)
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!waiter.is_finished(), "must not exit while work runs");
        busy.store(false, std::sync::atomic::Ordering::SeqCst);
        activity.touch();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "must wait the full timeout after activity"
        );
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(waiter.is_finished());
    }
}
