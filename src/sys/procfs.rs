//! Readers of /proc.

/// (virtual size, resident size) of a process in bytes, from
/// /proc/PID/statm (`None`: this process); zeros if it is gone.
pub fn memory(pid: Option<i32>) -> (u64, u64) {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/statm"),
        None => "/proc/self/statm".to_string(),
    };
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            let mut f = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            Some((f.next()?? * page, f.next()?? * page))
        })
        .unwrap_or((0, 0))
}

/// The children of this process, of all its threads, from
/// /proc/self/task/*/children.
pub fn children() -> Vec<i32> {
    children_of(std::process::id() as i32)
}

/// The children of process `pid`, of all its threads (empty if it is gone).
pub fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|pids| {
            pids.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The fields of /proc/PID/stat after the command name: the state first
/// (R, S, T, Z...), then the parent, the process group...
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces or parentheses: the fields are
    // after the last ") ".
    let (_, rest) = stat.rsplit_once(") ")?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Whether process `pid` has exited and waits to be reaped (state Z, in
/// /proc/PID/stat).
pub fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|s| s == "Z"))
}

/// Whether process `pid` is stopped by a signal (state T), or gone or
/// exited: either way it runs no more until it is sent SIGCONT.
pub fn is_stopped_or_gone(pid: i32) -> bool {
    stat_fields(pid).is_none_or(|f| f.first().is_some_and(|s| s == "T" || s == "Z" || s == "X"))
}

/// The process group of a live process `pid` (None: gone or exited).
pub fn live_group_of(pid: i32) -> Option<i32> {
    let f = stat_fields(pid)?;
    if f.first().is_some_and(|s| s == "Z" || s == "X") {
        return None;
    }
    f.get(2)?.parse().ok()
}

/// net.core.somaxconn: the kernel's cap on a listening socket's backlog.
pub fn somaxconn() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_listed_its_group_read_and_its_stop_seen() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id() as i32;
        assert!(children_of(std::process::id() as i32).contains(&pid));
        assert_eq!(
            live_group_of(pid),
            Some(nix::unistd::getpgrp().as_raw()),
            "a child is in its parent's group"
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        assert!(!is_stopped_or_gone(pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        while !is_stopped_or_gone(pid) {
            assert!(std::time::Instant::now() < deadline, "never seen stopped");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(live_group_of(pid), None);
        assert!(is_stopped_or_gone(pid));
    }
}
