//! `fasp-proxy`: the proxy daemon's admin command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::Arc;

use clap::{Parser, Subcommand};
use fasp_proxy::config::{self, create, render, summary};
use fasp_proxy::daemon;
use fasp_proxy::dataplane::{self, Backend, DataplaneError};
use fasp_proxy::forward::users::{self, NodeUsers};
use tokio::signal::unix::{signal, SignalKind};

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
    /// Write a commented default aspera.conf, new SSH host keys (Ed25519 and RSA) and a
    /// self-signed certificate for the forward proxy's HTTPS API.
    ///
    /// Refuses, changing nothing, if any of the files exists already.
    CreateConfig {
        /// Directory to write aspera.conf, the host keys and api_cert.pem/api_key.pem into.
        #[arg(long, default_value = "/etc/fasp-proxy", value_name = "DIR")]
        dir: PathBuf,
        /// A name or address the HTTPS certificate is valid for (repeatable; IP addresses
        /// become IP SANs). Default: this host's name and every address of its interfaces.
        #[arg(long = "api-name", value_name = "NAME")]
        api_names: Vec<String>,
    },
    /// Write only a new self-signed certificate and key for the HTTPS API (api_cert.pem,
    /// api_key.pem), e.g. for a configuration made before; refuses to overwrite either.
    CreateCertificate {
        /// Directory to write api_cert.pem and api_key.pem into.
        #[arg(long, default_value = "/etc/fasp-proxy", value_name = "DIR")]
        dir: PathBuf,
        /// A name or address the certificate is valid for (repeatable), as for create-config.
        #[arg(long = "api-name", value_name = "NAME")]
        api_names: Vec<String>,
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
    /// Manage the forward proxy's node-API users (IBM's `asnodeadmin -au`), kept hashed
    /// (argon2id) in `node-users` beside the configuration, mode 0600.
    NodeUser {
        #[command(subcommand)]
        action: NodeUserAction,
    },
    /// Audit users and settings, as IBM's asp-check: count full-access and restricted
    /// (aspshell) users, and find insecure transfer users and settings.
    ///
    /// Transfer users (login shell aspshell, or an <aaa> entry in the configuration) are
    /// checked for: no aspshell, a docroot at or above the home directory, forwarding, a tty,
    /// internal-sftp, password logins, legacy algorithms and PermitUserEnvironment in what
    /// `sshd -T -C user=NAME` prints. The configuration is checked for key files others can
    /// read, an empty <allowed_clients>, a forward proxy without authentication or
    /// <allowed_destinations>, and <ssh_rsa_legacy>. Changes nothing. Exit status 0: nothing
    /// insecure; 1: something insecure; 2: the audit could not run.
    Audit {
        /// Print one JSON object (counts, users, findings, notes) instead of text.
        #[arg(long)]
        json: bool,
        /// sshd's configuration, read through `sshd -T -f PATH`.
        #[arg(long = "sshd-config", default_value = fasp_proxy::audit::DEFAULT_SSHD_CONFIG, value_name = "PATH")]
        sshd_config: PathBuf,
        /// The sshd program.
        #[arg(long, default_value = fasp_proxy::audit::DEFAULT_SSHD, value_name = "PATH")]
        sshd: PathBuf,
        /// Audit only this user (repeatable); default: every account.
        #[arg(long = "user", value_name = "NAME")]
        users: Vec<String>,
        /// Read accounts from this passwd-format file instead of the password database.
        #[arg(long, value_name = "PATH")]
        passwd: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum NodeUserAction {
    /// Add a user, or set a new password for an existing one. The password is read from the
    /// terminal (asked twice, not echoed) or, when stdin is not a terminal, from its first line;
    /// never from the command line.
    Add {
        /// The user name (1-64 of A-Z a-z 0-9 . _ -).
        name: String,
    },
    /// Remove a user.
    Del {
        /// The user name.
        name: String,
    },
    /// List the user names.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CreateConfig { dir, api_names } => create_config(&dir, api_names),
        Command::CreateCertificate { dir, api_names } => create_certificate(&dir, api_names),
        Command::CheckConfig { path } => check_config(path.as_deref().unwrap_or(&cli.config)),
        Command::Spec => {
            print!("{}", render::spec());
            ExitCode::SUCCESS
        }
        Command::Purge => purge(&cli.config),
        Command::Run => run(&cli.config),
        Command::NodeUser { action } => node_user(&cli.config, action),
        Command::Audit {
            json,
            sshd_config,
            sshd,
            users,
            passwd,
        } => {
            let options = fasp_proxy::audit::Options {
                config: cli.config.clone(),
                sshd,
                sshd_config,
                users,
                passwd,
            };
            match fasp_proxy::audit::run(&options) {
                Ok(report) if json => {
                    println!("{}", report.json());
                    ExitCode::from(u8::from(report.insecure))
                }
                Ok(report) => {
                    print!("{}", report.text());
                    ExitCode::from(u8::from(report.insecure))
                }
                Err(e) => {
                    eprintln!("fasp-proxy audit: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Sessions => match daemon::control::query() {
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

/// `run`: the configuration, logging and the runtime; the daemon itself is
/// [`daemon::serve`], on the listeners and the data plane opened here.
fn run(config_path: &Path) -> ExitCode {
    let Some(config) = load_for_run(config_path) else {
        return ExitCode::FAILURE;
    };
    let rproxy = &config.server.rproxy;
    if let Err(e) = daemon::logging::init(rproxy.log_directory.as_deref(), rproxy.log_level) {
        eprintln!("fasp-proxy: {e}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fasp-proxy: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start_and_serve(Arc::new(config), config_path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("fasp-proxy: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds what the daemon needs, in the order that keeps a second daemon from harming the
/// first, then serves until SIGTERM or Ctrl-C.
async fn start_and_serve(config: Arc<config::Config>, config_path: &Path) -> Result<(), String> {
    // First: the control socket is also the "one daemon per network namespace" lock. A second
    // daemon must stop here, before its reconcile removes the first one's live entries.
    let control_listener = daemon::control::bind()?;
    let forwarder = {
        let config = Arc::clone(&config);
        tokio::task::spawn_blocking(move || daemon::prepare_dataplane(&config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let rproxy = &config.server.rproxy;
    let handoff_listener = if rproxy.enabled && rproxy.frontend.openssh() {
        fasp_proxy::ssh::handoff::origin::can_read_sshd()?;
        Some(fasp_proxy::ssh::handoff::bind(&rproxy.handoff_socket)?)
    } else {
        None
    };
    let ssh_listener = if rproxy.enabled && rproxy.frontend.builtin() {
        let listen = config.server.rproxy.ssh_listen;
        Some(
            tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
        )
    } else {
        None
    };
    let api = if config.server.proxy.enabled {
        Some(bind_api(&config, config_path).await?)
    } else {
        None
    };
    // Handlers before READY=1: a SIGTERM from then on is a clean stop, never the default kill.
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM handler: {e}"))?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let penalties = fasp_proxy::policy::penalties::Penalties::new(
        fasp_proxy::policy::penalties::PenaltySettings::from_config(&config),
    );
    let setup = daemon::Setup {
        config,
        forwarder,
        ssh_listener,
        api,
        control_listener: Some(control_listener),
        handoff_listener,
        backend_known_hosts: daemon::backend_known_hosts(config_path),
        penalties: std::sync::Arc::new(std::sync::Mutex::new(penalties)),
    };
    daemon::serve(setup, shutdown)
        .await
        .map_err(|e| e.to_string())
}

/// The forward proxy's API listeners on `<bind_ip_address>`: HTTP on `<http_port>` when
/// `<enable_http>`, HTTPS on `<https_port>` with the configured certificate when `<enable_https>`.
async fn bind_api(config: &config::Config, config_path: &Path) -> Result<daemon::ApiSetup, String> {
    let server = &config.server;
    let ip = server.proxy.bind_ip_address;
    let bind = |port: u16| async move {
        let addr = std::net::SocketAddr::new(ip, port);
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("forward proxy API: cannot listen on {addr}: {e}"))
    };
    let http = if server.enable_http {
        Some(bind(server.http_port).await?)
    } else {
        None
    };
    let https = if server.enable_https {
        let tls = fasp_proxy::forward::api::tls_acceptor(
            &server.https_certificate,
            &server.https_private_key,
        )?;
        Some((bind(server.https_port).await?, tls))
    } else {
        None
    };
    Ok(daemon::ApiSetup {
        http,
        https,
        users_path: fasp_proxy::forward::users::users_path(config_path),
        limits: fasp_proxy::forward::api::ApiLimits {
            max_per_source: config.server.per_source.max_api_connections as usize,
            ..fasp_proxy::forward::api::ApiLimits::default()
        },
    })
}

/// Loads the configuration for `run`: every diagnostic printed, warnings included; `None` when
/// it is invalid or does not enable the reverse proxy.
fn load_for_run(config_path: &Path) -> Option<config::Config> {
    let loaded = match config::load(config_path) {
        Ok(l) => l,
        Err(e) => {
            eprint!("{e}");
            eprintln!("fasp-proxy: refusing to start with an invalid configuration");
            return None;
        }
    };
    for w in &loaded.warnings {
        eprintln!("{}", w.display_in(config_path));
    }
    let config = loaded.config;
    let rproxy = &config.server.rproxy;
    if !rproxy.enabled && !config.server.proxy.enabled {
        eprintln!(
            "fasp-proxy: neither the reverse proxy nor the forward proxy is enabled in {} \
             (<rproxy><enabled>true</enabled> or <proxy><enabled>true</enabled>); nothing to run",
            config_path.display()
        );
        return None;
    }
    if rproxy.enabled && rproxy.password_authentication {
        if let Err(e) = fasp_proxy::ssh::pam::available() {
            eprintln!(
                "fasp-proxy: <password_authentication> is on in {}, but {e}",
                config_path.display()
            );
            return None;
        }
    }
    Some(config)
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

/// The certificate names asked for, or this host's by default.
fn api_names(asked: Vec<String>) -> Vec<String> {
    if asked.is_empty() {
        create::default_api_names()
    } else {
        asked
    }
}

fn create_certificate(dir: &Path, names: Vec<String>) -> ExitCode {
    let names = api_names(names);
    match create::create_certificate(dir, &names) {
        Ok((cert, key)) => {
            println!(
                "wrote {} and {} (mode 0600): self-signed, for {}",
                cert.display(),
                key.display(),
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fasp-proxy create-certificate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn create_config(dir: &Path, names: Vec<String>) -> ExitCode {
    match create::create(dir, &api_names(names)) {
        Ok(created) => {
            println!("wrote {}", created.config.display());
            println!(
                "wrote {} (SSH host key, mode 0600)",
                created.host_key.display()
            );
            println!("wrote {}", created.host_key_pub.display());
            println!("host key fingerprint: {}", created.fingerprint);
            println!(
                "wrote {} and {} (RSA host key, for clients that know no other kind)",
                created.rsa_host_key.display(),
                created.rsa_host_key_pub.display()
            );
            println!("RSA host key fingerprint: {}", created.rsa_fingerprint);
            println!(
                "wrote {} and {} (HTTPS API, self-signed, for {})",
                created.api_cert.display(),
                created.api_key.display(),
                created.api_names.join(", ")
            );
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

/// `node-user add|del|list`.
fn node_user(config_path: &Path, action: NodeUserAction) -> ExitCode {
    let path = users::users_path(config_path);
    let result = (|| -> Result<String, String> {
        let mut list = NodeUsers::load(&path).map_err(|e| e.to_string())?;
        match action {
            NodeUserAction::List => Ok(list.names().map(|n| format!("{n}\n")).collect()),
            NodeUserAction::Del { name } => {
                if !list.remove(&name) {
                    return Err(format!("no user {name} in {}", path.display()));
                }
                list.save(&path).map_err(|e| e.to_string())?;
                Ok(format!("removed user {name} from {}\n", path.display()))
            }
            NodeUserAction::Add { name } => {
                users::check_name(&name).map_err(|e| e.to_string())?;
                let password = read_password()?;
                let new = list.set(&name, &password).map_err(|e| e.to_string())?;
                list.save(&path).map_err(|e| e.to_string())?;
                let what = if new {
                    "added user"
                } else {
                    "new password for user"
                };
                Ok(format!("{what} {name} in {}\n", path.display()))
            }
        }
    })();
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fasp-proxy node-user: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a password: from the terminal without echo (twice, to catch typos), else stdin's
/// first line.
fn read_password() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut line = String::new();
        stdin
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    let ask = |prompt: &str| -> Result<String, String> {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        eprint!("{prompt}");
        let saved = tcgetattr(&stdin).map_err(|e| format!("reading the terminal: {e}"))?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).map_err(|e| format!("turning echo off: {e}"))?;
        let mut line = String::new();
        let read = stdin.lock().read_line(&mut line);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
        read.map_err(|e| format!("reading the password: {e}"))?;
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = ask("Password: ")?;
    if ask("Again: ")? != first {
        return Err("the two passwords differ; nothing changed".into());
    }
    Ok(first)
}
