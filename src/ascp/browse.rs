//! `ascp`'s browse verbs (`--ls`, `--stat`, `--mkdir`, `--mv`, `--rm`, `--du`, `--df`,
//! `--md5sum`): log in as a transfer does, run `ascmd` on the server, print what it answers
//! (text like `ls -l`, or `--json`: one object per line).
//!
//! Exit status 0 when every path succeeded; 1 when the server refused one (its text on
//! stderr, and with `--json` an `error` object on stdout) or the session failed; 2 for a bad
//! command line.

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use super::cli::{Args, BrowsePlan, Verb};
use super::client::{
    forwarded_udp_port, local_user, run_planned, spawn_keepalive, CONNECT_TIMEOUT,
};
use super::proxy::{ProxyClient, ProxyUrl};
use crate::browse::client::{CallError, Listing, Remote, Session};
use crate::browse::stat::time_text;
use crate::browse::wire::{Mount, Size, Stat};

/// Runs the browse verb `args` names; returns the exit status.
pub fn run(args: &Args) -> i32 {
    let local_user = local_user();
    run_planned(args.browse_plan(&local_user), |plan| {
        connect_and_run(args, plan, &local_user)
    })
}

fn connect_and_run(args: &Args, plan: &BrowsePlan, local_user: &str) -> Result<bool, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    // Through a forward proxy: one forwarding for the SSH connection, closed at the end.
    let forwarding = match &args.proxy {
        Some(url) => {
            let url = ProxyUrl::parse(url, local_user, std::env::var("ASPERA_PROXY_PASS").ok())?;
            let proxy = ProxyClient::new(url, args.proxy_ca.as_deref())?;
            let udp_port = forwarded_udp_port(args);
            let opened = runtime.block_on(proxy.open(&plan.host, args.ssh_port, udp_port))?;
            let keepalive = spawn_keepalive(&runtime, &proxy, &opened);
            Some((proxy, opened, keepalive))
        }
        None => None,
    };
    let connect_to = forwarding.as_ref().map(|(_, o, _)| o.tcp);
    let config = args.ssh_config(&plan.host, &plan.user, CONNECT_TIMEOUT, connect_to);
    let result = Remote::connect(&runtime, &config, &args.remote_ascmd, false).map(|mut remote| {
        let stdout = io::stdout();
        let mut out = stdout.lock();
        let ok = execute(&mut remote.session, plan, args.json, &mut out);
        let ended = remote.close(&runtime);
        if !ended.stderr.is_empty() {
            eprintln!("ascp: the server said: {}", ended.stderr);
        }
        ok
    });
    if let Some((proxy, opened, keepalive)) = forwarding {
        keepalive.abort();
        if let Err(e) = runtime.block_on(proxy.close(opened.id)) {
            eprintln!("ascp: {e}");
        }
    }
    result
}

/// Runs the plan's verb on every path of the session, printing to `out`; false if any path
/// failed. A broken session stops at once.
pub fn execute<R: io::Read, W: io::Write>(
    s: &mut Session<R, W>,
    plan: &BrowsePlan,
    json: bool,
    out: &mut impl Write,
) -> bool {
    let mut printer = Printer { json, out };
    let verb = plan.verb;
    let mut ok = true;
    let targets: Vec<Option<&str>> = match verb {
        Verb::Mv => vec![None],
        Verb::Df if plan.paths.iter().all(String::is_empty) => vec![None],
        _ => plan.paths.iter().map(|p| Some(p.as_str())).collect(),
    };
    let several = targets.len() > 1;
    for (i, target) in targets.into_iter().enumerate() {
        let path = target.unwrap_or_default();
        let result = match verb {
            Verb::Ls => s
                .ls(path, &[])
                .map(|l| printer.listing(path, l, several, i)),
            Verb::Stat => s.stat(path).map(|st| printer.stat(path, st)),
            Verb::Mkdir => s.mkdir(path).map(|()| printer.success(path)),
            Verb::Rm => s.rm(path).map(|()| printer.success(path)),
            Verb::Mv => {
                let (from, to) = (&plan.paths[0], &plan.paths[1]);
                s.mv(from, to).map(|()| printer.success(from))
            }
            Verb::Du => s.du(path).map(|size| printer.size(path, &size)),
            Verb::Df => s.df(target).map(|m| printer.mounts(target, &m)),
            Verb::Md5sum => s.md5sum(path).map(|h| printer.md5(path, &h)),
        };
        let shown = if verb == Verb::Mv {
            format!("{} {}", plan.paths[0], plan.paths[1])
        } else {
            path.to_string()
        };
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                eprintln!("ascp: writing the output: {e}");
                return false;
            }
            Err(CallError::Server(e)) => {
                ok = false;
                eprintln!("ascp: {} {shown}: {}", verb.option(), e.errstr);
                if json {
                    let line =
                        json!({"path": shown, "error": {"errno": e.errno, "errstr": e.errstr}});
                    let _ = writeln!(printer.out, "{line}");
                }
            }
            Err(e) => {
                eprintln!("ascp: {} {shown}: {e}", verb.option());
                return false;
            }
        }
    }
    ok
}

/// Text or JSON lines.
struct Printer<'a, W: Write> {
    json: bool,
    out: &'a mut W,
}

/// A file type word from `st_mode`.
fn kind(mode: Option<u32>) -> &'static str {
    match mode.map(|m| m & libc::S_IFMT) {
        Some(libc::S_IFDIR) => "directory",
        Some(libc::S_IFREG) => "file",
        Some(libc::S_IFLNK) => "link",
        Some(_) => "other",
        None => "unknown",
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A stat as a JSON object (the protocol's field names, times as epoch seconds).
pub fn stat_json(s: &Stat) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(lossy(&s.name)));
    m.insert("type".into(), json!(kind(s.mode)));
    let mut put = |k: &str, v: Value| {
        if !v.is_null() {
            m.insert(k.into(), v);
        }
    };
    put("size", json!(s.size));
    put("mode", json!(s.mode));
    put("zmode", json!(s.zmode));
    put("uid", json!(s.uid));
    put("zuid", json!(s.zuid));
    put("gid", json!(s.gid));
    put("zgid", json!(s.zgid));
    put("mtime", json!(s.mtime));
    put("ctime", json!(s.ctime));
    put("atime", json!(s.atime));
    put("symlink", json!(s.symlink.as_deref().map(lossy)));
    put("errno", json!(s.errno));
    put("errstr", json!(s.errstr));
    Value::Object(m)
}

/// Stats as `ls -l` lines, columns aligned: mode, owner, group, size, mtime, name.
pub fn long_lines(entries: &[(String, &Stat)]) -> Vec<String> {
    let w = |f: &dyn Fn(&Stat) -> usize| entries.iter().map(|(_, s)| f(s)).max().unwrap_or(0);
    let uw = w(&|s| s.zuid.as_deref().map_or(1, str::len));
    let gw = w(&|s| s.zgid.as_deref().map_or(1, str::len));
    let sw = w(&|s| s.size.map_or(1, |n| n.to_string().len()));
    entries
        .iter()
        .map(|(name, s)| {
            if let Some(err) = &s.errstr {
                return format!("??????????  {name}: {err}");
            }
            let when = s.mtime.map_or_else(
                || "????-??-?? ??:??".to_string(),
                |t| time_text(t)[..16].to_string(),
            );
            let mut line = format!(
                "{} {:<uw$} {:<gw$} {:>sw$} {when} {name}",
                s.zmode.as_deref().unwrap_or("??????????"),
                s.zuid.as_deref().unwrap_or("?"),
                s.zgid.as_deref().unwrap_or("?"),
                s.size.map_or("?".to_string(), |n| n.to_string()),
            );
            if let Some(t) = &s.symlink {
                line.push_str(" -> ");
                line.push_str(&lossy(t));
            }
            line
        })
        .collect()
}

/// Bytes in 1024-based units with one decimal (`512`, `1.5K`, `9.8G`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

impl<W: Write> Printer<'_, W> {
    fn line(&mut self, v: Value) -> io::Result<()> {
        writeln!(self.out, "{v}")
    }

    fn listing(&mut self, path: &str, l: Listing, several: bool, i: usize) -> io::Result<()> {
        let mut entries = match l {
            Listing::File(mut s) => {
                s.name = path.as_bytes().to_vec();
                vec![s]
            }
            Listing::Dir(e) => e,
        };
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        if self.json {
            let list: Vec<Value> = entries.iter().map(stat_json).collect();
            return self.line(json!({"path": path, "entries": list}));
        }
        if several {
            if i > 0 {
                writeln!(self.out)?;
            }
            writeln!(self.out, "{path}:")?;
        }
        let named: Vec<(String, &Stat)> = entries.iter().map(|s| (lossy(&s.name), s)).collect();
        for l in long_lines(&named) {
            writeln!(self.out, "{l}")?;
        }
        Ok(())
    }

    fn stat(&mut self, path: &str, s: Option<Stat>) -> io::Result<()> {
        match (s, self.json) {
            (Some(s), true) => {
                let mut v = stat_json(&s);
                v["path"] = json!(path);
                self.line(v)
            }
            (Some(s), false) => {
                let lines = long_lines(&[(path.to_string(), &s)]);
                writeln!(self.out, "{}", lines.join("\n"))
            }
            // The docroot itself: its parent cannot be listed, only its type is known.
            (None, true) => self.line(json!({"path": path, "type": "directory"})),
            (None, false) => writeln!(self.out, "{path}: directory"),
        }
    }

    fn success(&mut self, path: &str) -> io::Result<()> {
        if self.json {
            return self.line(json!({"path": path, "result": "success"}));
        }
        Ok(())
    }

    fn size(&mut self, path: &str, s: &Size) -> io::Result<()> {
        if self.json {
            return self.line(json!({
                "path": path, "size": s.size, "fcount": s.fcount, "dcount": s.dcount,
                "failed_fcount": s.failed_fcount, "failed_dcount": s.failed_dcount,
            }));
        }
        let mut line = format!(
            "{}\t{path}\t({} files, {} directories",
            s.size, s.fcount, s.dcount
        );
        if s.failed_fcount + s.failed_dcount > 0 {
            line.push_str(&format!(
                ", {} files and {} directories unreadable",
                s.failed_fcount, s.failed_dcount
            ));
        }
        line.push(')');
        writeln!(self.out, "{line}")
    }

    fn mounts(&mut self, path: Option<&str>, mounts: &[Mount]) -> io::Result<()> {
        if self.json {
            let list: Vec<Value> = mounts
                .iter()
                .map(|m| {
                    let mut v = json!({
                        "fs": m.fs, "dir": m.dir.as_deref().map(lossy), "type": m.is_a,
                        "total": m.total, "used": m.used, "free": m.free, "fcount": m.fcount,
                    });
                    if let Some(e) = &m.errstr {
                        v["errno"] = json!(m.errno);
                        v["errstr"] = json!(e);
                    }
                    v
                })
                .collect();
            let mut v = json!({"mounts": list});
            if let Some(p) = path {
                v["path"] = json!(p);
            }
            return self.line(v);
        }
        let rows: Vec<[String; 7]> = mounts
            .iter()
            .map(|m| {
                let size = |v: Option<u64>| v.map_or("-".to_string(), human);
                let pct = match (m.used, m.total) {
                    (Some(u), Some(t)) if t > 0 => format!("{}%", (u * 100).div_ceil(t)),
                    _ => "-".into(),
                };
                let dir = m.dir.as_deref().map(lossy).unwrap_or_default();
                let dir = match &m.errstr {
                    Some(e) => format!("{dir} ({e})"),
                    None => dir,
                };
                [
                    m.fs.clone(),
                    m.is_a.clone().unwrap_or_default(),
                    size(m.total),
                    size(m.used),
                    size(m.free),
                    pct,
                    dir,
                ]
            })
            .collect();
        let head = [
            "Filesystem",
            "Type",
            "Size",
            "Used",
            "Avail",
            "Use%",
            "Mounted on",
        ];
        let mut widths = head.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let fmt = |cells: [&str; 7]| {
            format!(
                "{:<w0$} {:<w1$} {:>w2$} {:>w3$} {:>w4$} {:>w5$} {}",
                cells[0],
                cells[1],
                cells[2],
                cells[3],
                cells[4],
                cells[5],
                cells[6],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2],
                w3 = widths[3],
                w4 = widths[4],
                w5 = widths[5],
            )
        };
        writeln!(self.out, "{}", fmt(head).trim_end())?;
        for r in &rows {
            let cells = [
                r[0].as_str(),
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[5].as_str(),
                r[6].as_str(),
            ];
            writeln!(self.out, "{}", fmt(cells).trim_end())?;
        }
        Ok(())
    }

    fn md5(&mut self, path: &str, hex: &str) -> io::Result<()> {
        if self.json {
            return self.line(json!({"path": path, "md5sum": hex}));
        }
        writeln!(self.out, "{hex}  {path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(name: &str, mode: u32, size: u64, user: &str) -> Stat {
        Stat {
            name: name.as_bytes().to_vec(),
            size: Some(size),
            mode: Some(mode),
            zmode: Some(crate::browse::stat::zmode(mode)),
            zuid: Some(user.into()),
            zgid: Some("users".into()),
            mtime: Some(1_743_413_253),
            ..Stat::default()
        }
    }

    #[test]
    fn long_lines_align_like_ls() {
        let a = st("a", libc::S_IFDIR | 0o755, 4096, "alice");
        let mut b = st("b", libc::S_IFLNK | 0o777, 1, "bo");
        b.symlink = Some(b"a".to_vec());
        let failed = Stat {
            name: b"c".to_vec(),
            errstr: Some("Permission denied".into()),
            ..Stat::default()
        };
        let lines = long_lines(&[("a".into(), &a), ("b".into(), &b), ("c".into(), &failed)]);
        assert_eq!(
            lines,
            [
                "drwxr-xr-x alice users 4096 2025-03-31 09:27 a",
                "lrwxrwxrwx bo    users    1 2025-03-31 09:27 b -> a",
                "??????????  c: Permission denied",
            ]
        );
        let v = stat_json(&b);
        assert_eq!(v["type"], "link");
        assert_eq!(v["symlink"], "a");
        assert_eq!(v["mtime"], 1_743_413_253u64);
        assert!(v.get("errno").is_none());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(0), "0");
        assert_eq!(human(1023), "1023");
        assert_eq!(human(1536), "1.5K");
        assert_eq!(human(10 * 1024 * 1024 * 1024), "10.0G");
    }
}
