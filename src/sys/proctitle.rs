//! Process titles (`--auto-procname`, `--procname*`): what `ps` and
//! /proc/PID/cmdline show for a process, as uWSGI and Python's
//! setproctitle set them.
//!
//! Linux keeps a process's argument strings, then its environment strings,
//! in one stretch of its stack, and /proc/PID/cmdline reads the first part.
//! A title is written over that stretch. The environment strings are moved
//! to the heap first, so that a title longer than the command line fits.
//! When the last byte of the arguments is not NUL, the kernel reads the
//! title up to its first NUL (fs/proc/base.c, get_mm_cmdline): that is how
//! a title shorter than the command line ends where it ends.

use std::ffi::{CStr, OsString, c_char};
use std::sync::{Mutex, OnceLock};

static ARGS: OnceLock<Vec<OsString>> = OnceLock::new();

/// Copies this process's arguments, before a title overwrites them
/// (`std::env::args_os` reads them where they are, each time).
pub fn remember_args() {
    let _ = ARGS.set(std::env::args_os().collect());
}

/// This process's arguments as it was started, the program first.
pub fn args() -> Vec<OsString> {
    match ARGS.get() {
        Some(args) => args.clone(),
        None => std::env::args_os().collect(),
    }
}

/// Where titles are written.
#[derive(Clone, Copy)]
struct Room {
    start: usize,
    /// The arguments' part of it.
    args: usize,
    /// All of it.
    len: usize,
}

static AREA: Mutex<Option<Room>> = Mutex::new(None);

unsafe extern "C" {
    /// The C library's environment: what getenv reads.
    static mut environ: *mut *mut c_char;
    /// glibc's argv[0] and its last part, pointing into the arguments:
    /// what error(3), assert and syslog without openlog read.
    static mut program_invocation_name: *mut c_char;
    static mut program_invocation_short_name: *mut c_char;
}

/// The stretch's bounds from /proc/self/stat: arg_start, arg_end,
/// env_start, env_end (its fields 48 to 51, since Linux 3.5).
fn bounds(stat: &str) -> Option<[usize; 4]> {
    // The command name (field 2) may hold spaces or parentheses: the
    // fields counted here start after its last ") ", with field 3.
    let (_, rest) = stat.rsplit_once(") ")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<usize>().ok();
    Some([field(48)?, field(49)?, field(50)?, field(51)?])
}

/// Makes room for titles: moves the environment strings that lie in the
/// stretch, and glibc's copies of the program's name, to the heap, and
/// remembers the stretch. The processes forked after it inherit the room.
/// False when there is none (/proc unreadable).
///
/// # Safety
///
/// No other thread of this process may run: this rewrites `environ`'s
/// entries and glibc's program names, which another thread's getenv or
/// error message could be reading.
pub unsafe fn make_room() -> bool {
    let mut area = AREA.lock().unwrap_or_else(|e| e.into_inner());
    if area.is_some() {
        return true;
    }
    let Some([arg_start, arg_end, env_start, env_end]) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .as_deref()
        .and_then(bounds)
    else {
        return false;
    };
    if arg_end <= arg_start {
        return false;
    }
    // The environment joins on only where it follows the arguments, as the
    // kernel reads a title past them only then.
    let end = if env_start == arg_end && env_end > env_start {
        env_end
    } else {
        arg_end
    };
    // SAFETY: `environ` is the C library's NULL-terminated array of
    // NUL-terminated strings, and the program names NUL-terminated strings
    // (or NULL); no other thread runs to read or change them (this
    // function's contract). Those pointing into the stretch are replaced
    // by leaked heap copies of the same strings, which stay valid for the
    // life of the process, as setenv's would.
    unsafe {
        let moved = |s: *mut c_char| -> *mut c_char {
            if !s.is_null() && (arg_start..end).contains(&(s as usize)) {
                CStr::from_ptr(s).to_owned().into_raw()
            } else {
                s
            }
        };
        let mut entry = environ;
        while !entry.is_null() && !(*entry).is_null() {
            *entry = moved(*entry);
            entry = entry.add(1);
        }
        program_invocation_name = moved(program_invocation_name);
        program_invocation_short_name = moved(program_invocation_short_name);
    }
    *area = Some(Room {
        start: arg_start,
        args: arg_end - arg_start,
        len: end - arg_start,
    });
    true
}

/// Sets this process's title. Nothing happens without `make_room` first.
/// A title longer than the room is cut.
pub fn set(title: &str) {
    let area = AREA.lock().unwrap_or_else(|e| e.into_inner());
    let Some(Room { start, args, len }) = *area else {
        return;
    };
    let bytes = title.as_bytes();
    // A NUL ends the title; one always follows it.
    let n = bytes
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(bytes.len())
        .min(len - 1);
    // SAFETY: the stretch [start, start + len) is this process's own
    // argument and environment strings, mapped and writable (the stack),
    // as /proc/self/stat gave it; `make_room` moved the environment
    // strings that `environ` pointed into it, and glibc's program names,
    // and nothing else in this program reads them after startup (the
    // arguments were copied at startup: `remember_args`; Python was given
    // its own). The lock keeps two writers apart.
    unsafe {
        let room = std::slice::from_raw_parts_mut(start as *mut u8, len);
        room[..n].copy_from_slice(&bytes[..n]);
        room[n..].fill(0);
        // The last byte of the arguments not NUL: the kernel then reads
        // the title to its NUL, not the whole of the arguments (which would
        // end in NULs, shown by ps as spaces).
        if n + 1 < args {
            room[args - 1] = b' ';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_fields_48_to_51_after_the_command_name() {
        // A command name with a space and a parenthesis in it.
        let mut stat = String::from("42 (a) b) S");
        for n in 4..=52 {
            stat.push_str(&format!(" {}", n * 10));
        }
        assert_eq!(bounds(&stat), Some([480, 490, 500, 510]));
        assert_eq!(bounds("42 (x) S 1 2"), None);
    }
}
