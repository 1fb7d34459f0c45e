//! `ascp`: the transfer client, and the server side sshd runs (`ascp --server`); its browse
//! verbs (`--ls`, `--mv`... in [`browse`]) run IBM's `ascmd` on the server instead.

pub mod browse;
pub mod cli;
pub mod client;
pub mod progress;
pub mod proxy;
pub mod server;
