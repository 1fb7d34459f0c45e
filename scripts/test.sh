#!/usr/bin/env bash
# The project's test command. Run as root:   sudo ./scripts/test.sh
#
# Installs the system packages the integration tests need (only if missing), then runs
# formatting, lint and the full test suite. The integration tests build network namespaces,
# which needs root; every network change they make happens inside namespaces they create.
set -euo pipefail

# System packages the tests need. Extend this list when a test needs another tool.
# (procps provides `sysctl`, which the namespace lab runs inside its namespaces; systemd and
# systemd-container provide the systemd and systemd-nspawn that tests/systemd.rs boots in a
# throw-away container to run systemd/fasp-proxy.service for real; python3 at /usr/bin, which
# every account can run, is the stranger knocking at the hand-off socket in
# tests/openssh_mode.rs; lintian checks the Debian package tests/deb.rs builds with cargo-deb,
# which needs dpkg-dev (dpkg-shlibdeps) and binutils (strip); clang and libbpf-dev build the
# BPF fast path (bpf/fast_path.c, compiled by build.rs), and ethtool turns off checksum
# offload in tests/fast_path.rs so the receiving kernel checks the checksums the program wrote.)
REQUIRED_PACKAGES=(nftables iptables openssh-server openssh-client conntrack iproute2 procps
    systemd systemd-container python3 lintian dpkg-dev binutils clang libbpf-dev ethtool
    python3-prometheus-client) # tests/metrics.rs parses every scrape with it

cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
    echo "test.sh: error: $*" >&2
    exit 1
}

# --- root ---------------------------------------------------------------------------------
if [[ "$(id -u)" -ne 0 ]]; then
    die "must run as root (the integration tests create network namespaces): sudo $0"
fi

# --- system packages (idempotent) ---------------------------------------------------------
command -v dpkg >/dev/null 2>&1 || die "dpkg not found; this script supports Debian/Ubuntu only"
missing=()
for pkg in "${REQUIRED_PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" 2>/dev/null | grep -q '^Status: install ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]} > 0)); then
    echo "==> installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "==> system packages present: ${REQUIRED_PACKAGES[*]}"
fi

# --- IBM's ascp, the real client the interop tests run (idempotent) -----------------------
# PyPI's cos-aspera wheel carries IBM ascp 3.9 for Linux x86-64 with a client licence. It is
# fetched once into a cache outside the repository (never committed), checked against its
# SHA-256, unpacked, and named to the tests by FASP_PROXY_IBM_ASCP_DIR. The tests use it as a
# black box: they run it and watch what it sends and prints.
IBM_WHEEL_VERSION=0.1.163682
IBM_WHEEL_SHA256=0a4394d03972ce469e6e7295b797e882535f18e46fdc7b52ed73f5d9442aa191
IBM_CACHE=${FASP_PROXY_TEST_CACHE:-/var/cache/fasp-proxy-tests}/cos-aspera-${IBM_WHEEL_VERSION}
IBM_ASCP_DIR="$IBM_CACHE/cos_aspera-${IBM_WHEEL_VERSION}.data/purelib/cos_aspera"
if [[ ! -x "$IBM_ASCP_DIR/ascp" ]]; then
    echo "==> fetching IBM ascp (PyPI cos-aspera ${IBM_WHEEL_VERSION}) into $IBM_CACHE"
    command -v python3 >/dev/null 2>&1 || die "python3 not found (needed to fetch IBM's client wheel)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends python3-pip
    fi
    staging=$(mktemp -d "${IBM_CACHE}.XXXXXX" 2>/dev/null) || {
        mkdir -p "$(dirname "$IBM_CACHE")"
        staging=$(mktemp -d "${IBM_CACHE}.XXXXXX")
    }
    python3 -m pip download -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 \
        --python-version 3.6 -d "$staging" "cos-aspera==${IBM_WHEEL_VERSION}" ||
        { rm -rf "$staging"; die "could not download cos-aspera==${IBM_WHEEL_VERSION} from PyPI"; }
    wheel=("$staging"/cos_aspera-*.whl)
    echo "${IBM_WHEEL_SHA256}  ${wheel[0]}" | sha256sum -c --quiet - ||
        { rm -rf "$staging"; die "cos-aspera wheel checksum mismatch"; }
    python3 -m zipfile -e "${wheel[0]}" "$staging" ||
        { rm -rf "$staging"; die "could not unpack ${wheel[0]}"; }
    rm -f "${wheel[0]}"
    chmod 0755 "$staging/cos_aspera-${IBM_WHEEL_VERSION}.data/purelib/cos_aspera/ascp"
    rm -rf "$IBM_CACHE"
    mv "$staging" "$IBM_CACHE"
else
    echo "==> IBM ascp present: $IBM_ASCP_DIR"
fi
export FASP_PROXY_IBM_ASCP_DIR="$IBM_ASCP_DIR"

# --- cargo --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found in PATH. Install Rust (https://rustup.rs).
       sudo resets PATH (and usually HOME); to use your own toolchain try:
       sudo env \"PATH=\$PATH\" \"RUSTUP_HOME=\$HOME/.rustup\" \"CARGO_HOME=\$HOME/.cargo\" ./scripts/test.sh"
fi

# --- cargo-deb, which tests/deb.rs runs as `cargo deb` (idempotent) ------------------------
# Built once from crates.io into cargo's bin directory (about 2 minutes on 2 cores).
CARGO_DEB_VERSION=3.8.0
if cargo deb --version 2>/dev/null | grep -qx "cargo-deb ${CARGO_DEB_VERSION}"; then
    echo "==> cargo-deb ${CARGO_DEB_VERSION} present"
else
    echo "==> installing cargo-deb ${CARGO_DEB_VERSION}"
    cargo install cargo-deb --locked --version "${CARGO_DEB_VERSION}" ||
        die "could not install cargo-deb ${CARGO_DEB_VERSION} (cargo install cargo-deb --locked)"
fi

# --- checks -------------------------------------------------------------------------------
declare -a names=() results=()
failed=0

step() {
    local name="$1"
    shift
    echo
    echo "==> ${name}: $*"
    local rc=0
    "$@" || rc=$?
    names+=("$name")
    if ((rc == 0)); then
        results+=("PASS")
    else
        results+=("FAIL (exit $rc)")
        failed=1
    fi
}

step "format" cargo fmt --all -- --check
step "clippy" cargo clippy --all-targets -- -D warnings
test_log=$(mktemp)
trap 'rm -f "$test_log"' EXIT
run_tests() {
    # --all-targets: unit, integration and CLI tests, and the benchmarks run once as tests.
    cargo test --all-targets 2>&1 | tee "$test_log"
    return "${PIPESTATUS[0]}"
}
step "tests" run_tests

echo
echo "==================== summary ===================="
for i in "${!names[@]}"; do
    printf '  %-10s %s\n' "${names[$i]}" "${results[$i]}"
done
echo "================================================="
# One plain closing line with the totals over every test binary.
passed_total=$(grep -oE 'test result: [a-zA-Z]+\. [0-9]+ passed' "$test_log" | awk '{s += $4} END {print s + 0}')
failed_total=$(grep -oE '[0-9]+ failed;' "$test_log" | awk '{s += $1} END {print s + 0}')
if ((failed)); then
    echo "RESULT: FAILED"
    echo "${passed_total} passed, ${failed_total} failed"
    exit 1
fi
echo "RESULT: all checks passed"
echo "${passed_total} passed, ${failed_total} failed"
