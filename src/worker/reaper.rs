//! `--reaper`: a worker reaps the children the app left unwaited for (a
//! fork that ended with os._exit, a fire-and-forget subprocess), which
//! would otherwise stay as zombies until the worker is replaced. As
//! uWSGI's reaper, which waits for any child after each request; here,
//! once a second, and never for a CGI script, whose supervisor waits for
//! it (a wait that found it gone would fail the request).

use std::time::Duration;

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;

const EVERY: Duration = Duration::from_secs(1);

/// Runs on the worker's event loop until the worker ends.
pub async fn run() {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        reap_zombies();
    }
}

/// Waits for each child of this process that has exited (a zombie), but
/// for CGI scripts.
fn reap_zombies() {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if is_zombie(pid) && !crate::handlers::cgi::is_running_script(pid) {
                let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Whether process `pid` has exited and waits to be reaped (state Z).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which may hold spaces or
        // parentheses: it is after the last ") ".
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}
