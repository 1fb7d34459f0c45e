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
# throw-away container to run systemd/fasp-proxy.service for real.)
REQUIRED_PACKAGES=(nftables iptables openssh-server openssh-client conntrack iproute2 procps
    systemd systemd-container)

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

# --- cargo --------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found in PATH. Install Rust (https://rustup.rs).
       sudo resets PATH (and usually HOME); to use your own toolchain try:
       sudo env \"PATH=\$PATH\" \"RUSTUP_HOME=\$HOME/.rustup\" \"CARGO_HOME=\$HOME/.cargo\" ./scripts/test.sh"
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
