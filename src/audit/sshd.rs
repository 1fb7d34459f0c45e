//! What OpenSSH's sshd would apply to a user: `sshd -T -f CONFIG -C user=NAME,host=…,addr=…`
//! prints the effective settings after `Match` blocks; the audit runs it and reads the output
//! rather than parsing `sshd_config` itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many `sshd -T` run at once.
pub const PARALLEL: usize = 4;

/// The connection the settings are asked for (sshd needs a host and an address besides the user).
const CONNECTION: &str = "host=localhost,addr=127.0.0.1";

/// The effective settings `sshd -T` printed: keyword (lower case) to its values, in order (some
/// keywords, such as `subsystem` and `hostkey`, appear more than once).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshdSettings {
    values: BTreeMap<String, Vec<String>>,
}

impl SshdSettings {
    /// Reads `sshd -T` output: `keyword value…` a line.
    pub fn parse(text: &str) -> SshdSettings {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            values
                .entry(key.to_ascii_lowercase())
                .or_default()
                .push(value.trim().to_string());
        }
        SshdSettings { values }
    }

    /// The first value of `key`, if sshd printed it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// Whether `key`'s first value is `value` (case-insensitive).
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key).is_some_and(|v| v.eq_ignore_ascii_case(value))
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.values.get(key).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The comma-separated list of `key` (algorithm lists), empty if absent.
    pub fn list(&self, key: &str) -> Vec<&str> {
        self.get(key)
            .map(|v| v.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    }
}

/// The sshd binary and the configuration it reads.
#[derive(Debug, Clone)]
pub struct Sshd {
    /// The `sshd` program.
    pub binary: PathBuf,
    /// Its configuration file (`-f`).
    pub config: PathBuf,
}

impl Sshd {
    /// Checks that the program and the configuration exist, with a message naming the one that
    /// does not.
    pub fn check(&self) -> Result<(), String> {
        if !self.binary.is_file() {
            return Err(format!(
                "sshd {}: no such program (give its path with --sshd)",
                self.binary.display()
            ));
        }
        std::fs::metadata(&self.config).map_err(|e| {
            format!(
                "sshd configuration {}: cannot read: {e} (give its path with --sshd-config)",
                self.config.display()
            )
        })?;
        Ok(())
    }

    /// The `-C` argument for `user`; Err for a name sshd's test syntax cannot carry.
    pub fn connection_spec(user: &str) -> Result<String, String> {
        if user.is_empty() || user.contains([',', '=']) || user.chars().any(char::is_whitespace) {
            return Err(format!(
                "user name {user:?} cannot be passed to sshd -T -C (it holds ',', '=' or a space)"
            ));
        }
        Ok(format!("user={user},{CONNECTION}"))
    }

    /// The settings sshd applies to `user`.
    pub fn settings_for(&self, user: &str) -> Result<SshdSettings, String> {
        let spec = Self::connection_spec(user)?;
        let output = Command::new(&self.binary)
            .arg("-T")
            .arg("-f")
            .arg(&self.config)
            .arg("-C")
            .arg(&spec)
            .output()
            .map_err(|e| format!("running {}: {e}", self.command_line(&spec)))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(format!(
                "{} failed ({}): {}",
                self.command_line(&spec),
                output.status,
                stderr.trim()
            ));
        }
        Ok(SshdSettings::parse(&String::from_utf8_lossy(
            &output.stdout,
        )))
    }

    /// `check(user, settings)` for each of `users`, in order, with sshd run [`PARALLEL`] at a
    /// time (each output is read, checked and dropped in its worker, so memory stays small);
    /// the first failure stops the rest.
    pub fn check_all<T: Send>(
        &self,
        users: &[&str],
        check: impl Fn(&str, &SshdSettings) -> T + Sync,
    ) -> Result<Vec<T>, String> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Mutex<Vec<Option<Result<T, String>>>> =
            Mutex::new((0..users.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..PARALLEL.min(users.len()) {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(user) = users.get(i) else { break };
                        let result = self.settings_for(user).map(|s| check(user, &s));
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        if let Ok(mut slots) = results.lock() {
                            slots[i] = Some(result);
                        }
                    }
                });
            }
        });
        let slots = results
            .into_inner()
            .map_err(|_| "an sshd -T worker panicked".to_string())?;
        let mut out = Vec::with_capacity(users.len());
        let mut first_error = None;
        for (slot, user) in slots.into_iter().zip(users) {
            match slot {
                Some(Ok(checked)) => out.push(checked),
                Some(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                None => {
                    first_error.get_or_insert(format!("sshd -T was not run for user {user}"));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    fn command_line(&self, spec: &str) -> String {
        format!(
            "{} -T -f {} -C {spec}",
            self.binary.display(),
            self.config.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sshd_t_output() {
        let s = SshdSettings::parse(
            "port 22\nallowtcpforwarding yes\nsubsystem sftp internal-sftp\n\
             subsystem other /bin/x -a\nmacs hmac-sha2-256,hmac-sha1\nacceptenv LANG\nacceptenv LC_*\n",
        );
        assert_eq!(s.get("port"), Some("22"));
        assert!(s.is("allowtcpforwarding", "YES"));
        assert_eq!(
            s.all("subsystem"),
            ["sftp internal-sftp", "other /bin/x -a"]
        );
        assert_eq!(s.list("macs"), ["hmac-sha2-256", "hmac-sha1"]);
        assert_eq!(s.get("nothere"), None);
        assert!(s.list("nothere").is_empty());
    }

    #[test]
    fn connection_specs() {
        assert_eq!(
            Sshd::connection_spec("alice").unwrap(),
            "user=alice,host=localhost,addr=127.0.0.1"
        );
        for bad in ["", "a,b", "a=b", "a b"] {
            assert!(Sshd::connection_spec(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn missing_program_or_configuration_is_named() {
        let sshd = Sshd {
            binary: "/nonexistent/sshd".into(),
            config: "/etc/ssh/sshd_config".into(),
        };
        let e = sshd.check().unwrap_err();
        assert!(
            e.contains("/nonexistent/sshd") && e.contains("--sshd"),
            "{e}"
        );
        let sshd = Sshd {
            binary: "/bin/sh".into(),
            config: "/nonexistent/sshd_config".into(),
        };
        let e = sshd.check().unwrap_err();
        assert!(
            e.contains("/nonexistent/sshd_config") && e.contains("--sshd-config"),
            "{e}"
        );
    }
}
