//! What the client sent and the app's `receive()` calls waiting for it,
//! paired on the loop thread only.
//!
//! The connection's task adds messages from its own thread; the app makes
//! and cancels its `receive()` futures on the loop thread (a timeout, a
//! task cancelled). Were a message paired with a waiter on the
//! connection's side, a waiter cancelled before the pairing reached the
//! loop would take the message with it, or let a later one overtake it.
//! Pairing where the cancelling happens makes both impossible: a cancelled
//! waiter is seen as done and skipped, and its message waits for the next.

use std::collections::VecDeque;

use pyo3::prelude::*;

pub(super) struct Mailbox<M> {
    messages: VecDeque<M>,
    waiters: VecDeque<Py<PyAny>>,
    /// A pairing job is on its way to the loop thread.
    posted: bool,
}

impl<M> Default for Mailbox<M> {
    fn default() -> Self {
        Mailbox {
            messages: VecDeque::new(),
            waiters: VecDeque::new(),
            posted: false,
        }
    }
}

/// Whether a future the app awaits is over (resolved or cancelled).
pub(super) fn is_done(py: Python<'_>, fut: &Py<PyAny>) -> bool {
    fut.bind(py)
        .call_method0("done")
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
}

impl<M> Mailbox<M> {
    /// Adds a message (any thread). True when the caller must post a
    /// pairing job: someone may be waiting and none is on its way.
    #[must_use]
    pub(super) fn push(&mut self, message: M) -> bool {
        self.messages.push_back(message);
        self.claim_post()
    }

    /// True when a pairing job must be posted for the waiters (on an end
    /// of the stream, say), and marks it posted.
    #[must_use]
    pub(super) fn claim_post(&mut self) -> bool {
        if self.waiters.is_empty() || self.posted {
            return false;
        }
        self.posted = true;
        true
    }

    pub(super) fn queued(&self) -> usize {
        self.messages.len()
    }

    /// For a new `receive()` (loop thread): the next message, if no live
    /// call waits before it. Drops the calls the app gave up on.
    pub(super) fn take(&mut self, py: Python<'_>) -> Option<M> {
        self.waiters.retain(|w| !is_done(py, w));
        if self.waiters.is_empty() {
            self.messages.pop_front()
        } else {
            None
        }
    }

    /// Queues a `receive()` future to be given a message.
    pub(super) fn wait(&mut self, fut: Py<PyAny>) {
        self.waiters.push_back(fut);
    }

    /// The pairing job's work (loop thread): each live waiter, oldest
    /// first, with the next message; waiters the app gave up on are
    /// dropped. Resolve the pairs after letting go of the lock.
    pub(super) fn pair(&mut self, py: Python<'_>) -> Vec<(Py<PyAny>, M)> {
        self.posted = false;
        let mut pairs = Vec::new();
        while !self.messages.is_empty() {
            let Some(fut) = self.waiters.pop_front() else {
                break;
            };
            if !is_done(py, &fut) {
                let message = self.messages.pop_front().expect("not empty");
                pairs.push((fut, message));
            }
        }
        self.waiters.retain(|w| !is_done(py, w));
        pairs
    }

    /// Live calls still wait, with no message for them (after `pair`):
    /// the next must be read, or, the stream over, they get its end.
    pub(super) fn waits_in_vain(&self) -> bool {
        !self.waiters.is_empty() && self.messages.is_empty()
    }

    /// The calls still waiting, once no message will come for them.
    pub(super) fn take_waiters(&mut self) -> VecDeque<Py<PyAny>> {
        std::mem::take(&mut self.waiters)
    }
}
