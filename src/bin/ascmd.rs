//! `ascmd`: IBM's browse protocol on a transfer server (list, stat, mkdir, rename, delete, disk
//! usage), confined to the user's docroot. Run by sshd (or `aspshell`) for clients such as
//! `ascp --ls` or IBM's `ascli server browse`. See `fasp_proxy::browse`.

fn main() {
    std::process::exit(fasp_proxy::browse::server::main(
        std::env::args_os().skip(1),
    ));
}
