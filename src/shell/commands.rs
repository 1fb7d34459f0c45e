//! Which command lines aspshell accepts, and which program runs each.
//!
//! A command line is accepted only if it has one of the allowed shapes exactly
//! ([`CommandShape`]: split on single spaces, no shell; `{n}` a number, `{arg}` an argument
//! that never starts with `-`). Three sources of shapes, tried in this order (the first match
//! wins):
//! 1. ours ([`OWN_COMMANDS`]), run from the directory aspshell itself is in;
//! 2. IBM's ([`IBM_COMMANDS`] without `ascmd`, which is ours), only those whose program is
//!    installed in [`IBM_BIN_DIR`], run from there;
//! 3. the configuration's `<aspshell_commands>`: the program is an absolute path, or a name
//!    found in aspshell's directory, then in [`SEARCH_DIRS`].
//!
//! A program is never looked up in the caller's `PATH`.

use std::path::{Path, PathBuf};

use crate::config::command::{CommandShape, IBM_COMMANDS};

/// Our commands: `ascp --server` (what our `ascp` client sends) and IBM's browse command
/// `ascmd`, as aspera-cli sends it (`ascmd` or `ascmd -V2`).
pub const OWN_COMMANDS: &[&str] = &["ascp --server", "ascmd", "ascmd -V2"];

/// Where IBM's software keeps its programs.
pub const IBM_BIN_DIR: &str = "/opt/aspera/bin";

/// Where a configured command given by name is looked for, after aspshell's own directory.
pub const SEARCH_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// Where an allowed command's program comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// One of [`OWN_COMMANDS`], beside aspshell.
    Own,
    /// One of IBM's shapes, in [`IBM_BIN_DIR`].
    Ibm,
    /// A shape from `<aspshell_commands>`.
    Configured,
}

impl Origin {
    /// A word for log lines.
    pub fn label(self) -> &'static str {
        match self {
            Origin::Own => "fasp-proxy",
            Origin::Ibm => "IBM",
            Origin::Configured => "configured",
        }
    }
}

/// One allowed shape and the program it runs.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// The shape a command line must have.
    pub shape: CommandShape,
    /// Where it comes from.
    pub origin: Origin,
    /// The program's path, or why there is none (for the administrator's log line).
    pub program: Result<PathBuf, String>,
}

/// The directories programs are found in: the machine's in [`Places::system`], temporary ones
/// in tests.
#[derive(Debug, Clone)]
pub struct Places {
    /// aspshell's own directory (`None` if it cannot be told).
    pub own_dir: Option<PathBuf>,
    /// IBM's programs ([`IBM_BIN_DIR`]).
    pub ibm_dir: PathBuf,
    /// Searched after `own_dir` for configured commands given by name ([`SEARCH_DIRS`]).
    pub search: Vec<PathBuf>,
}

impl Places {
    /// The real places: the directory of `/proc/self/exe`, [`IBM_BIN_DIR`], [`SEARCH_DIRS`].
    pub fn system() -> Places {
        Places {
            own_dir: std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(Path::to_path_buf)),
            ibm_dir: PathBuf::from(IBM_BIN_DIR),
            search: SEARCH_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Whether `path` is a regular file the calling user may execute.
pub fn is_executable(path: &Path) -> bool {
    path.is_file() && nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok()
}

/// Splits an accepted command line into its words (on single spaces, as the shapes do).
pub fn words(command: &str) -> Vec<&str> {
    command.split(' ').collect()
}

/// Every allowed shape with its program, in the order they are tried.
#[derive(Debug, Clone)]
pub struct Table {
    allowed: Vec<Allowed>,
}

fn parse_all(texts: &[&str]) -> Vec<CommandShape> {
    texts
        .iter()
        .filter_map(|t| CommandShape::parse(t).ok())
        .collect()
}

fn own_program(places: &Places, name: &str) -> Result<PathBuf, String> {
    let dir = places
        .own_dir
        .as_ref()
        .ok_or("aspshell cannot tell which directory it is in (/proc/self/exe)")?;
    let path = dir.join(name);
    if is_executable(&path) {
        Ok(path)
    } else {
        Err(format!(
            "{} is not installed beside aspshell (or is not executable)",
            path.display()
        ))
    }
}

fn configured_program(places: &Places, program: &str) -> Result<PathBuf, String> {
    if program.starts_with('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!("{program} is not an executable file"))
        };
    }
    if program.contains('/') {
        return Err(format!(
            "{program} is neither an absolute path nor a program name"
        ));
    }
    let dirs: Vec<&Path> = places
        .own_dir
        .iter()
        .map(PathBuf::as_path)
        .chain(places.search.iter().map(PathBuf::as_path))
        .collect();
    dirs.iter()
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| {
            let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!("{program} is in none of {}", list.join(", "))
        })
}

impl Table {
    /// A table that allows nothing.
    pub fn empty() -> Table {
        Table {
            allowed: Vec::new(),
        }
    }

    /// Builds the table: ours, IBM's where installed, then `configured`, each with its program
    /// looked up in `places`.
    pub fn build(places: &Places, configured: &[CommandShape]) -> Table {
        let mut allowed = Vec::new();
        for shape in parse_all(OWN_COMMANDS) {
            let program = own_program(places, shape.program());
            allowed.push(Allowed {
                shape,
                origin: Origin::Own,
                program,
            });
        }
        for shape in parse_all(IBM_COMMANDS) {
            let path = places.ibm_dir.join(shape.program());
            if shape.program() == "ascmd" || !is_executable(&path) {
                continue;
            }
            allowed.push(Allowed {
                shape,
                origin: Origin::Ibm,
                program: Ok(path),
            });
        }
        for shape in configured {
            allowed.push(Allowed {
                shape: shape.clone(),
                origin: Origin::Configured,
                program: configured_program(places, shape.program()),
            });
        }
        Table { allowed }
    }

    /// The first allowed shape `command` has, if any.
    pub fn find(&self, command: &str) -> Option<&Allowed> {
        self.allowed.iter().find(|a| a.shape.matches(command))
    }

    /// Every entry, in the order they are tried.
    pub fn entries(&self) -> &[Allowed] {
        &self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn program(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    struct Dirs {
        own: tempfile::TempDir,
        ibm: tempfile::TempDir,
        usr: tempfile::TempDir,
    }

    impl Dirs {
        fn new() -> Dirs {
            Dirs {
                own: tempfile::tempdir().unwrap(),
                ibm: tempfile::tempdir().unwrap(),
                usr: tempfile::tempdir().unwrap(),
            }
        }

        fn places(&self) -> Places {
            Places {
                own_dir: Some(self.own.path().to_path_buf()),
                ibm_dir: self.ibm.path().to_path_buf(),
                search: vec![self.usr.path().to_path_buf()],
            }
        }
    }

    fn shapes(texts: &[&str]) -> Vec<CommandShape> {
        texts
            .iter()
            .map(|t| CommandShape::parse(t).unwrap())
            .collect()
    }

    #[test]
    fn ours_run_from_aspshells_directory_and_only_exact_shapes_pass() {
        let d = Dirs::new();
        let ascp = program(d.own.path(), "ascp", 0o755);
        let ascmd = program(d.own.path(), "ascmd", 0o755);
        let table = Table::build(&d.places(), &[]);
        let run = |c: &str| table.find(c).map(|a| a.program.clone().unwrap());
        assert_eq!(run("ascp --server"), Some(ascp));
        assert_eq!(run("ascmd"), Some(ascmd.clone()));
        assert_eq!(run("ascmd -V2"), Some(ascmd));
        for refused in [
            "",
            " ",
            "id",
            "bash",
            "ascp",
            "ascp --server ",
            " ascp --server",
            "ascp  --server",
            "ascp --server; id",
            "ascp --server;id",
            "ascp --server && id",
            "ascp --server | id",
            "ascp --server > x",
            "ascp --server $(id)",
            "ascp --server `id`",
            "ascp --server\nid",
            "ascp --server\tx",
            "ascp -e id",
            "ascp --server -e id",
            "/bin/sh -c id",
            "ascmd -V1",
            "ascmd -V2 x",
            "scp -t .",
            "/usr/lib/openssh/sftp-server",
            // IBM's shapes need IBM's binaries, which are not installed here.
            "ascp -S. -V1",
            "ascp4 -S.",
            "async -q -S -s-",
        ] {
            assert!(table.find(refused).is_none(), "{refused:?} must be refused");
        }
    }

    #[test]
    fn a_missing_own_program_is_allowed_but_says_why_it_cannot_run() {
        let d = Dirs::new();
        program(d.own.path(), "ascmd", 0o644);
        let table = Table::build(&d.places(), &[]);
        let e = table
            .find("ascp --server")
            .unwrap()
            .program
            .clone()
            .unwrap_err();
        assert!(e.contains("ascp is not installed beside aspshell"), "{e}");
        let e = table.find("ascmd").unwrap().program.clone().unwrap_err();
        assert!(e.contains("not executable"), "{e}");
        let none = Table::build(
            &Places {
                own_dir: None,
                ..d.places()
            },
            &[],
        );
        let e = none
            .find("ascp --server")
            .unwrap()
            .program
            .clone()
            .unwrap_err();
        assert!(e.contains("/proc/self/exe"), "{e}");
    }

    #[test]
    fn ibm_shapes_only_where_ibms_program_is_installed() {
        let d = Dirs::new();
        program(d.own.path(), "ascp", 0o755);
        let ibm_ascp = program(d.ibm.path(), "ascp", 0o755);
        program(d.ibm.path(), "ascp4", 0o644); // not executable: not allowed
        program(d.ibm.path(), "ascmd", 0o755); // ascmd is always ours
        let table = Table::build(&d.places(), &[]);
        let ibm = |c: &str| table.find(c).filter(|a| a.origin == Origin::Ibm).is_some();
        assert!(ibm("ascp -S. -V1"));
        assert!(ibm("ascp --no-mgmt-port-files -M 33001 -S. -V1 x.y"));
        assert!(!ibm("ascp --no-mgmt-port-files -M 33001 -S. -V1 -x"));
        assert!(!ibm("ascp4 -S."));
        assert!(!ibm("async -q -S -s-"));
        assert_eq!(
            table.find("ascp -S. -V1").unwrap().program.clone().unwrap(),
            ibm_ascp
        );
        assert_eq!(table.find("ascmd").unwrap().origin, Origin::Own);
        assert_eq!(table.find("ascp --server").unwrap().origin, Origin::Own);
    }

    #[test]
    fn configured_programs_by_path_or_by_name_never_from_path() {
        let d = Dirs::new();
        let mine = program(d.own.path(), "mytool", 0o755);
        program(d.usr.path(), "mytool", 0o755);
        let other = program(d.usr.path(), "other", 0o755);
        let abs = program(d.ibm.path(), "abs", 0o755);
        let configured = shapes(&[
            "mytool {n}",
            "other {arg}",
            &format!("{} -q", abs.display()),
            "missing",
            "bin/relative",
            // Shadowed: ours come first.
            "ascp --server",
        ]);
        let table = Table::build(&d.places(), &configured);
        let program = |c: &str| table.find(c).unwrap().program.clone();
        assert_eq!(program("mytool 42").unwrap(), mine);
        assert_eq!(program("other a.b").unwrap(), other);
        assert_eq!(program(&format!("{} -q", abs.display())).unwrap(), abs);
        let e = program("missing").unwrap_err();
        assert!(e.contains("missing is in none of"), "{e}");
        assert!(e.contains(&d.usr.path().display().to_string()), "{e}");
        let e = program("bin/relative").unwrap_err();
        assert!(e.contains("neither an absolute path"), "{e}");
        assert_eq!(table.find("ascp --server").unwrap().origin, Origin::Own);
        assert!(table.find("mytool -1").is_none());
        assert!(table.find("other -x").is_none());
        assert!(table.find("other a;b").is_none());
        assert_eq!(table.entries().len(), OWN_COMMANDS.len() + configured.len());
    }

    #[test]
    fn words_split_on_single_spaces() {
        assert_eq!(words("ascp --server"), ["ascp", "--server"]);
        assert_eq!(words("ascmd"), ["ascmd"]);
    }
}
