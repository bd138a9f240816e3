//! Local time, formatted by the C library (the formats are uWSGI's).

/// `fmt` (strftime's conversions) applied to `unix` seconds, in local time.
pub fn strftime(fmt: &str, unix: u64) -> String {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return String::new();
    };
    let t = unix as libc::time_t;
    // SAFETY: `tm` is plain data, valid when zeroed; localtime_r writes
    // only into it and is thread-safe (unlike localtime).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let mut buf = [0u8; 256];
    // SAFETY: strftime writes at most `buf.len()` bytes into `buf` and
    // reads the NUL-terminated format and the `tm` filled above.
    let n = unsafe { libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm) };
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// uWSGI's date in the default line, made once a second per thread: the C
/// library's local time costs a few µs, more than the rest of the line.
pub fn ctime(unix: u64) -> String {
    thread_local! {
        static CACHE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != unix || c.1.is_empty() {
            *c = (unix, strftime("%a %b %e %H:%M:%S %Y", unix));
        }
        c.1.clone()
    })
}
