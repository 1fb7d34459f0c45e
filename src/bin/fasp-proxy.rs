//! `fasp-proxy`: the proxy daemon's admin command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fasp_proxy::config::{self, create, render, summary};
use fasp_proxy::dataplane::{self, Backend, DataplaneError};

/// A proxy for FASP-style file transfers: an SSH front end authenticates users and bridges each
/// transfer's control channel to an internal server, while the kernel forwards the UDP data.
#[derive(Parser, Debug)]
#[command(
    name = "fasp-proxy",
    version,
    about,
    long_about = None,
    propagate_version = true,
    after_help = "The configuration is read from --config, else $FASP_PROXY_CONFIG, else \
                  /etc/fasp-proxy/aspera.conf.\n\nExamples:\n  \
                  fasp-proxy create-config --dir /etc/fasp-proxy\n  \
                  fasp-proxy check-config /etc/fasp-proxy/aspera.conf\n  \
                  fasp-proxy spec | less"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "FASP_PROXY_CONFIG",
        default_value = config::DEFAULT_CONFIG_PATH,
        value_name = "PATH"
    )]
    config: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write a commented default aspera.conf and a new Ed25519 SSH host key.
    ///
    /// Refuses, changing nothing, if any of the files exists already.
    CreateConfig {
        /// Directory to write aspera.conf, ssh_host_ed25519_key and ssh_host_ed25519_key.pub into.
        #[arg(long, default_value = "/etc/fasp-proxy", value_name = "DIR")]
        dir: PathBuf,
    },
    /// Validate the configuration and summarise every rule.
    ///
    /// Exit status 0 if it is valid (warnings are printed but allowed), 1 with every error otherwise.
    CheckConfig {
        /// Configuration file to check (overrides --config).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
    /// Print every configuration option with its default and meaning.
    Spec,
    /// Run the proxy daemon (reverse proxy) in the foreground.
    ///
    /// Refuses to start on any configuration error. Logs to syslog, or to
    /// <log_directory>/fasp-proxy.log. Stops on SIGTERM, closing every session and removing every
    /// kernel entry. Under systemd (Type=notify) it reports readiness.
    Run,
    /// List the live sessions of the running daemon: session, user, client, rule, internal
    /// server, UDP ports, age, and packets and bytes the kernel forwarded.
    Sessions,
    /// Remove everything the proxy owns from the kernel: every session entry and its conntrack
    /// flows, and the proxy's nftables tables and iptables chains (both backends, whatever the
    /// configuration says). For after a crash, or before uninstalling.
    ///
    /// Leaves every table and chain the proxy does not own untouched. Needs root.
    Purge,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CreateConfig { dir } => create_config(&dir),
        Command::CheckConfig { path } => check_config(path.as_deref().unwrap_or(&cli.config)),
        Command::Spec => {
            print!("{}", render::spec());
            ExitCode::SUCCESS
        }
        Command::Purge => purge(&cli.config),
        Command::Run => {
            ExitCode::from(u8::try_from(fasp_proxy::daemon::run(&cli.config)).unwrap_or(1))
        }
        Command::Sessions => match fasp_proxy::daemon::control::query() {
            Ok(table) => {
                print!("{table}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fasp-proxy sessions: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn purge(config_path: &Path) -> ExitCode {
    // The iptables binary comes from the configuration when it can be read.
    let iptables_path = match config::load(config_path) {
        Ok(loaded) => loaded.config.server.iptables_path,
        Err(_) => PathBuf::from(config::DEFAULT_IPTABLES_PATH),
    };
    let mut failed = false;
    for kind in [Backend::Nftables, Backend::Iptables] {
        let name = kind.to_string();
        let opened = dataplane::open(kind, &iptables_path);
        let mut forwarder = match opened {
            Ok(f) => f,
            Err(DataplaneError::Setup(why)) => {
                println!("{name}: skipped ({why})");
                continue;
            }
            Err(e) => {
                eprintln!("fasp-proxy purge: {name}: {e}");
                failed = true;
                continue;
            }
        };
        match forwarder.purge() {
            Ok(report) => {
                println!(
                    "{name}: removed {} session entr{} and the proxy's {}",
                    report.removed.len(),
                    if report.removed.len() == 1 {
                        "y"
                    } else {
                        "ies"
                    },
                    kind.owned_objects()
                );
                for entry in &report.removed {
                    println!("  {entry}");
                }
            }
            Err(errors) => {
                eprintln!("fasp-proxy purge: {name}: {errors}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn create_config(dir: &Path) -> ExitCode {
    match create::create(dir) {
        Ok(created) => {
            println!("wrote {}", created.config.display());
            println!(
                "wrote {} (SSH host key, mode 0600)",
                created.host_key.display()
            );
            println!("wrote {}", created.host_key_pub.display());
            println!("host key fingerprint: {}", created.fingerprint);
            println!(
                "next: add your rules, then `fasp-proxy check-config {}`",
                created.config.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fasp-proxy create-config: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for w in &loaded.warnings {
                eprintln!("{}", w.display_in(path));
            }
            let rules = loaded.config.server.rproxy.rules.len();
            println!(
                "{}: valid ({} rule{}, {} warning{})",
                path.display(),
                rules,
                if rules == 1 { "" } else { "s" },
                loaded.warnings.len(),
                if loaded.warnings.len() == 1 { "" } else { "s" }
            );
            print!("{}", summary::describe(&loaded.config));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{e}");
            ExitCode::FAILURE
        }
    }
}
