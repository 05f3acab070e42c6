//! Idle tracking: the daemon is activated on demand and leaves when nobody needs it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock, so tests can run idle periods with paused time.
use tokio::time::Instant;

/// When the daemon last did something for someone (a call, a job ending), and how many calls
/// are still waiting on someone else (polkit deciding, a password being typed).
#[derive(Clone)]
pub struct Activity(Arc<Inner>);

struct Inner {
    last: Mutex<Instant>,
    waiting: AtomicUsize,
}

/// A call in progress: the daemon does not leave while one exists.
pub struct Held(Activity);

impl Drop for Held {
    fn drop(&mut self) {
        self.0 .0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    pub fn new() -> Activity {
        Activity(Arc::new(Inner {
            last: Mutex::new(Instant::now()),
            waiting: AtomicUsize::new(0),
        }))
    }

    pub fn touch(&self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Keeps the daemon from leaving until the returned value is dropped: an interactive
    /// authorization may take longer than the idle timeout.
    pub fn hold(&self) -> Held {
        self.0.waiting.fetch_add(1, Ordering::SeqCst);
        Held(self.clone())
    }

    pub fn idle_for(&self) -> Duration {
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            return Duration::ZERO;
        }
        self.0
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
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

    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_on_polkit_keeps_the_daemon() {
        let activity = Activity::new();
        let held = activity.hold();
        let waiter = tokio::spawn({
            let activity = activity.clone();
            async move { wait_until_idle(&activity, Duration::from_secs(10), || false).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiter.is_finished(), "left during a pending call");
        drop(held);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !waiter.is_finished(),
            "the idle period restarts when the call ends"
        );
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(waiter.is_finished());
    }
}
