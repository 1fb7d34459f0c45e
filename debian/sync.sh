#!/usr/bin/env bash
# Writes the two packaged files that are made from other files of the source tree:
#
#   debian/aspera.conf         the commented default configuration as `fasp-proxy create-config`
#                              renders it for /etc/fasp-proxy (the package's conffile)
#   debian/fasp-proxy.service  systemd/fasp-proxy.service with the binaries in /usr/bin
#                              (the source unit names /usr/local/bin, where scripts/install.sh
#                              puts them) and its "Install:" comment replaced
#
#   debian/sync.sh [--check] [FASP_PROXY]
#
# FASP_PROXY is the fasp-proxy binary that renders the configuration (default:
# target/debug/fasp-proxy, else target/release/fasp-proxy). With --check nothing is written: it
# says which file differs and exits 1 (tests/deb.rs runs it so). Run it after changing the
# configuration's options or the unit, and commit both files.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
check=0
if [[ ${1:-} == --check ]]; then
	check=1
	shift
fi
FASP_PROXY=${1:-}
if [[ -z $FASP_PROXY ]]; then
	for candidate in "$ROOT/target/debug/fasp-proxy" "$ROOT/target/release/fasp-proxy"; do
		if [[ -x $candidate ]]; then
			FASP_PROXY=$candidate
			break
		fi
	done
fi
[[ -n $FASP_PROXY && -x $FASP_PROXY ]] || {
	echo "debian/sync.sh: no fasp-proxy binary: build one (cargo build) or name it" >&2
	exit 2
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# create-config names its files by the directory it writes into; the package's live in
# /etc/fasp-proxy.
"$FASP_PROXY" create-config --dir "$work/etc" --api-name localhost >/dev/null
sed "s|$work/etc/|/etc/fasp-proxy/|g" "$work/etc/aspera.conf" >"$work/aspera.conf"
sed -e 's|/usr/local/bin/|/usr/bin/|g' \
	-e '/^# Install: install /,/^#  *systemctl enable/c\
# Installed by the Debian package fasp-proxy: put changes in a drop-in (systemctl edit fasp-proxy).' \
	"$ROOT/systemd/fasp-proxy.service" >"$work/fasp-proxy.service"

status=0
for f in aspera.conf fasp-proxy.service; do
	if cmp -s "$work/$f" "$ROOT/debian/$f"; then
		continue
	fi
	if ((check)); then
		echo "debian/$f is out of date (run debian/sync.sh and commit it):"
		diff -u "$ROOT/debian/$f" "$work/$f" || true
		status=1
	else
		cp "$work/$f" "$ROOT/debian/$f"
		echo "wrote debian/$f"
	fi
done
exit "$status"
