//! `ascp`'s command line, shaped like IBM's ascp where it matters, turned into a [`Plan`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser, ValueEnum};

use crate::protocol::{Direction, Overwrite, ResumeLevel};
use crate::ssh::client::{ClientConfig, HostKeyPolicy};

/// Fast file transfer over SSH + UDP (the open fasp-proxy protocol).
///
/// Upload:   ascp [options] SRC... [user@]host:DEST
/// Download: ascp [options] [user@]host:SRC... DEST
/// Browse:   ascp [options] --ls|--stat|--mkdir|--rm|--du|--df|--md5sum [user@]host:PATH...
///           ascp [options] --mv [user@]host:FROM TO
#[derive(Parser, Debug, Clone)]
#[command(name = "ascp", version, about, long_about = None, after_help = AFTER_HELP)]
#[command(group(ArgGroup::new("browse").multiple(false).conflicts_with_all(["server", "mode"])))]
pub struct Args {
    /// SSH port of the server (or of the proxy in front of it).
    #[arg(
        short = 'P',
        long = "ssh-port",
        default_value_t = 33001,
        value_name = "PORT"
    )]
    pub ssh_port: u16,
    /// UDP port to ask the server for (0: the server chooses).
    #[arg(
        short = 'O',
        long = "udp-port",
        default_value_t = 0,
        value_name = "PORT"
    )]
    pub udp_port: u16,
    /// Local UDP port (0: any).
    #[arg(long = "client-udp-port", default_value_t = 0, value_name = "PORT")]
    pub client_udp_port: u16,
    /// Private key for SSH (default: ~/.ssh/id_ed25519, then ~/.ssh/id_rsa).
    #[arg(short = 'i', long = "key", value_name = "FILE")]
    pub identity: Vec<PathBuf>,
    /// Target transfer rate, e.g. 500m, 1g, 100k (bits/s; a plain number is Kbps, as in ascp).
    #[arg(
        short = 'l',
        long = "max-rate",
        default_value = "100m",
        value_name = "RATE"
    )]
    pub max_rate: String,
    /// Minimum transfer rate (same units as -l).
    #[arg(
        short = 'm',
        long = "min-rate",
        default_value = "0",
        value_name = "RATE"
    )]
    pub min_rate: String,
    /// Resume: 0 = send whole files, 1 = skip when size and time match, 2 = re-send only
    /// chunks whose checksum differs, 3 = like 2 and verify the whole file.
    #[arg(short = 'k', long = "resume", default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=3), value_name = "LEVEL")]
    pub resume: u8,
    /// Send directories recursively.
    #[arg(short = 'r', long)]
    pub recursive: bool,
    /// Create the destination directory if it does not exist.
    #[arg(short = 'd', long = "create-dir")]
    pub create_dir: bool,
    /// Quiet: no progress lines.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Do not encrypt the data channel (for trusted paths; the SSH channel stays encrypted).
    #[arg(short = 'T', long = "no-encryption")]
    pub no_encryption: bool,
    /// What to do with destination files that exist.
    #[arg(long, value_enum, default_value_t = OverwriteArg::Diff, value_name = "WHEN")]
    pub overwrite: OverwriteArg,
    /// Server (with --mode, instead of user@host: in the paths).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// SSH user (with --host; default: the local user).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// With --host: send (upload) or recv (download).
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<Mode>,
    /// known_hosts file (default ~/.ssh/known_hosts).
    #[arg(long = "known-hosts", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,
    /// Accept and record a server host key that is not in known_hosts yet (a changed key is
    /// always refused).
    #[arg(long = "accept-new-host-key")]
    pub accept_new_host_key: bool,
    /// Command that starts the server side on the remote host.
    #[arg(long = "remote-ascp", default_value = "ascp", value_name = "PATH")]
    pub remote_ascp: String,
    /// Payload bytes per UDP datagram.
    #[arg(long = "datagram-size", default_value_t = 1400, value_parser = clap::value_parser!(u16).range(256..=8192), value_name = "BYTES")]
    pub datagram_size: u16,
    /// Go through a forward proxy: dnat://[user[:password]@]proxy[:9091] (HTTP) or dnats://…[:9092]
    /// (HTTPS). The password may come from ASPERA_PROXY_PASS instead.
    #[arg(long, env = "ASPERA_PROXY", value_name = "URL", hide_env_values = true)]
    pub proxy: Option<String>,
    /// With dnats://: a PEM file of the proxy's certificate (or its CA) to check the chain
    /// against; without it, only the name in the certificate is checked (as IBM's ascp does).
    #[arg(long = "proxy-ca", value_name = "FILE")]
    pub proxy_ca: Option<PathBuf>,
    /// Browse: list remote directories (as `ls -l`; a file: its line).
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub ls: bool,
    /// Browse: one line for each path itself (a directory too).
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub stat: bool,
    /// Browse: create one directory per path (parents must exist).
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub mkdir: bool,
    /// Browse: rename the first path to the second.
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub mv: bool,
    /// Browse: remove files, or directories with everything in them.
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub rm: bool,
    /// Browse: bytes, files and directories beneath each path.
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub du: bool,
    /// Browse: space on the file system of each path (`host:` alone: every one the server shows).
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub df: bool,
    /// Browse: MD5 digest of each remote file.
    #[arg(
        long,
        group = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub md5sum: bool,
    /// Browse: print JSON (one object per line) instead of text.
    #[arg(
        long,
        requires = "browse",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub json: bool,
    /// Browse: the command that starts `ascmd` on the remote host.
    #[arg(
        long = "remote-ascmd",
        default_value = "ascmd",
        value_name = "PATH",
        help_heading = "Browsing (IBM's ascmd on the server)"
    )]
    pub remote_ascmd: String,
    /// Run as the server side (started by sshd; speaks the protocol on stdin/stdout).
    #[arg(long, hide = true)]
    pub server: bool,
    /// Sources, then the destination.
    #[arg(value_name = "SRC... DEST")]
    pub paths: Vec<String>,
}

const AFTER_HELP: &str = "Examples:\n  \
  ascp -P 33001 -i ~/.ssh/id_ed25519 -l 500m big.iso xfer@files.example.com:/incoming/\n  \
  ascp -r -k 2 xfer@files.example.com:/outgoing/dataset ./\n  \
  ascp --host files.example.com --user xfer --mode send -l 1g a.bin b.bin /incoming\n  \
  ascp --ls xfer@files.example.com:/incoming\n  \
  ascp --mv xfer@files.example.com:/incoming/a.bin /archive/a.bin\n  \
  ascp --du --json xfer@files.example.com:/incoming /archive\n\n\
Environment:\n  \
  ASPERA_SCP_PASS    password for a password login, tried after the keys (servers that allow it)\n  \
  ASPERA_PROXY       the forward proxy URL when --proxy is not given\n  \
  ASPERA_PROXY_PASS  the proxy password when the URL has none\n\n\
Exit status 0 only if every file arrived intact (browsing: only if every path succeeded).";

/// `--overwrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverwriteArg {
    /// Replace existing files.
    Always,
    /// Keep existing files.
    Never,
    /// Replace only files that differ.
    Diff,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Upload.
    Send,
    /// Download.
    Recv,
}

/// What the user asked for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Upload or download.
    pub direction: Direction,
    /// The server (or proxy) host, as typed.
    pub host: String,
    /// The SSH user.
    pub user: String,
    /// Upload: local files; download: remote paths.
    pub sources: Vec<String>,
    /// Upload: remote path; download: local path.
    pub destination: String,
    /// Target rate, bits/s.
    pub target_rate: u64,
    /// Minimum rate, bits/s.
    pub min_rate: u64,
    /// `-k`.
    pub resume: ResumeLevel,
    /// `--overwrite`.
    pub overwrite: Overwrite,
}

/// A browse verb (`--ls`, `--mv`...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `--ls`.
    Ls,
    /// `--stat`.
    Stat,
    /// `--mkdir`.
    Mkdir,
    /// `--mv`.
    Mv,
    /// `--rm`.
    Rm,
    /// `--du`.
    Du,
    /// `--df`.
    Df,
    /// `--md5sum`.
    Md5sum,
}

impl Verb {
    /// The option as typed.
    pub fn option(self) -> &'static str {
        match self {
            Verb::Ls => "--ls",
            Verb::Stat => "--stat",
            Verb::Mkdir => "--mkdir",
            Verb::Mv => "--mv",
            Verb::Rm => "--rm",
            Verb::Du => "--du",
            Verb::Df => "--df",
            Verb::Md5sum => "--md5sum",
        }
    }
}

/// A browse request, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsePlan {
    /// What to do.
    pub verb: Verb,
    /// The server (or proxy) host, as typed.
    pub host: String,
    /// The SSH user.
    pub user: String,
    /// Remote paths, as the user sees them (empty: the login directory or docroot, as `.`).
    pub paths: Vec<String>,
}

/// Parses a rate: `100m`, `1g`, `1.5g`, `500k`, `64000b`, or a plain number of Kbps.
pub fn parse_rate(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_lowercase();
    let t = t
        .strip_suffix("bps")
        .or_else(|| t.strip_suffix("bit"))
        .unwrap_or(&t);
    let (number, unit) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&t[..i], &t[i..]),
        None => (t, "k"),
    };
    let factor: f64 = match unit {
        "b" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        other => {
            return Err(format!(
                "rate \"{text}\": unknown unit \"{other}\" (use k, m or g)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("rate \"{text}\" is not a number with an optional k, m or g"))?;
    if !value.is_finite() || value < 0.0 || value * factor > 100e9 {
        return Err(format!("rate \"{text}\" is out of range (0 to 100g)"));
    }
    Ok((value * factor).round() as u64)
}

/// Splits `[user@]host:path` (an IPv6 host in brackets: `user@[2001:db8::1]:path`); `None`
/// when the argument is a local path.
pub fn split_remote(arg: &str) -> Option<(Option<&str>, &str, &str)> {
    // `[user@][v6]:path`
    let (user_part, rest) = match arg.split_once('@') {
        Some((u, r)) if r.starts_with('[') && !u.contains('/') => (Some(u), r),
        _ => (None, arg),
    };
    if let Some(inner) = rest.strip_prefix('[') {
        let (host, after) = inner.split_once(']')?;
        let path = after.strip_prefix(':')?;
        if host.is_empty() || host.contains('/') {
            return None;
        }
        return Some((user_part, host, path));
    }
    // A local path that contains ':' after a '/' (./a:b) is not remote.
    let colon = arg.find(':')?;
    if arg[..colon].contains('/') {
        return None;
    }
    let (before, path) = (&arg[..colon], &arg[colon + 1..]);
    let (user, host) = match before.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, before),
    };
    if host.is_empty() {
        return None;
    }
    Some((user, host, path))
}

/// The local user's home directory (`$HOME`, else `/root`).
pub fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

impl Args {
    /// The browse verb given, if any.
    pub fn verb(&self) -> Option<Verb> {
        [
            (self.ls, Verb::Ls),
            (self.stat, Verb::Stat),
            (self.mkdir, Verb::Mkdir),
            (self.mv, Verb::Mv),
            (self.rm, Verb::Rm),
            (self.du, Verb::Du),
            (self.df, Verb::Df),
            (self.md5sum, Verb::Md5sum),
        ]
        .into_iter()
        .find_map(|(on, v)| on.then_some(v))
    }

    /// Checks a browse request: with `--host`, plain paths; else the first path is
    /// `[user@]host:PATH` and the others plain paths or on the same `user@host`.
    pub fn browse_plan(&self, local_user: &str) -> Result<BrowsePlan, String> {
        let verb = self
            .verb()
            .ok_or_else(|| "no browse verb (--ls, --mv...) given".to_string())?;
        let default_user = self.user.clone().unwrap_or_else(|| local_user.to_string());
        let (host, user, paths) = if let Some(host) = &self.host {
            (host.clone(), default_user, self.paths.clone())
        } else {
            let Some(first) = self.paths.first() else {
                return Err(format!(
                    "{} needs [user@]host:PATH (see ascp --help)",
                    verb.option()
                ));
            };
            let Some((user, host, path)) = split_remote(first) else {
                return Err(format!(
                    "{first}: not a remote path; write [user@]host:PATH (or give --host)"
                ));
            };
            let (user, host) = (user.map(str::to_string), host.to_string());
            let mut paths = vec![path.to_string()];
            for p in &self.paths[1..] {
                match split_remote(p) {
                    Some((u, h, path)) if h == host && u.map(str::to_string) == user => {
                        paths.push(path.to_string())
                    }
                    Some(_) => {
                        return Err(format!(
                            "{p}: every path must be on the first one's user@host"
                        ))
                    }
                    None => paths.push(p.clone()),
                }
            }
            (host, user.unwrap_or(default_user), paths)
        };
        let paths: Vec<String> = paths
            .into_iter()
            .map(|p| {
                if p.is_empty() && verb != Verb::Df {
                    ".".to_string()
                } else {
                    p
                }
            })
            .collect();
        match verb {
            Verb::Mv if paths.len() != 2 => {
                return Err(format!(
                    "--mv takes two paths, FROM and TO ({} given)",
                    paths.len()
                ))
            }
            Verb::Df => {}
            _ if paths.is_empty() => return Err(format!("{} needs a path", verb.option())),
            _ => {}
        }
        Ok(BrowsePlan {
            verb,
            host,
            user,
            paths,
        })
    }

    /// The private keys to try: `-i`, else `~/.ssh/id_ed25519` and `~/.ssh/id_rsa` if present.
    pub fn identities(&self) -> Vec<PathBuf> {
        if !self.identity.is_empty() {
            return self.identity.clone();
        }
        ["id_ed25519", "id_rsa"]
            .iter()
            .map(|n| home().join(".ssh").join(n))
            .filter(|p| p.exists())
            .collect()
    }

    /// How to log in to `host` as `user`, as a transfer does (keys, known_hosts, `-P`,
    /// `ASPERA_SCP_PASS`); `connect_to` when a forward proxy's forwarding carries SSH.
    pub fn ssh_config(
        &self,
        host: &str,
        user: &str,
        timeout: Duration,
        connect_to: Option<SocketAddr>,
    ) -> ClientConfig {
        ClientConfig {
            host: host.to_string(),
            port: self.ssh_port,
            user: user.to_string(),
            identities: self.identities(),
            // As IBM's ascp: the password of a password login comes from the environment, never
            // from the command line (where `ps` would show it).
            password: std::env::var("ASPERA_SCP_PASS")
                .ok()
                .filter(|p| !p.is_empty()),
            known_hosts: self
                .known_hosts
                .clone()
                .unwrap_or_else(|| home().join(".ssh").join("known_hosts")),
            policy: if self.accept_new_host_key {
                HostKeyPolicy::AcceptNew
            } else {
                HostKeyPolicy::Strict
            },
            timeout,
            connect_to,
        }
    }

    /// Checks the arguments and decides direction, host, user and paths.
    pub fn plan(&self, local_user: &str) -> Result<Plan, String> {
        if self.paths.len() < 2 {
            return Err("give at least one source and a destination (see ascp --help)".into());
        }
        let (sources, destination) = self.paths.split_at(self.paths.len() - 1);
        let destination = &destination[0];
        let target_rate = parse_rate(&self.max_rate)?;
        let min_rate = parse_rate(&self.min_rate)?;
        // `-l 0`: no target; the engine's rate control finds what the path takes (docs/protocol.md
        // §8, "no limit").
        if target_rate != 0 && min_rate > target_rate {
            return Err(format!(
                "-m {} is above -l {}",
                self.min_rate, self.max_rate
            ));
        }
        let resume = match self.resume {
            0 => ResumeLevel::None,
            1 => ResumeLevel::Attributes,
            2 => ResumeLevel::SparseChecksum,
            _ => ResumeLevel::FullChecksum,
        };
        let overwrite = match self.overwrite {
            OverwriteArg::Always => Overwrite::Always,
            OverwriteArg::Never => Overwrite::Never,
            OverwriteArg::Diff => Overwrite::Diff,
        };
        let default_user = self.user.clone().unwrap_or_else(|| local_user.to_string());

        let (direction, host, user, sources, destination) = if let Some(host) = &self.host {
            let direction = match self.mode {
                Some(Mode::Send) => Direction::Upload,
                Some(Mode::Recv) => Direction::Download,
                None => return Err("--host needs --mode send or --mode recv".into()),
            };
            (
                direction,
                host.clone(),
                default_user,
                sources.to_vec(),
                destination.clone(),
            )
        } else if let Some((user, host, path)) = split_remote(destination) {
            if let Some(s) = sources.iter().find(|s| split_remote(s).is_some()) {
                return Err(format!(
                    "{s}: both sources and destination are remote; one side must be local"
                ));
            }
            let user = user.map(str::to_string).unwrap_or(default_user);
            (
                Direction::Upload,
                host.to_string(),
                user,
                sources.to_vec(),
                path.to_string(),
            )
        } else {
            let mut host_user: Option<(String, Option<String>)> = None;
            let mut remote_paths = Vec::new();
            for s in sources {
                let Some((user, host, path)) = split_remote(s) else {
                    return Err(format!(
                        "{s}: neither this source nor the destination is remote (user@host:path)"
                    ));
                };
                let this = (host.to_string(), user.map(str::to_string));
                match &host_user {
                    Some(first) if *first != this => {
                        return Err("all remote sources must be on the same user@host".into())
                    }
                    _ => host_user = Some(this),
                }
                remote_paths.push(path.to_string());
            }
            let Some((host, user)) = host_user else {
                return Err("no source given".into());
            };
            (
                Direction::Download,
                host,
                user.unwrap_or(default_user),
                remote_paths,
                destination.clone(),
            )
        };
        if sources.iter().any(String::is_empty)
            || destination.is_empty() && direction == Direction::Download
        {
            return Err("a source or destination path is empty".into());
        }
        Ok(Plan {
            direction,
            host,
            user,
            sources,
            destination,
            target_rate,
            min_rate,
            resume,
            overwrite,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("ascp").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100m"), Ok(100_000_000));
        assert_eq!(parse_rate("1g"), Ok(1_000_000_000));
        assert_eq!(parse_rate("1.5G"), Ok(1_500_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(
            parse_rate("10000"),
            Ok(10_000_000),
            "plain numbers are Kbps"
        );
        assert_eq!(parse_rate("64000b"), Ok(64_000));
        assert_eq!(parse_rate("200mbps"), Ok(200_000_000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("10x").unwrap_err().contains("unknown unit"));
        assert!(parse_rate("-5m").is_err());
        assert!(parse_rate("1000g").is_err());
    }

    #[test]
    fn remote_syntax() {
        assert_eq!(
            split_remote("xfer@host:/in"),
            Some((Some("xfer"), "host", "/in"))
        );
        assert_eq!(split_remote("host:"), Some((None, "host", "")));
        assert_eq!(split_remote("./a:b"), None);
        assert_eq!(split_remote("file"), None);
        assert_eq!(split_remote(":x"), None);
        assert_eq!(
            split_remote("xfer@[2001:db8::1]:/in"),
            Some((Some("xfer"), "2001:db8::1", "/in"))
        );
        assert_eq!(
            split_remote("[2001:db8::1]:/in"),
            Some((None, "2001:db8::1", "/in"))
        );
        assert_eq!(split_remote("[2001:db8::1]/in"), None);
    }

    #[test]
    fn upload_and_download_forms() {
        let p = args(&["-P", "33001", "-l", "1g", "a", "b", "xfer@files:/in/"])
            .plan("me")
            .unwrap();
        assert_eq!(p.direction, Direction::Upload);
        assert_eq!((p.host.as_str(), p.user.as_str()), ("files", "xfer"));
        assert_eq!(p.sources, vec!["a", "b"]);
        assert_eq!(p.destination, "/in/");
        assert_eq!(p.target_rate, 1_000_000_000);

        let p = args(&["-k", "2", "files:/out/a", "files:/out/b", "."])
            .plan("me")
            .unwrap();
        assert_eq!(p.direction, Direction::Download);
        assert_eq!(p.user, "me");
        assert_eq!(p.sources, vec!["/out/a", "/out/b"]);
        assert_eq!(p.resume, ResumeLevel::SparseChecksum);

        let p = args(&[
            "--host", "h", "--user", "u", "--mode", "recv", "/r/x", "/tmp",
        ])
        .plan("me")
        .unwrap();
        assert_eq!(
            (p.direction, p.host.as_str(), p.user.as_str()),
            (Direction::Download, "h", "u")
        );
    }

    #[test]
    fn browse_verbs() {
        let p = args(&["--ls", "xfer@files:/in", "/out", "xfer@files:/x"])
            .browse_plan("me")
            .unwrap();
        assert_eq!(
            p,
            BrowsePlan {
                verb: Verb::Ls,
                host: "files".into(),
                user: "xfer".into(),
                paths: vec!["/in".into(), "/out".into(), "/x".into()]
            }
        );
        let p = args(&["--mv", "files:/a b", "/c"])
            .browse_plan("me")
            .unwrap();
        assert_eq!((p.verb, p.user.as_str()), (Verb::Mv, "me"));
        assert_eq!(p.paths, ["/a b", "/c"]);
        let p = args(&["--df", "files:"]).browse_plan("me").unwrap();
        assert_eq!(p.paths, [""]);
        let p = args(&["--du", "files:"]).browse_plan("me").unwrap();
        assert_eq!(p.paths, ["."]);
        let p = args(&["--host", "h", "--user", "u", "--rm", "/a", "/b"])
            .browse_plan("me")
            .unwrap();
        assert_eq!((p.host.as_str(), p.user.as_str()), ("h", "u"));
        assert_eq!(p.paths, ["/a", "/b"]);
        assert!(args(&["--mv", "h:/a"])
            .browse_plan("me")
            .unwrap_err()
            .contains("two paths"));
        assert!(args(&["--ls", "/local"])
            .browse_plan("me")
            .unwrap_err()
            .contains("not a remote path"));
        assert!(args(&["--ls", "a@h:/x", "b@h:/y"])
            .browse_plan("me")
            .unwrap_err()
            .contains("user@host"));
        assert!(args(&["--ls"]).browse_plan("me").is_err());
        assert!(args(&["a", "h:/"]).browse_plan("me").is_err());
        assert_eq!(args(&["--md5sum", "h:/f"]).verb(), Some(Verb::Md5sum));
        assert_eq!(args(&["a", "h:/"]).verb(), None);
        // One verb at a time; not with the server side or --mode; --json only with one.
        assert!(Args::try_parse_from(["ascp", "--ls", "--rm", "h:/x"]).is_err());
        assert!(Args::try_parse_from(["ascp", "--ls", "--server"]).is_err());
        assert!(Args::try_parse_from(["ascp", "--ls", "--mode", "send", "h:/"]).is_err());
        assert!(Args::try_parse_from(["ascp", "--json", "a", "h:/"]).is_err());
        assert!(Args::try_parse_from(["ascp", "--json", "--du", "h:/"]).is_ok());
    }

    #[test]
    fn refusals() {
        assert!(args(&["onlyone"]).plan("me").is_err());
        assert!(args(&["a", "b"])
            .plan("me")
            .unwrap_err()
            .contains("neither"));
        assert!(args(&["h1:/a", "h2:/b", "."])
            .plan("me")
            .unwrap_err()
            .contains("same user@host"));
        assert!(args(&["h:/a", "h:/b"])
            .plan("me")
            .unwrap_err()
            .contains("both sources and destination are remote"));
        assert!(args(&["--host", "h", "a", "b"])
            .plan("me")
            .unwrap_err()
            .contains("--mode"));
        assert!(args(&["-m", "2g", "-l", "1g", "a", "h:/"])
            .plan("me")
            .unwrap_err()
            .contains("above"));
        assert!(Args::try_parse_from(["ascp", "-k", "4", "a", "h:/"]).is_err());
    }
}
