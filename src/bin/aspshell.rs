//! `aspshell`: the restricted login shell of transfer users (`chsh -s /usr/local/bin/aspshell
//! USER`). See `fasp_proxy::shell` and docs/operations.md.

fn main() {
    std::process::exit(fasp_proxy::shell::run(std::env::args_os()));
}
