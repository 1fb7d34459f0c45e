#!/usr/bin/env bash
# The main job, from a fresh clone: build fasp-proxy and check the sample configuration.
# (When the reverse proxy daemon lands, this becomes the full lab demo: a transfer through it.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

command -v cargo >/dev/null 2>&1 || {
    echo "demo.sh: cargo not found in PATH; install Rust (rustup) first" >&2
    exit 1
}

echo "==> building (release)"
cargo build --release --bins
bin=target/release/fasp-proxy

echo
echo "==> $bin check-config etc/aspera.conf"
"$bin" check-config etc/aspera.conf

echo
echo "==> $bin create-config into a scratch directory (then again: it must refuse)"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$bin" create-config --dir "$scratch/etc"
if "$bin" create-config --dir "$scratch/etc" 2>&1; then
    echo "demo.sh: create-config overwrote files" >&2
    exit 1
fi

echo
echo "==> a configuration with a mistake pasted from a PDF is refused with its position:"
sed 's|<keyfile>/etc/fasp-proxy/ssh_keys/id_ed25519</keyfile>|<keyﬁle>/etc/fasp-proxy/ssh_keys/id_ed25519</keyﬁle>|' \
    etc/aspera.conf >"$scratch/bad.conf"
if "$bin" check-config "$scratch/bad.conf"; then
    echo "demo.sh: a bad configuration was accepted" >&2
    exit 1
fi
echo
echo "demo: OK ($bin is ready; install it with: install -m 755 $bin /usr/local/bin/)"
