//! The Python threads of `--threads N` mode. Threads are created on first
//! use, so a worker forked from a master starts them after the fork.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    tx: mpsc::Sender<Job>,
}

impl Pool {
    pub fn new(threads: usize) -> Pool {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("oxgate-py-{i}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for a job.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .expect("cannot start a Python thread");
        }
        Pool { tx }
    }

    pub fn submit(&self, job: impl FnOnce() + Send + 'static) {
        // The threads only stop when the pool is dropped, so this cannot fail.
        let _ = self.tx.send(Box::new(job));
    }
}
