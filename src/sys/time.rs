//! Local time, formatted by the C library (the formats are uWSGI's).

/// `fmt` (strftime's conversions) applied to `unix` seconds, in local time.
pub fn strftime(fmt: &str, unix: u64) -> String {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return String::new();
    };
    let t = unix as libc::time_t;
    // SAFETY: `libc::tm` is integers and one pointer (`tm_zone`), for all of
    // which zero is a valid value (a null `tm_zone`).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: localtime_r reads `t` and writes only into `tm`, live locals of
    // the types it takes, and is thread-safe (unlike localtime). If it
    // fails, `tm` stays zeroed, which is still valid.
    unsafe { libc::localtime_r(&t, &mut tm) };
    let mut buf = [0u8; 256];
    // SAFETY: strftime writes at most `buf.len()` bytes into `buf`, and
    // reads the NUL-terminated `cfmt` and `tm`, whose `tm_zone` is null or
    // points into the C library's time zone data, which is never freed.
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
