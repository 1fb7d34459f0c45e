//! Writes the [schema](super::schema) out: as the `spec` listing (every option, its default and
//! meaning) and as the commented default `aspera.conf` that `create-config` installs.

use std::fmt::Write;

use super::schema::{Kind, Tag, ROOT};

const COMMENT_COLUMN: usize = 52;

/// Every option with its default value and one-line meaning, in the shape of the file.
pub fn spec() -> String {
    let mut out = String::from(
        "<!-- fasp-proxy aspera.conf options: default values, not the current ones -->\n\
         <!-- IBM's other aspera.conf tags are accepted and ignored (check-config warns), except \
         those that narrow what users reach (<show_as>, <filter>, <restrictions>, <groups>, …), \
         which are refused -->\n",
    );
    spec_tag(&ROOT, 0, &mut out);
    out
}

fn spec_tag(tag: &Tag, depth: usize, out: &mut String) {
    let indent = "  ".repeat(depth);
    let repeat = if tag.repeated { " (repeatable)" } else { "" };
    match tag.kind {
        Kind::Leaf { default, values } => {
            let line = format!("{indent}<{0}>{default}</{0}>", tag.name);
            push_commented(out, &line, &format!("{values}: {}{repeat}", tag.meaning));
        }
        Kind::Section {
            children,
            attributes,
        } => {
            let attrs: String = attributes
                .iter()
                .map(|a| format!(" {}=\"\"", a.name))
                .collect();
            push_commented(
                out,
                &format!("{indent}<{}{attrs}>", tag.name),
                &format!("{}{repeat}", tag.meaning),
            );
            for a in attributes {
                let _ = writeln!(
                    out,
                    "{indent}  <!-- attribute {}: {}: {} -->",
                    a.name, a.values, a.meaning
                );
            }
            for child in children {
                spec_tag(child, depth + 1, out);
            }
            let _ = writeln!(out, "{indent}</{}>", tag.name);
        }
    }
}

fn push_commented(out: &mut String, line: &str, comment: &str) {
    let width = line.chars().count();
    let pad = COMMENT_COLUMN.saturating_sub(width).max(1);
    let _ = writeln!(out, "{line}{}<!-- {comment} -->", " ".repeat(pad));
}

/// The files a default `aspera.conf` names (blank: none).
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultFiles<'a> {
    /// `<ssh_host_key>`.
    pub host_key: &'a str,
    /// `<ssh_host_rsa_key>`.
    pub rsa_host_key: &'a str,
    /// `<https_certificate>`.
    pub https_certificate: &'a str,
    /// `<https_private_key>`.
    pub https_private_key: &'a str,
}

/// A commented default `aspera.conf` naming `files`.
pub fn default_config(files: DefaultFiles<'_>) -> String {
    let mut out = String::from(
        "<?xml version='1.0' encoding='UTF-8'?>\n\
         <!-- fasp-proxy configuration, written by `fasp-proxy create-config`.\n     \
         Every option is shown with its default. Check your changes with\n     \
         `fasp-proxy check-config`; `fasp-proxy spec` lists every option. -->\n",
    );
    default_tag(&ROOT, 0, files, &mut out);
    out
}

fn default_tag(tag: &Tag, depth: usize, files: DefaultFiles<'_>, out: &mut String) {
    let indent = "  ".repeat(depth);
    match tag.kind {
        Kind::Leaf { default, values } => {
            let value = match tag.name {
                "ssh_host_key" => files.host_key,
                "ssh_host_rsa_key" => files.rsa_host_key,
                "https_certificate" if !files.https_certificate.is_empty() => {
                    files.https_certificate
                }
                "https_private_key" if !files.https_private_key.is_empty() => {
                    files.https_private_key
                }
                _ => default,
            };
            let _ = writeln!(out, "{indent}<!-- {} ({values}) -->", tag.meaning);
            let _ = writeln!(out, "{indent}<{0}>{value}</{0}>", tag.name);
        }
        Kind::Section { children, .. } => {
            if depth > 0 {
                let _ = writeln!(out, "{indent}<!-- {} -->", tag.meaning);
            }
            let _ = writeln!(out, "{indent}<{}>", tag.name);
            for child in children {
                // Lists, and the docroot (blank by default), are shown as commented examples.
                if let Some(example) = example(child.name) {
                    let inner = "  ".repeat(depth + 1);
                    let _ = writeln!(out, "{inner}<!-- For example:");
                    for line in example.lines() {
                        let _ = writeln!(out, "{inner}{line}");
                    }
                    let _ = writeln!(out, "{inner}-->");
                } else if !child.repeated {
                    default_tag(child, depth + 1, files, out);
                }
            }
            let _ = writeln!(out, "{indent}</{}>", tag.name);
        }
    }
}

fn example(name: &str) -> Option<&'static str> {
    match name {
        "cidr" => Some("<cidr>192.0.2.0/24</cidr>"),
        "rule" => Some(
            "<rule host_ip=\"192.0.2.10\">\n  \
             <host>198.51.100.10:22</host>\n  \
             <squash_user>xfer</squash_user>\n  \
             <keyfile>/etc/fasp-proxy/keys/id_ed25519</keyfile>\n\
             </rule>\n\
             <rule>\n  \
             <balancing>round_robin</balancing>\n  \
             <hosts>\n    <host>198.51.100.11:22</host>\n    <host>198.51.100.12:22</host>\n  </hosts>\n  \
             <keyfile>/home/$(user)/.ssh/id_ed25519</keyfile>\n\
             </rule>",
        ),
        "path" => Some(
            "<path>\n  <absolute>/data/$(name)</absolute>\n  <read_allowed>true</read_allowed>\n  \
             <write_allowed>true</write_allowed>\n  <dir_allowed>true</dir_allowed>\n</path>",
        ),
        "user" => Some(
            "<user>\n  <name>alice</name>\n  <file_system><access><paths><path>\n    \
             <absolute>/data/shared</absolute>\n    <write_allowed>false</write_allowed>\n  \
             </path></paths></access></file_system>\n</user>",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_str, schema};
    use std::path::Path;

    #[test]
    fn spec_lists_every_tag_and_attribute_with_its_default() {
        let s = spec();
        schema::walk(&ROOT, &mut Vec::new(), &mut |_, tag| {
            assert!(
                s.contains(&format!("<{}", tag.name)),
                "spec misses <{}>",
                tag.name
            );
            for a in tag.attributes() {
                assert!(s.contains(&format!("attribute {}:", a.name)));
            }
        });
        assert!(s.contains("<proxy_port>33001</proxy_port>"));
        assert!(s.contains("<port_range_high>10000</port_range_high>"));
        assert!(s.contains("<faulty_host_hold_time>120</faulty_host_hold_time>"));
    }

    #[test]
    fn default_config_is_valid_and_uses_the_host_key() {
        let text = default_config(DefaultFiles {
            host_key: "/tmp/x/ssh_host_ed25519_key",
            rsa_host_key: "/tmp/x/ssh_host_rsa_key",
            https_certificate: "/tmp/x/api_cert.pem",
            https_private_key: "",
        });
        let loaded = parse_str(&text, Path::new("aspera.conf")).unwrap();
        assert_eq!(
            loaded.config.server.rproxy.ssh_host_key,
            Path::new("/tmp/x/ssh_host_ed25519_key")
        );
        assert_eq!(
            loaded.config.server.rproxy.ssh_host_rsa_key.as_deref(),
            Some(Path::new("/tmp/x/ssh_host_rsa_key"))
        );
        assert!(!loaded.config.server.rproxy.ssh_rsa_legacy);
        assert!(!loaded.config.server.rproxy.enabled);
        assert_eq!(
            loaded.config.server.https_certificate,
            Path::new("/tmp/x/api_cert.pem")
        );
        assert_eq!(
            loaded.config.server.https_private_key,
            Path::new("/etc/fasp-proxy/api_key.pem")
        );
        // The examples inside comments are themselves valid once uncommented.
        let uncommented = text
            .replace("<!-- For example:", "")
            .replace("    -->\n", "\n")
            .replace("      -->\n", "\n")
            .replace("        -->\n", "\n");
        let loaded = parse_str(&uncommented, Path::new("aspera.conf")).unwrap();
        assert_eq!(loaded.config.server.rproxy.rules.len(), 2);
        assert_eq!(loaded.config.server.rproxy.allowed_clients.len(), 1);
        let c = &loaded.config;
        assert_eq!(c.default.path.absolute.as_deref(), Some("/data/$(name)"));
        assert_eq!(c.users.len(), 1);
        let alice = c.docroot_for("alice", Path::new("/home/alice"));
        assert_eq!(
            alice.map(|d| (d.root, d.read_allowed, d.write_allowed)),
            Ok((Some("/data/shared".into()), true, false))
        );
    }
}
