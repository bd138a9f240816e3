//! Python `bytes` as `Bytes` for the front end: small ones copied into a
//! per-thread scratch buffer, large ones shared without a copy.

use bytes::{Bytes, BytesMut};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Chunks of at least this size are handed to the front end without a copy.
const ZERO_COPY_MIN: usize = 16 * 1024;

thread_local! {
    /// Where a thread copies the small things a response is made of: header
    /// names and values, short body chunks. Each is split off as a `Bytes`.
    /// Made at its size, so that a buffer it moves on to is no smaller.
    static SCRATCH: std::cell::Cell<BytesMut> =
        std::cell::Cell::new(BytesMut::with_capacity(SCRATCH_SIZE));
}

/// `SCRATCH`'s buffer: room for the heads and short bodies of many
/// responses, so that by the time it is used up, what was split off its
/// start has been sent and dropped (after a batch of writes, responses
/// still wait in the flush queue) and the whole can be taken back.
const SCRATCH_SIZE: usize = 8192;
/// Each use wants this much room at least, or the buffer is renewed.
const SCRATCH_MIN: usize = 512;

/// Runs `f` with the thread's scratch buffer. A keep-alive hello world
/// allocates nothing for its head but once per buffer.
/// (Taken out of its cell meanwhile: a nested call, from Python code `f`
/// runs, gets a buffer of its own.)
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut BytesMut) -> R) -> R {
    let mut arena = SCRATCH.take();
    // Whatever a failed `f` left unsplit is dropped.
    arena.clear();
    crate::request::ready_arena(&mut arena, SCRATCH_MIN, SCRATCH_SIZE);
    let r = f(&mut arena);
    SCRATCH.set(arena);
    r
}

/// A Python `bytes` kept alive while the front end sends it.
struct PyBytesOwner {
    _obj: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: the buffer of an immutable bytes object never moves or changes
// while a reference to it is held, so reading it needs no GIL: `ptr` and
// `len` are those of `_obj`'s buffer, and `_obj` is that reference.
// `Py<PyBytes>` is itself Send (dropped without the GIL, its decref waits
// in PyO3's reference pool).
unsafe impl Send for PyBytesOwner {}
// SAFETY: a shared `&PyBytesOwner` only reads that immutable buffer
// (`as_ref`), and `Py<PyBytes>` is itself Sync.
unsafe impl Sync for PyBytesOwner {}

impl AsRef<[u8]> for PyBytesOwner {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` and `len` are those of the buffer of the bytes
        // object `_obj` keeps alive (`to_bytes`); it never moves or changes
        // meanwhile, and is at most isize::MAX bytes long like any slice.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

pub(super) fn to_bytes(b: &Bound<'_, PyBytes>) -> Bytes {
    let data = b.as_bytes();
    if data.len() <= SCRATCH_MIN {
        with_scratch(|arena| {
            arena.extend_from_slice(data);
            arena.split().freeze()
        })
    } else if data.len() < ZERO_COPY_MIN {
        Bytes::copy_from_slice(data)
    } else {
        Bytes::from_owner(PyBytesOwner {
            ptr: data.as_ptr(),
            len: data.len(),
            _obj: b.clone().unbind(),
        })
    }
}
