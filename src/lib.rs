//! oxgate: an application server for Python web apps.

pub mod config;
pub mod gateway;
pub mod http;
pub mod listen;
pub mod logfile;
pub mod master;
pub mod process;
pub mod proto;
pub mod python;
pub mod reqlog;
pub mod request;
pub mod server;
pub mod top;
