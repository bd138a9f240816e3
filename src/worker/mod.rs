//! A serving process: accept, dispatch to a front end, and the request log.

pub mod apps;
pub mod reqlog;
pub mod serve;
