//! A bounded queue whose consumer can be declared dead from outside.
//!
//! std's sync_channel cannot do that: when a writer thread is stuck in the
//! kernel, the coordinator must be able to drop its backlog and make the
//! reader skip it, without the stuck thread's cooperation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How often a blocked side looks at the stop flag; it bounds cancel latency.
const POLL: Duration = Duration::from_millis(20);

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    cv: Condvar,
    cap: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// The producer will send nothing more.
    closed: bool,
    /// The consumer is gone; pushes fail and the backlog was dropped.
    dead: bool,
}

pub(crate) enum Pushed {
    Ok,
    /// The consumer is gone.
    Dead,
    /// The stop flag was raised while waiting for room.
    Stopped,
}

impl<T> Queue<T> {
    pub(crate) fn new(cap: usize) -> Queue<T> {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(cap),
                closed: false,
                dead: false,
            }),
            cv: Condvar::new(),
            cap,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panicking peer must not take the others down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn push(&self, item: T, stop: &AtomicBool) -> Pushed {
        let mut st = self.lock();
        loop {
            if st.dead {
                return Pushed::Dead;
            }
            if st.items.len() < self.cap {
                st.items.push_back(item);
                self.cv.notify_all();
                return Pushed::Ok;
            }
            if stop.load(Ordering::Relaxed) {
                return Pushed::Stopped;
            }
            st = self
                .cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// None once the producer closed the queue and it is drained, or when
    /// `stop` is raised.
    pub(crate) fn pop(&self, stop: &AtomicBool) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.items.pop_front() {
                self.cv.notify_all();
                return Some(item);
            }
            if st.closed || st.dead || stop.load(Ordering::Relaxed) {
                return None;
            }
            st = self
                .cv
                .wait_timeout(st, POLL)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.cv.notify_all();
    }

    /// Marks the consumer gone and frees whatever it had not taken yet.
    pub(crate) fn kill(&self) {
        let backlog = {
            let mut st = self.lock();
            st.dead = true;
            std::mem::take(&mut st.items)
        };
        self.cv.notify_all();
        drop(backlog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounded_close_kill_stop() {
        let stop = AtomicBool::new(false);
        let q = Arc::new(Queue::new(2));
        assert!(matches!(q.push(1, &stop), Pushed::Ok));
        assert!(matches!(q.push(2, &stop), Pushed::Ok));
        stop.store(true, Ordering::Relaxed);
        assert!(matches!(q.push(3, &stop), Pushed::Stopped));
        stop.store(false, Ordering::Relaxed);
        let q2 = Arc::clone(&q);
        let t = std::thread::spawn(move || {
            let stop = AtomicBool::new(false);
            let mut got = vec![];
            while let Some(x) = q2.pop(&stop) {
                got.push(x);
            }
            got
        });
        assert!(matches!(q.push(3, &stop), Pushed::Ok));
        q.close();
        assert_eq!(t.join().unwrap(), vec![1, 2, 3]);
        q.kill();
        assert!(matches!(q.push(4, &stop), Pushed::Dead));
    }
}
