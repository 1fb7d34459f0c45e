//! `create-config`: writes a default `aspera.conf`, fresh SSH host keys (Ed25519, and
//! RSA-3072 for clients that know no other kind) and a self-signed certificate for the forward
//! proxy's HTTPS API (with this host's addresses as IP SANs), never overwriting anything.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ssh_key::private::RsaKeypair;
use ssh_key::{LineEnding, PrivateKey};

use super::render;

/// File name of the configuration written by [`create`].
pub const CONFIG_FILE: &str = "aspera.conf";
/// File name of the SSH host private key written by [`create`].
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
/// File name of the RSA SSH host private key written by [`create`].
pub const RSA_HOST_KEY_FILE: &str = "ssh_host_rsa_key";
/// File name of the HTTPS API's certificate written by [`create`].
pub const API_CERT_FILE: &str = "api_cert.pem";
/// File name of the HTTPS API's private key written by [`create`].
pub const API_KEY_FILE: &str = "api_key.pem";
/// Size of the RSA host key, bits.
pub const RSA_HOST_KEY_BITS: usize = 3072;

/// Why `create-config` refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// Some target files already exist; nothing was written.
    #[error("refusing to overwrite existing file(s): {}; nothing was changed", list(.0))]
    Exists(Vec<PathBuf>),
    /// The directory could not be made or a file could not be written; what was written is removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The host key could not be generated.
    #[error("generating the SSH host key: {0}")]
    Key(#[from] ssh_key::Error),
    /// The API certificate could not be generated.
    #[error("generating the HTTPS API certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

fn list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The files written by [`create`].
#[derive(Debug)]
pub struct Created {
    /// The configuration file.
    pub config: PathBuf,
    /// The private host key (mode 0600).
    pub host_key: PathBuf,
    /// The public host key.
    pub host_key_pub: PathBuf,
    /// The host key's SHA-256 fingerprint, for clients to verify.
    pub fingerprint: String,
    /// The RSA private host key (mode 0600).
    pub rsa_host_key: PathBuf,
    /// The RSA public host key.
    pub rsa_host_key_pub: PathBuf,
    /// The RSA host key's SHA-256 fingerprint.
    pub rsa_fingerprint: String,
    /// The HTTPS API's self-signed certificate.
    pub api_cert: PathBuf,
    /// The HTTPS API's private key (mode 0600).
    pub api_key: PathBuf,
    /// The names and addresses the certificate is valid for.
    pub api_names: Vec<String>,
}

/// Writes `aspera.conf`, `ssh_host_ed25519_key`, `ssh_host_rsa_key` and their `.pub` files,
/// `api_cert.pem` and `api_key.pem` into `dir` (made if missing). The certificate names
/// `api_names` (IP literals become IP SANs, others DNS names).
/// Refuses, writing nothing, if any of them exists; on a write failure removes what it wrote.
pub fn create(dir: &Path, api_names: &[String]) -> Result<Created, CreateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CreateError::Io { path, source }
    };
    let dir = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().map_err(io(dir))?.join(dir)
    };
    let config = dir.join(CONFIG_FILE);
    let host_key = dir.join(HOST_KEY_FILE);
    let host_key_pub = dir.join(format!("{HOST_KEY_FILE}.pub"));
    let rsa_host_key = dir.join(RSA_HOST_KEY_FILE);
    let rsa_host_key_pub = dir.join(format!("{RSA_HOST_KEY_FILE}.pub"));
    let api_cert = dir.join(API_CERT_FILE);
    let api_key = dir.join(API_KEY_FILE);
    refuse_existing(&[
        &config,
        &host_key,
        &host_key_pub,
        &rsa_host_key,
        &rsa_host_key_pub,
        &api_cert,
        &api_key,
    ])?;

    let key = PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)?;
    let private = key.to_openssh(LineEnding::LF)?;
    let public = key.public_key().to_openssh()?;
    let fingerprint = key.public_key().fingerprint(Default::default()).to_string();
    let rsa = PrivateKey::from(RsaKeypair::random(
        &mut rand_core::OsRng,
        RSA_HOST_KEY_BITS,
    )?);
    let rsa_private = rsa.to_openssh(LineEnding::LF)?;
    let rsa_public = rsa.public_key().to_openssh()?;
    let rsa_fingerprint = rsa.public_key().fingerprint(Default::default()).to_string();
    let (cert_pem, key_pem) = self_signed(api_names)?;
    let config_text = render::default_config(render::DefaultFiles {
        host_key: &host_key.to_string_lossy(),
        rsa_host_key: &rsa_host_key.to_string_lossy(),
        https_certificate: &api_cert.to_string_lossy(),
        https_private_key: &api_key.to_string_lossy(),
    });
    let public_text = format!("{public} fasp-proxy\n");
    let rsa_public_text = format!("{rsa_public} fasp-proxy\n");

    fs::create_dir_all(&dir).map_err(io(&dir))?;
    write_all_new(&[
        (&host_key, private.as_bytes(), 0o600),
        (&host_key_pub, public_text.as_bytes(), 0o644),
        (&rsa_host_key, rsa_private.as_bytes(), 0o600),
        (&rsa_host_key_pub, rsa_public_text.as_bytes(), 0o644),
        (&api_key, key_pem.as_bytes(), 0o600),
        (&api_cert, cert_pem.as_bytes(), 0o644),
        (&config, config_text.as_bytes(), 0o644),
    ])?;
    Ok(Created {
        config,
        host_key,
        host_key_pub,
        fingerprint,
        rsa_host_key,
        rsa_host_key_pub,
        rsa_fingerprint,
        api_cert,
        api_key,
        api_names: api_names.to_vec(),
    })
}

/// Writes only the HTTPS API's `api_cert.pem` and `api_key.pem` into `dir` (for a
/// configuration made before, or a renewed name list); refuses, writing nothing, if either
/// exists. Returns (certificate, key).
pub fn create_certificate(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf), CreateError> {
    let cert = dir.join(API_CERT_FILE);
    let key = dir.join(API_KEY_FILE);
    refuse_existing(&[&cert, &key])?;
    let (cert_pem, key_pem) = self_signed(names)?;
    fs::create_dir_all(dir).map_err(|source| CreateError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    write_all_new(&[
        (&key, key_pem.as_bytes(), 0o600),
        (&cert, cert_pem.as_bytes(), 0o644),
    ])?;
    Ok((cert, key))
}

/// The names a certificate of this host holds by default: its host name and every address of
/// its interfaces (loopback last).
pub fn default_api_names() -> Vec<String> {
    let mut addrs = super::environment::local_addresses();
    addrs.sort_by_key(|a| (a.is_loopback(), a.is_ipv6(), *a));
    addrs.dedup();
    let mut names: Vec<String> = addrs
        .into_iter()
        .filter(|a| !matches!(a, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80))
        .map(|a| a.to_string())
        .collect();
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(host) = host.to_str().filter(|h| !h.is_empty()) {
            names.push(host.to_string());
        }
    }
    names
}

/// A self-signed ECDSA P-256 certificate for `names` (IP literals as IP SANs, the first name as
/// its common name), with rcgen's default validity (1975 to 4096: IBM's client does not check
/// dates, and the certificate is replaced, not renewed): (certificate PEM, key PEM).
pub fn self_signed(names: &[String]) -> Result<(String, String), CreateError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let cn = names.first().map_or("fasp-proxy", String::as_str);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "fasp-proxy");
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Refuses, with every one named, if any of `paths` exists (also as a dangling symlink).
fn refuse_existing(paths: &[&PathBuf]) -> Result<(), CreateError> {
    let existing: Vec<PathBuf> = paths
        .iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .map(|p| (*p).clone())
        .collect();
    if existing.is_empty() {
        Ok(())
    } else {
        Err(CreateError::Exists(existing))
    }
}

/// Writes every file (path, contents, mode) as new, or none: on a failure, removes what this
/// call created.
fn write_all_new(files: &[(&PathBuf, &[u8], u32)]) -> Result<(), CreateError> {
    let mut written: Vec<&PathBuf> = Vec::new();
    for (path, contents, mode) in files {
        if let Err(e) = write_new(path, contents, *mode) {
            for w in &written {
                let _ = fs::remove_file(w);
            }
            return Err(e);
        }
        written.push(path);
    }
    Ok(())
}

/// Creates `path` (failing if it exists, even if it appeared since the check) and writes it.
fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CreateError> {
    let err = |source| CreateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    if let Err(e) = f.write_all(contents).and_then(|()| f.sync_all()) {
        let _ = fs::remove_file(path);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::Algorithm;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_then_refuses_without_touching_anything() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("etc");
        let created = create(&target, &["192.0.2.1".into(), "proxy.example".into()]).unwrap();
        assert!(created.fingerprint.starts_with("SHA256:"));
        let mode = fs::metadata(&created.host_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = PrivateKey::read_openssh_file(&created.host_key).unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
        let rsa = PrivateKey::read_openssh_file(&created.rsa_host_key).unwrap();
        assert!(matches!(rsa.algorithm(), Algorithm::Rsa { .. }));
        let bits = rsa
            .key_data()
            .rsa()
            .unwrap()
            .public
            .n
            .as_positive_bytes()
            .unwrap()
            .len()
            * 8;
        assert_eq!(bits, RSA_HOST_KEY_BITS);
        let mode = fs::metadata(&created.rsa_host_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mode = fs::metadata(&created.api_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // (tests/forward_api.rs serves HTTPS with a pair made the same way.)
        let pem = fs::read_to_string(&created.api_cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
        let loaded = crate::config::load(&created.config).unwrap();
        assert_eq!(loaded.config.server.https_certificate, created.api_cert);
        assert_eq!(loaded.config.server.https_private_key, created.api_key);
        let before: Vec<Vec<u8>> = [&created.config, &created.host_key, &created.host_key_pub]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();

        let err = create(&target, &[]).unwrap_err();
        assert!(
            matches!(err, CreateError::Exists(ref v) if v.len() == 7),
            "{err}"
        );
        assert!(err.to_string().contains("nothing was changed"));
        let after: Vec<Vec<u8>> = [&created.config, &created.host_key, &created.host_key_pub]
            .iter()
            .map(|p| fs::read(p).unwrap())
            .collect();
        assert_eq!(before, after);
    }

    #[test]
    fn refuses_if_only_one_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(HOST_KEY_FILE), b"old").unwrap();
        let err = create(dir.path(), &[]).unwrap_err();
        assert!(matches!(err, CreateError::Exists(ref v) if v.len() == 1));
        assert!(!dir.path().join(CONFIG_FILE).exists());
        assert_eq!(fs::read(dir.path().join(HOST_KEY_FILE)).unwrap(), b"old");
    }
}
