//! Leaves that import nothing from the crate: clocks, local time, /proc
//! readers and the stderr writer.

pub mod clock;
pub mod procfs;
pub mod signals;
pub mod time;
