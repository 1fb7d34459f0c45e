//! `ascp`: the transfer client, and the server side sshd runs (`ascp --server`).

pub mod cli;
pub mod client;
pub mod progress;
pub mod proxy;
pub mod server;
