//! Compiles the BPF fast path (`bpf/fast_path.c`) into `OUT_DIR/fast_path.o` with clang, for
//! `src/dataplane/fast_path` to embed. Needs Debian's `clang` and `libbpf-dev` (the kernel UAPI
//! headers come with `linux-libc-dev`); `scripts/test.sh` and `scripts/install.sh` install them.
//! `CLANG` names another clang.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const SOURCE: &str = "bpf/fast_path.c";
const HINT: &str = "install clang and libbpf-dev (scripts/test.sh does): \
                    apt-get install clang libbpf-dev";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CLANG");

    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(env_var("OUT_DIR")).join("fast_path.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());

    let version = Command::new(&clang).arg("--version").output();
    match version {
        Ok(o) if o.status.success() => {}
        Ok(o) => fail(&format!(
            "`{clang} --version` failed ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!("cannot run `{clang}` ({e})")),
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() && env::var_os("CLANG").is_none() {
        fail("libbpf's /usr/include/bpf/bpf_helpers.h is missing");
    }

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]);
    // The kernel UAPI's <asm/...> headers live in the multiarch directory, which clang does
    // not search for the bpf target.
    if let Some(dir) = multiarch_include(&clang) {
        cmd.arg(format!("-I{}", dir.display()));
    }
    // Reproducible: no build directory in the object's debug info and BTF line info.
    cmd.arg(format!("-fdebug-prefix-map={}=.", manifest_dir.display()));
    cmd.arg("-c")
        .arg(manifest_dir.join(SOURCE))
        .arg("-o")
        .arg(&out);
    let output = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run `{clang}` ({e})")));
    if !output.status.success() {
        fail(&format!(
            "`{cmd:?}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
}

/// `/usr/include/<multiarch>` (e.g. x86_64-linux-gnu) when it exists.
fn multiarch_include(clang: &str) -> Option<PathBuf> {
    let output = Command::new(clang).arg("-print-multiarch").output().ok()?;
    let triple = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let dir = Path::new("/usr/include").join(triple);
    (output.status.success() && dir.join("asm").is_dir()).then_some(dir)
}

fn env_var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(why: &str) -> ! {
    panic!("building the BPF fast path ({SOURCE}): {why}\n{HINT}");
}
