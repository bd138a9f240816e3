//! `--reaper`: a worker reaps the children the app left unwaited for (a
//! fork that ended with os._exit, a subprocess never waited for), which
//! would otherwise stay as zombies until the worker is replaced. As
//! uWSGI's reaper, which waits for any child after each request; here,
//! for a child that has been a zombie for a second, and never for a CGI
//! script, whose supervisor waits for it (a wait that found it gone would
//! fail the request). An app that waits for its children later than that
//! (a `Popen.wait()` after other work) must not use it: its wait would
//! find the child gone (Python then reports the exit status as 0).

use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

use crate::sys::procfs;

const EVERY: Duration = Duration::from_secs(1);

/// Runs on the worker's event loop until the worker ends.
pub async fn run() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = Vec::new();
    loop {
        tick.tick().await;
        seen = reap_zombies(&seen);
    }
}

/// Waits for each child of this process that was a zombie at the last
/// look too (a second ago at least: an app waiting for its child, as
/// subprocess's `wait()` does, would have had it by then), but for CGI
/// scripts. Gives the zombies found for the first time now.
fn reap_zombies(seen_before: &[i32]) -> Vec<i32> {
    let mut zombies = Vec::new();
    for pid in procfs::children() {
        if !procfs::is_zombie(pid) || crate::handlers::cgi::is_running_script(pid) {
            continue;
        }
        if seen_before.contains(&pid) {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        } else {
            zombies.push(pid);
        }
    }
    zombies
}
