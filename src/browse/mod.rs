//! Browsing a transfer server: IBM's `ascmd` protocol, server and client.
//!
//! IBM's clients (aspera-cli's `ascli server browse`, the SDKs) run `ascmd` (or `ascmd -V2`)
//! over SSH, write text commands on its stdin (`as_ls "/dir"`, `as_mkdir`, `as_mv`, `as_rm`,
//! `as_du`, `as_df`, `as_md5sum`, `as_cp`, `as_info`, `as_exit`) and read big-endian
//! type-length-value replies on its stdout. This module speaks that protocol:
//! - [`wire`]: the reply records, encoded and decoded, the type table as Rust types;
//! - [`command`]: one command line read with a bound and parsed (quotes, escapes);
//! - [`ops`]: each operation on a [`crate::fsroot::Root`] with the user's permissions, and
//!   [`walk`] for what goes below a directory (listings, `du`, `rm`, `cp` of trees), [`stat`]
//!   for a file's attributes as the protocol shows them;
//! - [`server`]: the `ascmd` program's session (user, configuration, the command loop);
//! - [`client`]: the other end, over any stream or over our SSH client (`ascp --ls` and the
//!   other browse verbs).
//!
//! It sits above [`crate::fsroot`] and [`crate::config`] (the docroot), and [`crate::ssh`] for
//! the client. docs/protocol.md ("Browsing: IBM's ascmd protocol") describes the wire format.

pub mod client;
pub mod command;
pub mod ops;
pub mod server;
pub mod stat;
pub mod walk;
pub mod wire;
