//! Wakes connection tasks from the loop thread in batches.
//!
//! The loop thread wakes a connection's task whenever the app sends or
//! ends. A tokio task woken from outside tokio's thread costs a write to
//! tokio's eventfd, a system call, and in a busy worker the loop ends dozens
//! of responses in one turn: one system call a request, a tenth of an ASGI
//! hello's cost. So the loop thread leaves the wakers here and wakes one
//! relay task, once for all that arrive before it runs; the relay wakes
//! them on tokio's thread, where a wake-up is a push on the run queue.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

thread_local! {
    /// Set on the thread that runs the ASGI loop.
    static ON_LOOP_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Marks the calling thread as the loop's: its wake-ups go through the
/// relay.
pub(super) fn mark_loop_thread() {
    ON_LOOP_THREAD.set(true);
}

#[derive(Default)]
pub(super) struct WakeRelay {
    /// A relay task was spawned and has not been dropped.
    spawned: AtomicBool,
    state: Mutex<RelayState>,
}

#[derive(Default)]
struct RelayState {
    /// The relay task's waker, once it has run: until then, and once it is
    /// gone, wake-ups are made directly.
    relay: Option<Waker>,
    /// Tasks to wake at the relay's next run.
    pending: Vec<Waker>,
}

impl WakeRelay {
    fn lock(&self) -> MutexGuard<'_, RelayState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes a connection's task: through the relay from the loop thread,
    /// directly from any other.
    pub(super) fn wake(&self, waker: Waker) {
        if !ON_LOOP_THREAD.get() {
            waker.wake();
            return;
        }
        let mut st = self.lock();
        let Some(relay) = &st.relay else {
            drop(st);
            waker.wake();
            return;
        };
        if st.pending.is_empty() {
            relay.wake_by_ref();
        }
        st.pending.push(waker);
    }

    /// Spawns the relay task on the current tokio runtime, once (called
    /// from a connection's task, on tokio's thread).
    pub(super) fn ensure_running(self: &Arc<Self>) {
        if self.spawned.load(Ordering::Acquire) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if self.spawned.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(RelayTask {
            relay: self.clone(),
            spare: Vec::new(),
        });
    }
}

/// The task that wakes, on tokio's thread, the tasks the loop left.
struct RelayTask {
    relay: Arc<WakeRelay>,
    /// The emptied list of the last run, reused.
    spare: Vec<Waker>,
}

impl Future for RelayTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        {
            let mut st = this.relay.lock();
            match &st.relay {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => st.relay = Some(cx.waker().clone()),
            }
            std::mem::swap(&mut st.pending, &mut this.spare);
        }
        for w in this.spare.drain(..) {
            w.wake();
        }
        Poll::Pending
    }
}

impl Drop for RelayTask {
    /// The runtime is going away: wake whatever is left, and let the loop
    /// thread wake directly from now on.
    fn drop(&mut self) {
        let pending = {
            let mut st = self.relay.lock();
            st.relay = None;
            std::mem::take(&mut st.pending)
        };
        self.relay.spawned.store(false, Ordering::Release);
        for w in pending {
            w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task that ends once `woken` is set, leaving its waker in `slot`.
    struct Waiting {
        slot: Arc<Mutex<Option<Waker>>>,
        woken: Arc<AtomicBool>,
    }

    impl Future for Waiting {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.woken.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            *self.slot.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn wakes_from_the_loop_thread_reach_every_task_through_one_relay_run() {
        let relay = Arc::new(WakeRelay::default());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tasks = 50;
        let done = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            relay.ensure_running();
            let mut slots = Vec::new();
            let mut flags = Vec::new();
            for _ in 0..tasks {
                let slot = Arc::new(Mutex::new(None));
                let woken = Arc::new(AtomicBool::new(false));
                let done = done.clone();
                let task = Waiting {
                    slot: slot.clone(),
                    woken: woken.clone(),
                };
                tokio::spawn(async move {
                    task.await;
                    done.fetch_add(1, Ordering::AcqRel);
                });
                slots.push(slot);
                flags.push(woken);
            }
            // Let every task, and the relay, run once and wait.
            for _ in 0..3 {
                tokio::task::yield_now().await;
            }
            assert!(relay.lock().relay.is_some(), "the relay task ran");
            let loop_thread = {
                let relay = relay.clone();
                std::thread::spawn(move || {
                    mark_loop_thread();
                    for (slot, woken) in slots.iter().zip(&flags) {
                        woken.store(true, Ordering::Release);
                        let waker = slot.lock().unwrap().take().expect("the task waits");
                        relay.wake(waker);
                    }
                    // Every wake-up waits in the relay, none in tokio's queue.
                    relay.lock().pending.len()
                })
            };
            // Joined without yielding: tokio's thread runs nothing meanwhile,
            // as when the loop thread finishes a batch on a shared core.
            let pending = loop_thread.join().unwrap();
            assert_eq!(
                pending, tasks,
                "the loop thread's wake-ups were left to the relay"
            );
            tokio::time::timeout(std::time::Duration::from_secs(10), async {
                while done.load(Ordering::Acquire) < tasks {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("every task was woken");
        });
        drop(rt);
        assert!(
            relay.lock().relay.is_none() && !relay.spawned.load(Ordering::Acquire),
            "the dropped relay leaves wake-ups to be made directly"
        );
    }
}
