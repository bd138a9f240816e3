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
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
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

/// Whether process `pid` has exited and waits to be reaped (state Z, in
/// /proc/PID/stat).
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which may hold spaces or
        // parentheses: it is after the last ") ".
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// net.core.somaxconn: the kernel's cap on a listening socket's backlog.
pub fn somaxconn() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}
