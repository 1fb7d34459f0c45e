#!/usr/bin/env bash
# Installs fasp-proxy on this machine from source (as root). Safe to run again: it updates the
# binaries and the unit, and never overwrites a configuration, host key or PAM file you have.
# On Debian/Ubuntu the package is the other way (`cargo deb`, then `apt install
# ./target/debian/fasp-proxy_*.deb`; docs/operations.md#debian-package); use one or the other:
# this script refuses to run over the installed package.
#
#   sudo ./scripts/install.sh                      # then edit /etc/fasp-proxy/aspera.conf and
#   sudo systemctl enable --now fasp-proxy         # start it
#
# What it does, in order:
#   1. installs the Debian packages, only if missing: nftables and iptables (the daemon runs
#      nft / iptables-restore), libpam0g (password logins), and conntrack (the operator's
#      `conntrack -L`; the daemon itself speaks netlink), and, when it builds (no
#      INSTALL_BIN_DIR), clang and libbpf-dev, which build.rs compiles the BPF fast path
#      (bpf/fast_path.c) with (skipped with DESTDIR, or INSTALL_SKIP_PACKAGES=1);
#   2. builds the release binaries (`cargo build --release --bins`), unless INSTALL_BIN_DIR names
#      a directory that already holds fasp-proxy, ascp, ascmd and aspshell;
#   3. installs, under DESTDIR (default: none, i.e. this machine):
#        PREFIX/bin/fasp-proxy, ascp, ascmd, aspshell           mode 755, replaced (aspshell is
#                                                              the transfer users' login shell:
#                                                              chsh -s PREFIX/bin/aspshell USER)
#        /etc/systemd/system/fasp-proxy.service                mode 644, replaced (changes belong
#                                                              in a drop-in: systemctl edit)
#        /etc/pam.d/fasp-proxy                                 mode 644, only if missing
#        /etc/fasp-proxy/aspera.conf + ssh_host_{ed25519,rsa}_key `fasp-proxy create-config`, only
#                                                              if aspera.conf is missing
#      The unit's ExecStart names /usr/local/bin/fasp-proxy: with another PREFIX the installed
#      unit is rewritten to name PREFIX/bin/fasp-proxy.
#   4. `systemctl daemon-reload` when systemd runs this machine (not with DESTDIR), and prints
#      what is left to do.
#
# Environment (all optional):
#   PREFIX                 where bin/ goes                                      (/usr/local)
#   DESTDIR                stage into this directory instead of / (packaging, tests)
#   INSTALL_BIN_DIR        take the four binaries from here instead of building
#   INSTALL_SKIP_PACKAGES  1: do not install Debian packages                   (0)
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
INSTALL_BIN_DIR=${INSTALL_BIN_DIR:-}
INSTALL_SKIP_PACKAGES=${INSTALL_SKIP_PACKAGES:-0}
RUNTIME_PACKAGES=(nftables iptables conntrack libpam0g)
BUILD_PACKAGES=(clang libbpf-dev)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { echo "install: $*"; }
die() {
	echo "install: error: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 || -n $DESTDIR ]] || die "run as root (it writes /usr/local/bin, /etc): sudo $0"
[[ $PREFIX == /* ]] || die "PREFIX must be an absolute path, not '$PREFIX'"
[[ -z $DESTDIR || $DESTDIR == /* ]] || die "DESTDIR must be an absolute path, not '$DESTDIR'"

[[ -z $DESTDIR ]] || say "staging under $DESTDIR (paths below are relative to it)"

# Its unit in /etc/systemd/system would take the place of the package's, and name other binaries.
if [[ -z $DESTDIR ]] && command -v dpkg >/dev/null 2>&1 &&
	dpkg -s fasp-proxy 2>/dev/null | grep -q '^Status: install ok installed'; then
	die "the fasp-proxy Debian package is installed: upgrade it with a new package, or remove it (dpkg -r fasp-proxy; your configuration stays) before installing from source"
fi

# 1. Runtime packages
if [[ -z $DESTDIR && $INSTALL_SKIP_PACKAGES != 1 ]]; then
	command -v dpkg >/dev/null 2>&1 || die "dpkg not found: this script supports Debian/Ubuntu; install nftables, conntrack and libpam (and, to build, clang and libbpf headers) yourself and rerun with INSTALL_SKIP_PACKAGES=1"
	wanted=("${RUNTIME_PACKAGES[@]}")
	[[ -n $INSTALL_BIN_DIR ]] || wanted+=("${BUILD_PACKAGES[@]}")
	missing=()
	for p in "${wanted[@]}"; do
		dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing+=("$p")
	done
	if ((${#missing[@]})); then
		say "installing missing packages: ${missing[*]}"
		apt-get update -q
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
	else
		say "packages present: ${wanted[*]}"
	fi
fi

# 2. Binaries
if [[ -n $INSTALL_BIN_DIR ]]; then
	BIN_SRC=$INSTALL_BIN_DIR
else
	command -v cargo >/dev/null 2>&1 || die "cargo not found in PATH: install Rust (stable) or set INSTALL_BIN_DIR"
	say "building: cargo build --release --bins"
	(cd "$ROOT" && cargo build --release --bins)
	BIN_SRC=$ROOT/target/release
fi
BINARIES=(fasp-proxy ascp ascmd aspshell)
for b in "${BINARIES[@]}"; do
	[[ -x $BIN_SRC/$b ]] || die "$BIN_SRC/$b is missing or not executable"
done

# 3. Files
BIN_DIR=$DESTDIR$PREFIX/bin
UNIT_DIR=$DESTDIR/etc/systemd/system
PAM_DIR=$DESTDIR/etc/pam.d
CONF_DIR=$DESTDIR/etc/fasp-proxy

install -d -m 755 "$BIN_DIR" "$UNIT_DIR" "$PAM_DIR"
for b in "${BINARIES[@]}"; do
	install -m 755 "$BIN_SRC/$b" "$BIN_DIR/$b"
	say "installed $PREFIX/bin/$b"
done

unit_tmp=$(mktemp)
trap 'rm -f "$unit_tmp"' EXIT
sed "s|/usr/local/bin/fasp-proxy|$PREFIX/bin/fasp-proxy|g" "$ROOT/systemd/fasp-proxy.service" >"$unit_tmp"
if [[ -f $UNIT_DIR/fasp-proxy.service ]] && cmp -s "$unit_tmp" "$UNIT_DIR/fasp-proxy.service"; then
	say "unit /etc/systemd/system/fasp-proxy.service is up to date"
else
	install -m 644 "$unit_tmp" "$UNIT_DIR/fasp-proxy.service"
	say "installed /etc/systemd/system/fasp-proxy.service"
fi

if [[ -e $PAM_DIR/fasp-proxy ]]; then
	say "kept /etc/pam.d/fasp-proxy (exists)"
else
	install -m 644 "$ROOT/etc/pam.d/fasp-proxy" "$PAM_DIR/fasp-proxy"
	say "installed /etc/pam.d/fasp-proxy (used only with <password_authentication>true)"
fi

if [[ -e $CONF_DIR/aspera.conf ]]; then
	say "kept /etc/fasp-proxy/aspera.conf (exists)"
elif [[ -e $CONF_DIR/ssh_host_ed25519_key || -e $CONF_DIR/ssh_host_ed25519_key.pub ||
	-e $CONF_DIR/ssh_host_rsa_key || -e $CONF_DIR/ssh_host_rsa_key.pub ||
	-e $CONF_DIR/api_cert.pem || -e $CONF_DIR/api_key.pem ]]; then
	# create-config writes both or nothing; a host key of yours is never replaced.
	say "NOTE: /etc/fasp-proxy has a host key but no aspera.conf: write one (fasp-proxy spec"
	say "      lists every option; etc/aspera.conf is an annotated sample); the key is kept"
else
	# create-config writes the configuration and a new host key, refusing if either exists.
	"$BIN_DIR/fasp-proxy" create-config --dir "$CONF_DIR" >/dev/null
	if [[ -n $DESTDIR ]]; then
		# Staged: the file names its host key under DESTDIR; name it where it will live.
		sed -i -e "s|<ssh_host_key>$DESTDIR/|<ssh_host_key>/|" \
			-e "s|<ssh_host_rsa_key>$DESTDIR/|<ssh_host_rsa_key>/|" \
			-e "s|<https_certificate>$DESTDIR/|<https_certificate>/|" \
			-e "s|<https_private_key>$DESTDIR/|<https_private_key>/|" "$CONF_DIR/aspera.conf"
	fi
	say "created /etc/fasp-proxy/aspera.conf, its SSH host keys (Ed25519, RSA) and a self-signed"
	say "        certificate for the forward proxy's HTTPS API (api_cert.pem, api_key.pem)"
fi

# 4. systemd, and what is left
if [[ -z $DESTDIR && -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload
	say "systemctl daemon-reload done"
fi
cat <<EOF
install: done. Next:
  1. edit /etc/fasp-proxy/aspera.conf: <rproxy><enabled>true</enabled> and your <rules>
     (fasp-proxy spec lists every option; etc/aspera.conf in the source is an annotated sample)
  2. $PREFIX/bin/fasp-proxy check-config
  3. systemctl enable --now fasp-proxy      (journalctl -u fasp-proxy shows what it does)
EOF
