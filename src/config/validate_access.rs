//! The value checks of `<default>` and `<aaa>`: docroots, users and aspshell's extra commands.
//! IBM tags inside them that fasp-proxy must not ignore (`<show_as>`, `<groups>`, …) are refused
//! by the first pass ([`refused`](super::refused)); what is checked here is fasp-proxy's own.

use std::collections::HashMap;

use super::command::CommandShape;
use super::diagnostic::Pos;
use super::docroot::{DefaultSettings, PathSettings, UserSettings};
use super::raw::{RawAaa, RawCommands, RawDefault, RawFileSystem};
use super::validate::Checker;
use super::values;

/// Programs that would run any other program: an aspshell command shape naming one would undo
/// what aspshell is for.
const COMMAND_RUNNERS: &[&str] = &[
    "sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "busybox", "env", "sudo",
    "su", "doas", "xargs", "nohup", "setsid", "timeout", "nice", "exec", "eval",
];

const USERS: &str = "CONF/aaa/realms/realm/users";

impl Checker {
    /// `<default>`: the docroot of every user and aspshell's extra commands.
    pub(super) fn default_settings(&mut self, raw: &RawDefault) -> DefaultSettings {
        DefaultSettings {
            path: self.path_settings("CONF/default/file_system", &raw.file_system),
            aspshell_commands: self
                .aspshell_commands("CONF/default/aspshell_commands", &raw.aspshell_commands),
        }
    }

    /// `<aaa>…<users>`: each `<user>` with a name, once.
    pub(super) fn users(&mut self, raw: &RawAaa) -> Vec<UserSettings> {
        let mut users: Vec<UserSettings> = Vec::new();
        let mut seen: HashMap<String, Pos> = HashMap::new();
        for (i, user) in raw.realms.realm.users.user.iter().enumerate() {
            let p = format!("{USERS}/user[{}]", i + 1);
            let pos = self.pos(&p).unwrap_or_default();
            let name = match user.name.as_deref().map(str::trim) {
                None => {
                    self.error(
                        &p,
                        "<user> has no <name>: say which user these settings are for",
                    );
                    None
                }
                Some("") => {
                    self.error(
                        &format!("{p}/name"),
                        "<name> is blank: say which user these settings are for",
                    );
                    None
                }
                Some(text) => self.optional(
                    &format!("{p}/name"),
                    &Some(text.to_string()),
                    values::login_name,
                ),
            };
            let path = self.path_settings(&format!("{p}/file_system"), &user.file_system);
            let Some(name) = name else { continue };
            if let Some(first) = seen.get(&name) {
                self.error(
                    &format!("{p}/name"),
                    format!(
                        "user {name} is listed twice; the first <user> is at line {}: merge \
                         the two",
                        first.line
                    ),
                );
                continue;
            }
            seen.insert(name.clone(), pos);
            users.push(UserSettings { name, pos, path });
        }
        users
    }

    /// The `<path>` of a `<file_system>` at `p` (a second one is refused by the first pass).
    fn path_settings(&mut self, p: &str, raw: &RawFileSystem) -> PathSettings {
        let Some(raw) = raw.access.paths.path.first() else {
            return PathSettings::default();
        };
        let p = format!("{p}/access/paths/path");
        PathSettings {
            absolute: self.optional(&format!("{p}/absolute"), &raw.absolute, values::docroot),
            read_allowed: self.optional(
                &format!("{p}/read_allowed"),
                &raw.read_allowed,
                values::boolean,
            ),
            write_allowed: self.optional(
                &format!("{p}/write_allowed"),
                &raw.write_allowed,
                values::boolean,
            ),
            dir_allowed: self.optional(
                &format!("{p}/dir_allowed"),
                &raw.dir_allowed,
                values::boolean,
            ),
        }
    }

    /// `<aspshell_commands>`: each `<command>` a [`CommandShape`] whose program does not run
    /// other programs.
    fn aspshell_commands(&mut self, p: &str, raw: &RawCommands) -> Vec<CommandShape> {
        let mut shapes = Vec::new();
        for (i, text) in raw.command.iter().enumerate() {
            let path = format!("{p}/command[{}]", i + 1);
            match CommandShape::parse(text) {
                Ok(shape) => {
                    let program = shape.program();
                    let base = program.rsplit('/').next().unwrap_or(program);
                    if COMMAND_RUNNERS.contains(&base) {
                        self.error(
                            &path,
                            format!(
                                "<command> \"{shape}\": {program} runs other programs, so \
                                 users could run anything; aspshell is there to prevent that"
                            ),
                        );
                    } else {
                        shapes.push(shape);
                    }
                }
                Err(e) => self.error(&path, format!("<command>: {e}")),
            }
        }
        shapes
    }
}
