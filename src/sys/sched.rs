//! The scheduling policy of a worker's threads.

/// Puts the calling thread, and the threads and processes it starts from
/// now on, under SCHED_BATCH, if it is under the default policy (a
/// realtime or idle policy set from outside is left alone). Returns
/// whether the policy changed.
///
/// Why: a worker's event loop and the app's thread (ASGI's event loop, or
/// WSGI's Python threads) wake each other for every request. Under the
/// default policy the woken thread preempts the waker at once when both
/// share a core, so requests cross one at a time, with a context switch
/// each way. Under SCHED_BATCH a woken thread waits until the running one
/// blocks or its time slice ends, and takes every request queued by then.
pub fn batch_this_thread() -> std::io::Result<bool> {
    if policy()? != libc::SCHED_OTHER {
        return Ok(false);
    }
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param that lives for the call, which
    // only reads it; 0 names the calling thread. (Neither nix nor rustix
    // wraps this call.)
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}

/// The calling thread's policy: `libc::SCHED_OTHER`, `libc::SCHED_BATCH`...
pub fn policy() -> std::io::Result<i32> {
    // SAFETY: sched_getscheduler takes a pid (0: the calling thread) and
    // touches no memory.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_thread_under_the_default_policy_moves_to_batch_and_its_threads_follow() {
        if super::policy().unwrap() != libc::SCHED_OTHER {
            return; // run under another policy: there is nothing to move
        }
        std::thread::spawn(|| {
            match super::batch_this_thread() {
                Ok(changed) => assert!(changed),
                // A sandbox that filters sched_setscheduler: nothing to try.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => return,
                Err(e) => panic!("{e}"),
            }
            assert_eq!(super::policy().unwrap(), libc::SCHED_BATCH);
            // Threads started from it inherit the policy.
            let child = std::thread::spawn(super::policy).join().unwrap().unwrap();
            assert_eq!(child, libc::SCHED_BATCH);
            // Already batch: nothing changes.
            assert!(!super::batch_this_thread().unwrap());
        })
        .join()
        .unwrap();
        // Other threads keep theirs.
        assert_eq!(super::policy().unwrap(), libc::SCHED_OTHER);
    }
}
