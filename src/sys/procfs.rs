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
