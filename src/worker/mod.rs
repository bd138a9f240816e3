//! A serving process: accept, dispatch to a front end, and the request log.

mod accept;
pub mod apps;
pub mod conn_limit;
mod dispatch;
pub mod reaper;
pub mod reqlog;
pub mod serve;

#[cfg(test)]
mod tests;
