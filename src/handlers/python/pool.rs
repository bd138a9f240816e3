//! The Python threads of `--threads N` mode. Threads are created on first
//! use, so a worker forked from a master starts them after the fork.
//!
//! Each thread keeps one Python thread state for its whole life, as
//! uWSGI's and Gunicorn's request threads have theirs: `threading.local()`
//! data (Django's persistent database connections, per-thread caches)
//! lasts from one request to the next on the thread, as it does there.
//! Taking the GIL per job with a thread state made and dropped each time
//! lost it after every request.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use pyo3::prelude::*;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    queues: Arc<Queues>,
}

struct Queues {
    jobs: Mutex<Jobs>,
    added: Condvar,
}

struct Jobs {
    /// For whichever thread is free first.
    any: VecDeque<Job>,
    /// For one thread each ([`Pool::submit_to`]).
    own: Vec<VecDeque<Job>>,
    /// The threads that wait for a job of their own before they take any
    /// other ([`Pool::hold_this_thread`]).
    held: Vec<bool>,
}

thread_local! {
    /// This thread's index in its pool, on the pool's threads.
    static THIS_THREAD: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}

impl Pool {
    /// Starts up to `threads` threads. When the system refuses some (a
    /// `--limit-as` too small for their stacks, the process limit), the
    /// pool has those that started, and says so; `None` when not one did.
    pub fn new(threads: usize) -> Option<Pool> {
        let queues = Arc::new(Queues {
            jobs: Mutex::new(Jobs {
                any: VecDeque::new(),
                own: (0..threads).map(|_| VecDeque::new()).collect(),
                held: vec![false; threads],
            }),
            added: Condvar::new(),
        });
        let mut started = 0;
        let mut refused = None;
        for i in 0..threads {
            let queues = queues.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("oxgate-py-{i}"))
                .spawn(move || run_thread(i, &queues));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = refused {
            let pid = std::process::id();
            if started == 0 {
                crate::say!(
                    "oxgate: worker {pid}: cannot start a Python thread ({e}): requests answered 503 (is --limit-as too small for --threads?)"
                );
                return None;
            }
            crate::say!(
                "oxgate: worker {pid}: only {started} of {threads} Python threads could start ({e}); serving with {started} (is --limit-as too small for --threads?)"
            );
            // The jobs meant for a thread that never started go to any.
            if let Ok(mut jobs) = queues.jobs.lock() {
                jobs.own.truncate(started);
                jobs.held.truncate(started);
            }
        }
        Some(Pool { queues })
    }

    /// Runs `job` on the first free thread.
    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        if let Ok(mut jobs) = self.queues.jobs.lock() {
            jobs.any.push_back(Box::new(job));
            // A held thread woken would leave it and sleep on.
            if jobs.held.contains(&true) {
                self.queues.added.notify_all();
            } else {
                self.queues.added.notify_one();
            }
        }
    }

    /// Runs `job` on thread `thread` ([`Pool::this_thread`]), once it is
    /// free: a response's close() on the thread its call ran on, with that
    /// thread's `threading.local()` data, as under uWSGI and Gunicorn.
    pub fn submit_to(&self, thread: usize, job: impl FnOnce() + Send + 'static) {
        if let Ok(mut jobs) = self.queues.jobs.lock() {
            match jobs.own.get_mut(thread) {
                Some(own) => own.push_back(Box::new(job)),
                None => jobs.any.push_back(Box::new(job)),
            }
            // Only that thread may take it: every waiting one looks.
            self.queues.added.notify_all();
        }
    }

    /// The index of the pool thread this runs on, if it is one.
    pub fn this_thread() -> Option<usize> {
        THIS_THREAD.with(|t| t.get())
    }

    /// Keeps this pool thread, once its job returns, for the job that will
    /// be [`submit_to`](Pool::submit_to) it next (a file response's
    /// close(), once the file is sent): it takes no other meanwhile, as
    /// uWSGI's and Gunicorn's threads stay with a response until it is
    /// sent. Taking another, it made the close() wait for that one, which
    /// may wait for the close() (a lock the response holds): a deadlock.
    pub fn hold_this_thread(&self) {
        if let Some(i) = Pool::this_thread()
            && let Ok(mut jobs) = self.queues.jobs.lock()
            && let Some(held) = jobs.held.get_mut(i)
        {
            *held = true;
        }
    }
}

fn run_thread(i: usize, queues: &Queues) {
    THIS_THREAD.with(|t| t.set(Some(i)));
    // The thread state made here stays until the thread ends: each job's
    // Python::attach takes the GIL with it, and gives the GIL back without
    // dropping it.
    Python::attach(|py| {
        name_thread(py, i);
        py.detach(|| {
            loop {
                let Some(job) = next_job(i, queues) else {
                    return;
                };
                job();
            }
        })
    });
}

/// `threading.current_thread().name` as the system has it (`oxgate-py-N`),
/// for `%(threadName)s` in the app's log lines (it was `Dummy-N`).
fn name_thread(py: Python<'_>, i: usize) {
    let named = py
        .import("threading")
        .and_then(|t| t.call_method0("current_thread"))
        .and_then(|t| t.setattr("name", format!("oxgate-py-{i}")));
    if let Err(e) = named {
        e.print(py);
    }
}

fn next_job(i: usize, queues: &Queues) -> Option<Job> {
    let mut jobs = queues.jobs.lock().ok()?;
    loop {
        if let Some(job) = jobs.own.get_mut(i).and_then(|q| q.pop_front()) {
            if let Some(held) = jobs.held.get_mut(i) {
                *held = false;
            }
            return Some(job);
        }
        if !jobs.held.get(i).copied().unwrap_or(false)
            && let Some(job) = jobs.any.pop_front()
        {
            return Some(job);
        }
        jobs = queues.added.wait(jobs).ok()?;
    }
}
