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
    /// server, UDP ports, age, and packets and bytes the kernel forwarded; then the forward
    /// proxy's forwardings. `sessions close ID` ends one.
    ///
    /// Root and members of <admin_group> only. Exit status 0, or 1 with the daemon's error.
    Sessions {
        #[command(subcommand)]
        action: Option<SessionsAction>,
    },
    /// Reload the running daemon's configuration (as SIGHUP and `systemctl reload` do) and print
    /// what changed; on any error the daemon keeps its configuration and every error is printed.
    ///
    /// Root and members of <admin_group> only. Exit status 0 when reloaded, 1 otherwise.
    Reload,
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
    /// Fetch the host keys an internal server offers (every kind, as ssh-keyscan does), print
    /// their fingerprints, and record them in the known_hosts file beside the configuration,
    /// which the proxy checks internal servers against (<accept_new_host_keys> false).
    ///
    /// Asks before recording ("[y/N]") on a terminal; --yes records at once. A key that
    /// differs from one recorded for the server (same kind) is refused unless --replace.
    /// Exit status 0 when the keys are recorded (or were already), 1 otherwise.
    TrustHost {
        /// The server as in <host>: ADDRESS[:PORT], port 22 by default, IPv6 as [ADDRESS]:PORT.
        #[arg(value_name = "HOST[:PORT]")]
        host: String,
        /// Record without asking (check the fingerprints another way first).
        #[arg(long, short = 'y')]
        yes: bool,
        /// Replace a recorded key of the same kind that differs (after a deliberate key change).
        #[arg(long)]
        replace: bool,
        /// Time limit of each SSH handshake, in seconds.
        #[arg(long, default_value_t = 10, value_name = "SECONDS")]
        timeout: u64,
    },
}

#[derive(Subcommand, Debug)]
enum SessionsAction {
    /// End a session (its UUID) or a forward-proxy forwarding (its number) at once: its kernel
    /// entries and flows are removed and its client is told "closed by the administrator".
    Close {
        /// The SESSION or FORWARD column of `fasp-proxy sessions`.
        id: String,
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
        Command::TrustHost {
            host,
            yes,
            replace,
            timeout,
        } => trust_host(&cli.config, &host, yes, replace, timeout),
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
        Command::Sessions { action: None } => control_request("sessions", "list"),
        Command::Sessions {
            action: Some(SessionsAction::Close { id }),
        } => control_request("sessions close", &format!("close {id}")),
        Command::Reload => control_request("reload", "reload"),
    }
}

/// Sends `request` to the daemon's control socket and prints the answer: on stdout with exit
/// status 0, or (an `error:` answer, or no daemon) on stderr with exit status 1.
fn control_request(command: &str, request: &str) -> ExitCode {
    match daemon::control::request(request) {
        Ok(answer) if !answer.is_error() => {
            print!("{}", answer.text);
            ExitCode::SUCCESS
        }
        Ok(answer) => {
            eprint!("fasp-proxy {command}: {}", answer.text);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fasp-proxy {command}: {e}");
            ExitCode::FAILURE
        }
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
    let metrics_listener = match config.server.metrics_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            format!(
                "metrics: cannot listen on {addr} (<metrics_bind_address>, <metrics_port>): {e}"
            )
        })?),
        None => None,
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
    // SIGHUP (`systemctl reload`, `kill -HUP`) reloads the configuration, as
    // `fasp-proxy reload` does through the control socket.
    let (reload_sender, reload_requests) = daemon::reload::channel();
    let mut hangup = signal(SignalKind::hangup()).map_err(|e| format!("SIGHUP handler: {e}"))?;
    let on_hangup = reload_sender.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let request = daemon::reload::ReloadRequest {
                requested_by: "SIGHUP".to_string(),
                reply: None,
            };
            if on_hangup.try_send(request).is_err() {
                log::warn!("SIGHUP: a reload is already waiting; this one is dropped");
            }
        }
    });
    let setup = daemon::Setup {
        config,
        forwarder,
        ssh_listener,
        api,
        control_listener: Some(control_listener),
        metrics_listener,
        handoff_listener,
        backend_known_hosts: daemon::backend_known_hosts(config_path),
        penalties: std::sync::Arc::new(std::sync::Mutex::new(penalties)),
        reload: Some(daemon::reload::ReloadSetup {
            path: config_path.to_path_buf(),
            requests: reload_requests,
            sender: reload_sender,
        }),
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
    if let Err(e) = daemon::reload::check_runnable(&config, config_path) {
        eprintln!("fasp-proxy: {e}");
        return None;
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

/// `trust-host`: the keys `target` offers, checked against the known_hosts file beside the
/// configuration, printed, and recorded after confirmation (or `yes`).
fn trust_host(
    config_path: &Path,
    target: &str,
    yes: bool,
    replace: bool,
    timeout: u64,
) -> ExitCode {
    use fasp_proxy::ssh::trust::{self, KnownHosts, Verdict};
    let fail = |e: String| {
        eprintln!("fasp-proxy trust-host: {e}");
        ExitCode::FAILURE
    };
    // `[2001:db8::10]` without a port is port 22 too.
    let bare = target
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(target);
    let addr = match config::values::host_port(bare, 22) {
        Ok(a) => a,
        Err(e) => {
            return fail(format!(
                "{e}: the server as <host> names it, an IP address (host names are not accepted)"
            ))
        }
    };
    let path = daemon::backend_known_hosts(config_path);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    let scanned = runtime.block_on(fasp_proxy::ssh::client::scan(
        addr,
        std::time::Duration::from_secs(timeout.max(1)),
    ));
    let keys = match scanned {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()),
    };
    let mut known = match KnownHosts::read(&path) {
        Ok(k) => k,
        Err(e) => return fail(e.to_string()),
    };
    let name = trust::known_name(&addr.ip().to_string(), addr.port());
    println!(
        "{addr} offers {} host key{}:",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    );
    let mut to_record = Vec::new();
    let (mut differs, mut revoked) = (false, false);
    for key in &keys {
        let verdict = known.check(&name, key);
        let status = match &verdict {
            Verdict::Known => "recorded already".to_string(),
            Verdict::Unknown => "new".to_string(),
            Verdict::Changed { line, recorded } => {
                differs = true;
                format!(
                    "DIFFERS from the {} key recorded at line {line}: {}",
                    trust::kind(recorded),
                    trust::fingerprint(recorded)
                )
            }
            Verdict::Revoked { line } => {
                revoked = true;
                format!("marked @revoked at line {line}")
            }
        };
        println!("  {}  ({status})", trust::describe(key, &name));
        if verdict != Verdict::Known {
            to_record.push(key);
        }
    }
    if to_record.is_empty() {
        println!(
            "{name}: every key is in {} already; nothing to do",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    if revoked {
        return fail(format!(
            "nothing recorded in {}: the server offers a key marked @revoked there",
            path.display()
        ));
    }
    if differs && !replace {
        return fail(format!(
            "nothing recorded in {}: a key differs from the one recorded for {name}; if the \
             server's key was changed on purpose, rerun with --replace",
            path.display()
        ));
    }
    if !yes {
        let question = format!(
            "Record {} for {name} in {}? [y/N] ",
            if to_record.len() == 1 {
                "this key".to_string()
            } else {
                format!("these {} keys", to_record.len())
            },
            path.display()
        );
        match confirm(&question) {
            Ok(true) => {}
            Ok(false) => return fail("nothing recorded".to_string()),
            Err(e) => return fail(e),
        }
    }
    for key in to_record {
        match known.record(&name, key, replace) {
            Ok(trust::Recording::Replaced(lines)) => println!(
                "replaced the {} key of {name} (line{} {})",
                trust::kind(key),
                if lines.len() == 1 { "" } else { "s" },
                lines
                    .iter()
                    .map(|l| l.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ok(_) => {}
            Err(e) => return fail(e.to_string()),
        }
    }
    if let Err(e) = known.write() {
        return fail(e.to_string());
    }
    println!("recorded in {}", path.display());
    ExitCode::SUCCESS
}

/// Asks `question` on the terminal: true for y or yes. Without a terminal on stdin, an error
/// that says to use --yes.
fn confirm(question: &str) -> Result<bool, String> {
    use std::io::{BufRead, IsTerminal, Write};
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "stdin is not a terminal, so nothing can be asked: check the fingerprints and rerun \
             with --yes"
                .to_string(),
        );
    }
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
