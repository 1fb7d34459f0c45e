//! The client side: SSH to the server (or proxy), start `ascp --server`, handshake, open the
//! UDP path, then send or receive the files with a progress line per file.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use uuid::Uuid;

use super::cli::{Args, Plan};
use super::progress::ProgressLine;
use super::proxy::{ProxyClient, ProxyUrl};
use crate::protocol::frame::write_frame;
use crate::protocol::reader::read_frame;
use crate::protocol::{Direction, Frame, SessionInit, VERSION};
use crate::ssh::client as ssh;
use crate::transfer::{self, Control, Options, Role};

/// Time limit for SSH connect/login and for the protocol handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The server UDP port a forward-proxy forwarding is opened for: `-O`, else the default.
pub(super) fn forwarded_udp_port(args: &Args) -> u16 {
    if args.udp_port == 0 {
        DEFAULT_SERVER_UDP_PORT
    } else {
        args.udp_port
    }
}

/// Sends the forward proxy a keepalive for `opened` at the interval it asked for, until the
/// returned task is aborted.
pub(super) fn spawn_keepalive(
    runtime: &tokio::runtime::Runtime,
    proxy: &ProxyClient,
    opened: &super::proxy::Opened,
) -> tokio::task::JoinHandle<()> {
    let (proxy, id, every) = (proxy.clone(), opened.id, opened.keepalive);
    runtime.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = proxy.keepalive(id).await {
                eprintln!("ascp: {e}");
            }
        }
    })
}

/// Runs a transfer; returns the exit status (0 only if every file arrived intact).
pub fn run(args: &Args) -> i32 {
    let local_user = local_user();
    run_planned(args.plan(&local_user), |plan| transfer_files(args, plan))
}

/// The local user (`$USER`, else root): the remote user when the command line names none.
pub(super) fn local_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// Runs `go` with `plan`; returns the exit status: 2 for a bad command line (`plan` an error),
/// 0 when `go` says everything succeeded, else 1. Errors are printed on stderr.
pub(super) fn run_planned<P>(
    plan: Result<P, String>,
    go: impl FnOnce(&P) -> Result<bool, String>,
) -> i32 {
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ascp: {e}");
            return 2;
        }
    };
    match go(&plan) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("ascp: {e}");
            1
        }
    }
}

fn transfer_files(args: &Args, plan: &Plan) -> Result<bool, String> {
    if plan.direction == Direction::Upload {
        for s in &plan.sources {
            let meta = std::fs::metadata(s).map_err(|e| format!("{s}: {e}"))?;
            if meta.is_dir() && !args.recursive {
                return Err(format!("{s} is a directory; use -r to send directories"));
            }
        }
    } else {
        prepare_local_destination(&plan.destination, args.create_dir, plan.sources.len())?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let local_user = local_user();
    let proxy = match &args.proxy {
        Some(url) => {
            let url = ProxyUrl::parse(url, &local_user, std::env::var("ASPERA_PROXY_PASS").ok())?;
            Some(ProxyClient::new(url, args.proxy_ca.as_deref())?)
        }
        None => None,
    };
    let Some(proxy) = proxy else {
        let server_ip = runtime
            .block_on(resolve(&plan.host, args.ssh_port))
            .map_err(|e| format!("{}: {e}", plan.host))?;
        return ssh_and_transfer(&runtime, args, plan, Route::Direct(server_ip));
    };
    // Through a forward proxy: the server's UDP port is fixed when the forwarding is opened.
    let udp_port = forwarded_udp_port(args);
    let opened = runtime.block_on(proxy.open(&plan.host, args.ssh_port, udp_port))?;
    if !args.quiet {
        eprintln!(
            "ascp: through proxy {}: forwarding {} to {} (ssh {}, udp {})",
            proxy.url(),
            opened.id,
            opened.server,
            opened.tcp,
            opened.udp
        );
    }
    // Keepalives while the transfer runs; on Ctrl-C the forwarding is closed before exiting.
    let keepalive = spawn_keepalive(&runtime, &proxy, &opened);
    let interrupted = {
        let (proxy, id) = (proxy.clone(), opened.id);
        runtime.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if let Err(e) = proxy.close(id).await {
                    eprintln!("ascp: {e}");
                }
                eprintln!("ascp: interrupted");
                std::process::exit(130);
            }
        })
    };
    let result = ssh_and_transfer(
        &runtime,
        args,
        plan,
        Route::Proxied {
            tcp: opened.tcp,
            udp: opened.udp,
            udp_port,
        },
    );
    keepalive.abort();
    interrupted.abort();
    if let Err(e) = runtime.block_on(proxy.close(opened.id)) {
        eprintln!("ascp: {e}");
    }
    result
}

/// How the client reaches the server.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// SSH and UDP straight to the server (or a reverse proxy in front of it).
    Direct(IpAddr),
    /// Through a forward proxy's forwarding: SSH to `tcp`, UDP to `udp`, and the server must
    /// use `udp_port` (the port the forwarding leads to).
    Proxied {
        tcp: SocketAddr,
        udp: SocketAddr,
        udp_port: u16,
    },
}

/// The server's UDP port asked for through a forward proxy when `-O` is not given (the port the
/// forwarding is opened to; IBM's default).
pub const DEFAULT_SERVER_UDP_PORT: u16 = 33001;

fn ssh_and_transfer(
    runtime: &tokio::runtime::Runtime,
    args: &Args,
    plan: &Plan,
    route: Route,
) -> Result<bool, String> {
    let connect_to = match route {
        Route::Direct(_) => None,
        Route::Proxied { tcp, .. } => Some(tcp),
    };
    let config = args.ssh_config(&plan.host, &plan.user, CONNECT_TIMEOUT, connect_to);
    let client = runtime
        .block_on(ssh::connect(&config))
        .map_err(|e| e.to_string())?;
    let command = format!("{} --server", args.remote_ascp);
    let exec = runtime
        .block_on(client.exec(&command))
        .map_err(|e| e.to_string())?;

    let result = session(args, plan, route, exec.stream);
    let outcome = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), exec.outcome).await });
    runtime.block_on(client.close());
    let (status, stderr) = match outcome {
        Ok(Ok(o)) => (o.exit_status, o.stderr),
        _ => (None, Vec::new()),
    };
    let remote_error = String::from_utf8_lossy(&stderr).trim().to_string();
    match result {
        Ok(all_ok) => Ok(all_ok && status.is_none_or(|s| s == 0)),
        Err(e) if !remote_error.is_empty() && e.contains("closed") => {
            Err(format!("{e}; the server said: {remote_error}"))
        }
        Err(e) if e.contains("exited") || e.contains("closed") => Err(format!(
            "{e} (is `{command}` installed on {}? exit status {})",
            plan.host,
            status.map_or_else(|| "unknown".into(), |s| s.to_string())
        )),
        Err(e) => Err(e),
    }
}

async fn resolve(host: &str, port: u16) -> Result<IpAddr, String> {
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve: {e}"))?;
    addrs
        .next()
        .map(|a| a.ip())
        .ok_or_else(|| "resolves to no address".to_string())
}

/// For a download: the destination must be a directory when several sources arrive.
fn prepare_local_destination(dest: &str, create: bool, sources: usize) -> Result<(), String> {
    let path = Path::new(dest);
    if path.is_dir() {
        return Ok(());
    }
    if create {
        return std::fs::create_dir_all(path).map_err(|e| format!("{dest}: cannot create: {e}"));
    }
    if sources > 1 {
        return Err(format!(
            "{dest} is not a directory (several sources; -d creates it)"
        ));
    }
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() && !p.is_dir() => Err(format!(
            "{}: no such directory (-d creates it)",
            p.display()
        )),
        _ => Ok(()),
    }
}

/// The protocol session over the exec'ed command's stdin/stdout.
fn session(
    args: &Args,
    plan: &Plan,
    route: Route,
    stream: std::os::unix::net::UnixStream,
) -> Result<bool, String> {
    let (server_ip, asked_udp_port) = match route {
        Route::Direct(ip) => (ip, args.udp_port),
        Route::Proxied { udp, udp_port, .. } => (udp.ip(), udp_port),
    };
    let unspecified: IpAddr = if server_ip.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind(SocketAddr::new(unspecified, args.client_udp_port))
        .map_err(|e| format!("cannot open UDP port {}: {e}", args.client_udp_port))?;
    let client_udp_port = sock.local_addr().map_err(|e| e.to_string())?.port();
    let (sources, destination) = match plan.direction {
        Direction::Upload => (Vec::new(), plan.destination.clone()),
        Direction::Download => (plan.sources.clone(), String::new()),
    };
    let init = SessionInit {
        min_version: VERSION,
        max_version: VERSION,
        session_id: Uuid::new_v4(),
        requested_host: plan.host.clone(),
        requested_port: args.ssh_port,
        client_udp_port,
        server_udp_port: asked_udp_port,
        direction: plan.direction,
        recursive: args.recursive,
        encrypt: !args.no_encryption,
        resume: plan.resume,
        overwrite: plan.overwrite,
        target_rate: plan.target_rate,
        min_rate: plan.min_rate,
        datagram_size: args.datagram_size,
        sources,
        destination,
    };
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    // Kept to end the channel once the transfer is over (the engine's reader thread may still
    // hold a handle on the socket).
    let closer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = stream;
    write_frame(&mut writer, &Frame::SessionInit(init))
        .map_err(|e| format!("the server closed the connection: {e}"))?;
    reader
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let accept = match read_frame(&mut reader) {
        Ok(Some(Frame::SessionAccept(a))) => a,
        Ok(Some(Frame::Error(e))) => {
            return Err(format!("the server refused the session: {}", e.message))
        }
        Ok(Some(_)) => return Err("the server answered with an unexpected frame".into()),
        Ok(None) => {
            return Err("the server closed the connection before accepting the session".into())
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            return Err(format!(
                "no answer from the server within {}s",
                CONNECT_TIMEOUT.as_secs()
            ))
        }
        // The channel went away with our request unread (the server refused before reading
        // it: over its session cap, say); what it said is on stderr, which the caller adds.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            return Err(format!(
                "the server closed the connection before accepting the session ({e})"
            ))
        }
        Err(e) => return Err(format!("bad answer from the server: {e}")),
    };
    reader.set_read_timeout(None).map_err(|e| e.to_string())?;
    if accept.version != VERSION {
        return Err(format!(
            "the server chose protocol version {}, this ascp speaks {VERSION}",
            accept.version
        ));
    }
    let server = match route {
        Route::Direct(ip) => SocketAddr::new(ip, accept.server_udp_port),
        Route::Proxied { udp, udp_port, .. } => {
            if accept.server_udp_port != udp_port {
                return Err(format!(
                    "the server answered with UDP port {}, but the proxy's forwarding leads to \
                     its port {udp_port} (-O)",
                    accept.server_udp_port
                ));
            }
            udp
        }
    };
    transfer::udp_connect(&sock, server, accept.token, CONNECT_TIMEOUT).map_err(|e| {
        format!("{e} (UDP to {server}: check that the UDP port is open on the firewalls between)")
    })?;
    let opts = Options {
        role: Role::Client,
        token: accept.token,
        key: (!args.no_encryption).then_some(accept.key),
        target_rate: plan.target_rate,
        min_rate: plan.min_rate,
        datagram_size: usize::from(accept.datagram_size),
        resume: plan.resume,
        overwrite: plan.overwrite,
        recursive: args.recursive,
        // The client's own files: no docroot, plain paths as the user typed them.
        root: transfer::Root::unconfined(),
    };
    let control = Control {
        reader: Box::new(reader),
        writer: Box::new(writer),
    };
    let mut line = ProgressLine::new(args.quiet);
    let mut show = |p: &transfer::Progress| line.update(p);
    let report = match plan.direction {
        Direction::Upload => {
            let sources: Vec<PathBuf> = plan.sources.iter().map(PathBuf::from).collect();
            transfer::send(control, sock, server, &sources, &opts, &mut show)
        }
        Direction::Download => transfer::receive(
            control,
            sock,
            server,
            Path::new(&plan.destination),
            &opts,
            &mut show,
        ),
    }
    .map_err(|e| e.to_string());
    let _ = closer.shutdown(std::net::Shutdown::Both);
    let report = report?;
    line.finish();
    if !args.quiet {
        let mut out = std::io::stdout().lock();
        for l in super::progress::summary(&report) {
            let _ = writeln!(out, "{l}");
        }
    }
    for f in report.failures() {
        if let crate::transfer::Outcome::Failed { message, .. } = &f.outcome {
            eprintln!("ascp: {}: {message}", f.path);
        }
    }
    Ok(report.all_intact())
}
