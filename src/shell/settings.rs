//! What aspshell takes from the configuration: the extra command shapes
//! (`<default><aspshell_commands>`), and whether this host is a reverse proxy in the OpenSSH
//! mode (`<rproxy><frontend>` `openssh` or `both`), where transfer commands are handed to the
//! daemon instead of run.
//!
//! aspshell reads only [`config::DEFAULT_CONFIG_PATH`](crate::config::DEFAULT_CONFIG_PATH): no
//! option or environment variable may point it elsewhere, since the caller chooses those. A
//! missing file means no extra shapes; a file that exists but cannot be read or is invalid (or a
//! dangling link) is an error, and aspshell then refuses every command (fail closed).

use std::path::Path;

use crate::config;
use crate::config::command::CommandShape;

/// Configuration errors beyond this many characters are cut in the log line.
const MAX_REASON: usize = 1000;

/// What the configuration tells aspshell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `<default><aspshell_commands>`.
    pub extra: Vec<CommandShape>,
    /// Set on a reverse proxy in the OpenSSH mode: where and what to hand over.
    pub handoff: Option<Handoff>,
}

/// The OpenSSH mode's hand-off, as the daemon reading the same file will accept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    /// `<rproxy><handoff_socket>`.
    pub socket: std::path::PathBuf,
    /// The exact command lines the daemon runs as its own sessions (`ascp --server`).
    pub transfer_commands: Vec<String>,
    /// `<opaque_commands>` (IBM's shapes by default; none with `<opaque_sessions>false`).
    pub opaque_commands: Vec<CommandShape>,
}

impl Handoff {
    /// Whether the daemon would run `command`.
    pub fn accepts(&self, command: &str) -> bool {
        self.transfer_commands.iter().any(|c| c == command)
            || self.opaque_commands.iter().any(|s| s.matches(command))
    }
}

/// Reads the configuration at `path` and returns its extra shapes: none when the file does not
/// exist; an error (naming the file, and the line for an invalid one) when it exists but cannot
/// be read or is not a valid configuration.
pub fn configured_commands(path: &Path) -> Result<Vec<CommandShape>, String> {
    load(path).map(|s| s.extra)
}

/// Reads the configuration at `path`: [`Settings::default`] when the file does not exist; an
/// error (naming the file, and the line for an invalid one) when it exists but cannot be read
/// or is not a valid configuration.
pub fn load(path: &Path) -> Result<Settings, String> {
    let Some(config) = config::load_quiet(path).map_err(|e| one_line(&e))? else {
        return Ok(Settings::default());
    };
    let rproxy = &config.server.rproxy;
    let handoff = (rproxy.enabled && rproxy.frontend.openssh()).then(|| Handoff {
        socket: rproxy.handoff_socket.clone(),
        transfer_commands: vec![crate::session::TRANSFER_COMMAND.to_string()],
        opaque_commands: rproxy.opaque_commands.clone(),
    });
    Ok(Settings {
        extra: config.aspshell_commands().to_vec(),
        handoff,
    })
}

/// `reason` on one line (for the log), its lines joined with `; `, cut after [`MAX_REASON`]
/// characters.
fn one_line(reason: &str) -> String {
    let mut reason = reason.lines().collect::<Vec<_>>().join("; ");
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_means_none_and_broken_means_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aspera.conf");
        assert_eq!(configured_commands(&path), Ok(vec![]));

        std::fs::write(&path, "<CONF version=\"2\"></CONF>\n").unwrap();
        assert_eq!(configured_commands(&path), Ok(vec![]));

        std::fs::write(
            &path,
            "<CONF version=\"2\"><default><aspshell_commands>\
             <command>mytool -q {n}</command></aspshell_commands></default></CONF>\n",
        )
        .unwrap();
        let shapes = configured_commands(&path).unwrap();
        assert_eq!(shapes.len(), 1);
        assert!(shapes[0].matches("mytool -q 7"));

        std::fs::write(&path, "<CONF version=\"2\">\n<server><rproxy>\n").unwrap();
        let e = configured_commands(&path).unwrap_err();
        assert!(e.contains(&format!("{}:", path.display())), "{e}");
        assert!(e.contains("error"), "{e}");

        std::fs::write(&path, b"\xff\xfe").unwrap();
        let e = configured_commands(&path).unwrap_err();
        assert!(e.contains("not UTF-8"), "{e}");

        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let e = configured_commands(&path).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
