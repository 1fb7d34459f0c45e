//! `ascp`: fast file transfer over SSH (control) and UDP (data), the open fasp-proxy protocol.

use clap::Parser;
use fasp_proxy::ascp::{browse, cli::Args, client, server};

fn main() {
    let args = Args::parse();
    let status = if args.server {
        server::run()
    } else if args.verb().is_some() {
        browse::run(&args)
    } else {
        client::run(&args)
    };
    std::process::exit(status);
}
