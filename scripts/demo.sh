#!/usr/bin/env bash
# The main job, end to end, on one machine: a client, the proxy and two internal servers (real
# OpenSSH sshd) in throw-away network namespaces; `ascp -P 33001` through `fasp-proxy run`, the
# kernel's per-session DNAT entry shown while the data flows (nftables, then iptables), the
# throughput proxied vs direct, and everything removed again. Then the forward proxy, in the
# same daemon: the client, as an inside user, uploads to server1, as an outside server, with
# `ascp --proxy dnat://alice@192.0.2.1:9091` (and dnats://…:9092 with iptables); the
# forwarding's kernel entries are shown while the data flows and gone after, and server1's sshd
# log names only the proxy's address, never the client's.
#
#   sudo ./scripts/demo.sh                 # 512 MiB test file, ascp -l 2g
#   sudo DEMO_MIB=64 ./scripts/demo.sh     # quicker
#
# Lab (documentation addresses only):
#
#   client 192.0.2.2 --veth-- 192.0.2.1 proxy 198.51.100.1 (bridge) --veth-- server1 198.51.100.2
#                                                                  \--veth-- server2 198.51.100.3
#
# Safety: every link, address, route, sysctl, nftables/iptables rule and conntrack flow is made
# inside namespaces this script creates (fpd-<pid>-client/-proxy/-server1/-server2); traffic goes
# only to documentation addresses inside them. Each sshd gets a private mount namespace (its
# upload directory is a bind mount there), so the machine's mounts are untouched. On exit (also
# on failure or Ctrl-C) it stops the processes it started by PID, deletes its namespaces and its
# temp dir. Stale namespaces of earlier crashed runs (fpd-<pid>-* whose PID is gone) are deleted
# at start; nothing else is touched.
#
# Environment (all optional):
#   DEMO_MIB         test file size in MiB                                     (512)
#   DEMO_RATE        ascp -l of the reverse-proxy and direct transfers          (2g)
#                    (the forward-proxy act sends min(DEMO_MIB, 32) MiB at -l 100m, so its
#                    forwarding lives a few seconds)
#   DEMO_TIMEOUT     time limit of each transfer, seconds                      (300)
#   DEMO_SKIP_BUILD  1: use target/release/{fasp-proxy,ascp} as they are       (0)
#   DEMO_TMPDIR      where the temp dir (test file, keys, configuration) lives (${TMPDIR:-/tmp})
#
# Exit status 0 only if every check passed: each file arrived intact, the kernel entry was seen
# during each proxied transfer, no entry was left after each session or forwarding and after
# shutdown, and the outside server never saw the inside client's address.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

DEMO_MIB=${DEMO_MIB:-512}
DEMO_RATE=${DEMO_RATE:-2g}
DEMO_TIMEOUT=${DEMO_TIMEOUT:-300}
DEMO_SKIP_BUILD=${DEMO_SKIP_BUILD:-0}
DEMO_TMPDIR=${DEMO_TMPDIR:-${TMPDIR:-/tmp}}

REQUIRED_PACKAGES=(nftables iptables openssh-server openssh-client conntrack iproute2 procps)

PREFIX=fpd
NS_C="$PREFIX-$$-client"
NS_P="$PREFIX-$$-proxy"
NS_S1="$PREFIX-$$-server1"
NS_S2="$PREFIX-$$-server2"
CLIENT_IP=192.0.2.2
PROXY_IP=192.0.2.1
PROXY_INNER_IP=198.51.100.1
SERVER1_IP=198.51.100.2
SERVER2_IP=198.51.100.3
DAEMON_MAX_SECS=3600 # backstop for the long-lived processes (the trap ends them first)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
T0=$(date +%s)

WORK=""
FAILURES=() # checks that failed; the exit status is 1 if any

# ---------------------------------------------------------------------------------------------
# Output helpers
# ---------------------------------------------------------------------------------------------
if [[ -t 1 ]]; then
	BOLD=$'\033[1m' GREEN=$'\033[32m' RED=$'\033[31m' PLAIN=$'\033[0m'
else
	BOLD="" GREEN="" RED="" PLAIN=""
fi
section() { printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$PLAIN"; }
note() { printf '   %s\n' "$*"; }
ok() { printf '   %sOK%s   %s\n' "$GREEN" "$PLAIN" "$*"; }
fail() {
	printf '   %sFAIL%s %s\n' "$RED" "$PLAIN" "$*"
	FAILURES+=("$*")
}
die() {
	printf '\ndemo: ERROR: %s\n' "$*" >&2
	exit 1
}
indent() { sed 's/^/      /'; }
# role NS: a short name for the prompt.
role() { echo "${1##*-}"; }
# show NS CMD...: print the command with its namespace, then its indented output.
show() {
	local ns=$1
	shift
	printf '   [%s]# %s\n' "$(role "$ns")" "$*"
	lab_nsx "$ns" "$@" 2>&1 | indent
}

# ---------------------------------------------------------------------------------------------
# Cleanup (scripts/lib/lab.sh): our processes (TERM first, so a running daemon removes its
# entries), anything left inside our namespaces, the namespaces, the temp dir.
# ---------------------------------------------------------------------------------------------
LAB_NAME=demo LAB_LOG=note LAB_TERM_FIRST=1 LAB_CLEANUP_LAST=cleaned_up
cleaned_up() {
	if ((${#LAB_NS[@]})); then
		echo "demo: cleaned up (processes, namespaces ${LAB_NS[*]}, temp dir)" >&3
	fi
}
trap lab_cleanup EXIT
set -E # an unexpected failure names its command before the script ends
trap 'echo "demo: ERROR: \"$BASH_COMMAND\" failed (line $LINENO)" >&2' ERR
trap 'echo; echo "demo: interrupted" >&2; exit 130' INT
trap 'echo "demo: terminated" >&2; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
section "0. Preflight: root, packages, build"
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces): sudo env \"PATH=\$PATH\" $0"
[[ $DEMO_MIB =~ ^[0-9]+$ ]] && ((DEMO_MIB > 0)) || die "DEMO_MIB must be a positive integer"
[[ $DEMO_TIMEOUT =~ ^[0-9]+$ ]] && ((DEMO_TIMEOUT > 0)) || die "DEMO_TIMEOUT must be a positive integer"
[[ $DEMO_RATE =~ ^[0-9]+[kKmMgG]?$ ]] || die "DEMO_RATE must look like 500m, 2g or 100k"

lab_require_packages "${REQUIRED_PACKAGES[@]}"
((${#LAB_MISSING[@]})) || note "packages present: ${REQUIRED_PACKAGES[*]}"
for tool in ip nft iptables conntrack sshd ssh-keygen unshare cmp; do
	command -v "$tool" >/dev/null 2>&1 || [[ -x /usr/sbin/$tool ]] || die "$tool not found after installing packages"
done

if [[ $DEMO_SKIP_BUILD != 1 ]]; then
	command -v cargo >/dev/null 2>&1 ||
		die "cargo not found in PATH; install Rust (rustup), or with sudo keep your toolchain: sudo env \"PATH=\$PATH\" \"RUSTUP_HOME=\$HOME/.rustup\" \"CARGO_HOME=\$HOME/.cargo\" $0"
	note "cargo build --release --bins"
	(cd "$ROOT" && timeout 3600 cargo build --release --bins 2>&1 | tail -n 3 | indent) ||
		die "cargo build --release --bins failed"
fi
for b in fasp-proxy ascp; do
	[[ -x $ROOT/target/release/$b ]] || die "$ROOT/target/release/$b not found (build it, or unset DEMO_SKIP_BUILD)"
done

# Stale namespaces of earlier crashed runs: exactly fpd-<pid>-<role>, PID gone.
lab_sweep_stale "$PREFIX" 'client|proxy|server1|server2' 1

mkdir -p "$DEMO_TMPDIR"
lab_workdir "$DEMO_TMPDIR" fpd-demo
WORK=$LAB_WORK
# A private copy of the binaries just built: sshd's ForceCommand and the daemon run exactly
# these, whatever happens to target/ meanwhile.
BIN="$WORK/bin"
mkdir "$BIN"
cp "$ROOT/target/release/fasp-proxy" "$ROOT/target/release/ascp" "$BIN/"
FASP_PROXY="$BIN/fasp-proxy"
ASCP="$BIN/ascp"
note "binaries: $("$FASP_PROXY" --version), $("$ASCP" --version) (copied to $BIN)"
note "temp dir: $WORK"

# ---------------------------------------------------------------------------------------------
section "1. Lab: client, proxy, server1, server2 (network namespaces)"
# ---------------------------------------------------------------------------------------------
lab_add_ns "$NS_C"
lab_add_ns "$NS_P"
lab_add_ns "$NS_S1"
lab_add_ns "$NS_S2"
# veth pairs are created inside the namespaces: nothing appears in the machine's own namespace.
lab_veth "$NS_C" eth0 "$CLIENT_IP/24" "$NS_P" eth-client "$PROXY_IP/24"
lab_default_route "$NS_C" "$PROXY_IP"
ip -n "$NS_P" link add br-servers type bridge
ip -n "$NS_P" addr add "$PROXY_INNER_IP/24" dev br-servers
ip -n "$NS_P" link set br-servers up
i=0
for pair in "$NS_S1:$SERVER1_IP" "$NS_S2:$SERVER2_IP"; do
	i=$((i + 1))
	ns=${pair%%:*}
	addr=${pair#*:}
	lab_veth "$ns" eth0 "$addr/24" "$NS_P" "eth-srv$i" ""
	ip -n "$NS_P" link set "eth-srv$i" master br-servers
	lab_default_route "$ns" "$PROXY_INNER_IP"
done
lab_forwarding "$NS_P"
for ns in "${LAB_NS[@]}"; do
	printf '   %-22s %s\n' "$ns" "$(ip -n "$ns" -4 -br addr show | awk '$1 != "lo" {printf "%s %s  ", $1, $3}')"
done
note "routes: client and servers default via the proxy; ip_forward=1 in $NS_P only"

# ---------------------------------------------------------------------------------------------
section "2. Internal servers: OpenSSH sshd running ascp --server"
# ---------------------------------------------------------------------------------------------
KEYS="$WORK/keys"
mkdir -m 700 "$KEYS"
lab_keygen "$KEYS/id_ed25519" fasp-demo-client
CLIENT_KEY="$KEYS/id_ed25519"
cp "$CLIENT_KEY.pub" "$KEYS/authorized_keys"
CLIENT_KNOWN_HOSTS="$WORK/client_known_hosts"
: >"$CLIENT_KNOWN_HOSTS"
INBOX="$WORK/inbox" # the upload directory, as every server sees it
mkdir "$INBOX"

start_sshd() { # start_sshd NAME NS ADDR
	local name=$1 ns=$2 addr=$3 dir="$WORK/$1"
	mkdir -m 700 "$dir"
	mkdir "$WORK/disk-$name" # what this server stores, seen as $INBOX inside its namespace
	lab_keygen "$dir/ssh_host_ed25519_key" "fasp-demo-$name"
	echo "$addr $(cat "$dir/ssh_host_ed25519_key.pub")" >>"$CLIENT_KNOWN_HOSTS"
	lab_sshd_config "$dir/sshd_config" "$addr" "$dir/ssh_host_ed25519_key" "$KEYS/authorized_keys" \
		"LogLevel VERBOSE" "MaxStartups 100" "ForceCommand $ASCP --server"
	# sshd and the ascp it starts see $WORK/disk-NAME on $INBOX, in a mount namespace of their own.
	lab_start_sshd "$ns" "$addr" "$dir/sshd_config" "$dir/sshd.log" timeout "$DAEMON_MAX_SECS" \
		unshare -m --propagation private \
		sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$WORK/disk-$name" "$INBOX" ||
		die "sshd of $name did not start"
	note "$name: sshd on $addr:22, ForceCommand $ASCP --server, uploads land in $WORK/disk-$name"
}
start_sshd server1 "$NS_S1" "$SERVER1_IP"
start_sshd server2 "$NS_S2" "$SERVER2_IP"
for target in "$SERVER1_IP" "$SERVER2_IP"; do
	lab_nsx "$NS_C" timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/22"' "$target" ||
		die "the client cannot reach $target:22 through the proxy namespace"
done
ok "the client reaches both servers' sshd, routed by the proxy namespace"
disk_of() { # disk_of IP: the directory holding what that server received
	case $1 in
	"$SERVER1_IP") echo "$WORK/disk-server1" ;;
	"$SERVER2_IP") echo "$WORK/disk-server2" ;;
	*) echo "$WORK/unknown-server" ;;
	esac
}

# ---------------------------------------------------------------------------------------------
section "3. Proxy configuration"
# ---------------------------------------------------------------------------------------------
ETC="$WORK/etc"
LOG_DIR="$WORK/log"
mkdir -p "$LOG_DIR"
# --api-name: the HTTPS API's certificate names the address inside clients dial (dnats://).
printf '   # fasp-proxy create-config --dir %s --api-name %s\n' "$ETC" "$PROXY_IP"
timeout 60 "$FASP_PROXY" create-config --dir "$ETC" --api-name "$PROXY_IP" 2>&1 | indent
mv "$ETC/aspera.conf" "$ETC/aspera.conf.default"
# The proxy user root logs in with the client's key; the proxy logs in to the servers with the
# key they accept; the servers' host keys are known in advance (no trust on first use).
cp "$CLIENT_KEY.pub" "$ETC/root.keys"
grep -v "^\[" "$CLIENT_KNOWN_HOSTS" >"$ETC/known_hosts"
echo "[$PROXY_IP]:33001 $(cat "$ETC/ssh_host_ed25519_key.pub")" >>"$CLIENT_KNOWN_HOSTS"

write_config() { # write_config FORWARDING_TYPE OUT
	sed -e "s|@LOG_DIR@|$LOG_DIR|g" -e "s|@ETC_DIR@|$ETC|g" -e "s|@KEYFILE@|$CLIENT_KEY|g" \
		-e "s|@FORWARDING_TYPE@|$1|g" "$ROOT/etc/demo-aspera.conf.in" >"$2"
}
CONF_NFT="$ETC/aspera.conf"
CONF_IPT="$ETC/aspera-iptables.conf"
write_config nftables "$CONF_NFT"
write_config iptables "$CONF_IPT"
note "$CONF_NFT (from etc/demo-aspera.conf.in), its <rproxy> rule (the reverse proxy):"
sed -n '/<rules>/,/<\/rules>/p' "$CONF_NFT" | indent
note "and its <proxy> (the forward proxy, same daemon) with the node API's listeners:"
sed -n '/<proxy>/,/<https_private_key>/p' "$CONF_NFT" | grep -v '<!--' | indent
# The forward proxy's node-API user: the password goes on stdin, never on a command line.
FWD_USER=alice
FWD_PASS=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
# shellcheck disable=SC2016 # "$PASS" is shown literally
printf '   # printf "%%s\\n" "$PASS" | fasp-proxy --config %s node-user add %s\n' "$CONF_NFT" "$FWD_USER"
printf '%s\n' "$FWD_PASS" | timeout 60 "$FASP_PROXY" --config "$CONF_NFT" node-user add "$FWD_USER" 2>&1 | indent ||
	die "fasp-proxy node-user add failed"
printf '   # fasp-proxy --config %s node-user list\n' "$CONF_NFT"
timeout 60 "$FASP_PROXY" --config "$CONF_NFT" node-user list 2>&1 | indent
show "$NS_P" "$FASP_PROXY" check-config "$CONF_NFT" || die "check-config refused the demo configuration"

# ---------------------------------------------------------------------------------------------
# The daemon, the transfers, the kernel entries
# ---------------------------------------------------------------------------------------------
DAEMON_WRAPPER="" # PID of the `timeout` running the daemon (our child)
DAEMON_PID=""     # PID of fasp-proxy itself
PROXY_LOG="$LOG_DIR/fasp-proxy.log"

LOG_MARK=0 # lines of the proxy's log written before the current daemon started
log_lines() { # the number of lines in the proxy's log (0 if none yet)
	local n=0
	[[ -f $PROXY_LOG ]] && n=$(wc -l <"$PROXY_LOG")
	echo "$n"
}
log_since_start() { tail -n "+$((LOG_MARK + 1))" "$PROXY_LOG" 2>/dev/null || true; }
log_from() { tail -n "+$(($1 + 1))" "$PROXY_LOG" 2>/dev/null || true; } # log_from LINES: after them
start_daemon() { # start_daemon CONF LABEL
	local conf=$1 label=$2 _ child
	LOG_MARK=$(log_lines)
	printf '   [proxy]# %s --config %s run &\n' "$FASP_PROXY" "$conf"
	timeout "$DAEMON_MAX_SECS" ip netns exec "$NS_P" "$FASP_PROXY" --config "$conf" run \
		>"$WORK/daemon-$label.out" 2>&1 &
	DAEMON_WRAPPER=$!
	lab_register_pid "$DAEMON_WRAPPER"
	for _ in $(seq 100); do
		child=$(cat "/proc/$DAEMON_WRAPPER/task/$DAEMON_WRAPPER/children" 2>/dev/null || true)
		child=${child%% *}
		# Up when both the SSH front end and the forward proxy's API have said so.
		if [[ -n $child && $(cat "/proc/$child/comm" 2>/dev/null) == fasp-proxy ]] &&
			log_since_start | grep -q "fasp-proxy .* listening on" &&
			log_since_start | grep -q "Started on port(s)"; then
			DAEMON_PID=$child
			note "fasp-proxy is running, PID $DAEMON_PID; its log ($PROXY_LOG) so far:"
			log_since_start | indent
			return 0
		fi
		[[ -e /proc/$DAEMON_WRAPPER ]] || break
		sleep 0.1
	done
	cat "$WORK/daemon-$label.out" "$PROXY_LOG" 2>/dev/null | indent >&2
	die "the daemon did not start (config $conf)"
}

stop_daemon() { # SIGTERM to fasp-proxy's own PID, then wait for it to finish
	local _ rc=0
	printf '   # kill -TERM %s   (fasp-proxy)\n' "$DAEMON_PID"
	kill -TERM "$DAEMON_PID"
	for _ in $(seq 200); do
		[[ -e /proc/$DAEMON_PID ]] || break
		sleep 0.1
	done
	[[ -e /proc/$DAEMON_PID ]] && kill -0 "$DAEMON_PID" 2>/dev/null &&
		[[ $(awk '{print $3}' "/proc/$DAEMON_PID/stat" 2>/dev/null) != Z ]] && {
		fail "the daemon did not stop within 20 s of SIGTERM"
		return 0
	}
	wait "$DAEMON_WRAPPER" || rc=$?
	if ((rc == 0)) && log_since_start | grep -q "stopped"; then
		ok "the daemon stopped cleanly (exit status 0); its last log lines:"
		log_since_start | tail -n 3 | indent
	else
		fail "the daemon exited with status $rc after SIGTERM"
	fi
	DAEMON_PID=""
	DAEMON_WRAPPER=""
}

# nft_session_elements: the session elements of the proxy's DNAT maps (empty if none).
nft_session_elements() {
	{
		lab_nsx "$NS_P" nft list map ip fasp_proxy sessions 2>/dev/null
		lab_nsx "$NS_P" nft list map ip fasp_proxy sessions_any_port 2>/dev/null
	} | grep -E "$CLIENT_IP|$SERVER1_IP|$SERVER2_IP" || true
}
# ipt_session_rules: the proxy's per-session iptables rules (empty if none).
ipt_session_rules() {
	lab_nsx "$NS_P" iptables -t nat -S 2>/dev/null | grep -E '^-A FASP_PROXY' || true
}

# ascp_bg LABEL ARGS...: start ascp in the client namespace, in the background.
ASCP_PID=""
ASCP_T0=""
# ASCP_SHOWN_ENV: what to print before "ascp" (e.g. "ASPERA_PROXY_PASS=… "; never a secret).
ascp_bg() {
	local label=$1
	shift
	printf '   [client]$ %sascp %s &\n' "${ASCP_SHOWN_ENV:-}" "$*"
	ASCP_T0=$(date +%s.%N)
	timeout "$DEMO_TIMEOUT" ip netns exec "$NS_C" "$ASCP" "$@" >"$WORK/ascp-$label.log" 2>&1 &
	ASCP_PID=$!
	lab_register_pid "$ASCP_PID"
}
# ascp_wait LABEL: wait for it; sets ASCP_RC and ASCP_WALL (seconds), prints its last lines.
ascp_wait() {
	local label=$1
	ASCP_RC=0
	wait "$ASCP_PID" || ASCP_RC=$?
	ASCP_WALL=$(awk -v a="$ASCP_T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	note "ascp exited with status $ASCP_RC after ${ASCP_WALL}s; its last lines:"
	tail -n 3 "$WORK/ascp-$label.log" | indent
	((ASCP_RC == 0)) || fail "ascp ($label) failed with status $ASCP_RC"
}
# ascp_rate_mbps LABEL: the goodput of ascp's "Completed: ... (X Mb/s)" line, in Mbit/s.
ascp_rate_mbps() {
	sed -n 's/^Completed:.*(\([0-9.]*\)\([KMG]\)b\/s).*$/\1 \2/p' "$WORK/ascp-$1.log" | tail -n1 |
		awk '{ m = ($2 == "G") ? 1000 : ($2 == "K") ? 0.001 : 1; printf "%.0f", $1 * m }'
}
# ascp_secs LABEL: the duration of the data phase from ascp's "Completed: ... in Xs" line.
ascp_secs() {
	sed -n 's/^Completed:.* in \([0-9.]*\)s (.*$/\1/p' "$WORK/ascp-$1.log" | tail -n1
}
# wall_rate_mbps SECONDS: the file size over the wall time of the whole ascp command, Mbit/s.
wall_rate_mbps() {
	awk -v b="$BYTES" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b * 8 / s / 1e6; else print 0 }'
}
# verify LABEL FILE [SOURCE]: compare with the source ($SRC by default), then remove the copy.
verify() {
	local src=${3:-$SRC}
	if [[ -f $2 ]] && cmp -s "$src" "$2"; then
		ok "$1: $2 is identical to the source (cmp, $(stat -c %s "$src") bytes)"
	else
		fail "$1: $2 is missing or differs from the source"
	fi
	rm -f -- "$2"
}
# backend_of_last_session: the internal server of the newest session, from the proxy's log.
backend_of_last_session() {
	{ grep "Established SSH connection with server" "$PROXY_LOG" 2>/dev/null || true; } | tail -n1 |
		sed 's/.*with server \([0-9.]*\):.*/\1/'
}

# A transfer through the proxy with its kernel entry shown while it runs.
# proxied_transfer LABEL ENTRIES_FN SHOW_CMD...: ENTRIES_FN lists the session's kernel entries,
# SHOW_CMD prints the firewall while the session lives.
proxied_transfer() {
	local label=$1 entries=$2 seen=0 _
	shift 2
	ascp_bg "$label" -P 33001 -i "$CLIENT_KEY" --known-hosts "$CLIENT_KNOWN_HOSTS" -l "$DEMO_RATE" \
		"$SRC" "root@$PROXY_IP:$INBOX"
	for _ in $(seq 300); do
		if [[ -n $($entries) ]]; then
			seen=1
			break
		fi
		kill -0 "$ASCP_PID" 2>/dev/null || break
		sleep 0.05
	done
	if ((seen)); then
		ok "the session's kernel entry is in place while the data flows:"
		"$@"
		sleep 0.5 # let the kernel's counters grow a little
		show "$NS_P" "$FASP_PROXY" sessions
		note "(the daemon reads PACKETS/BYTES from the kernel every 5 s: '-' until its first reading)"
		printf '   [proxy]# conntrack -L -p udp -d %s   (the data flow, DNAT to the server)\n' "$PROXY_IP"
		lab_nsx "$NS_P" conntrack -L -p udp -d "$PROXY_IP" 2>/dev/null | indent || true
	else
		fail "$label: no kernel entry seen while the transfer ran"
	fi
	ascp_wait "$label"
}

# ---------------------------------------------------------------------------------------------
# The forward proxy: the client (inside) uploads to server1 (outside) through the daemon's API
# ---------------------------------------------------------------------------------------------
FWD_RATE=100m # slow enough that the forwarding lives a few seconds, whatever DEMO_RATE is
FWD_MIB=$((DEMO_MIB < 32 ? DEMO_MIB : 32))
FWD_SRC="$WORK/forward.bin"
SERVER1_LOG="$WORK/server1/sshd.log"

# fwd_nft_entries / fwd_ipt_entries: the kernel entries naming the client (empty if none).
fwd_nft_entries() {
	lab_nsx "$NS_P" nft list table ip fasp_proxy 2>/dev/null | grep -F "$CLIENT_IP" || true
}
fwd_ipt_entries() {
	lab_nsx "$NS_P" iptables -t nat -S 2>/dev/null | grep -F -- "-s $CLIENT_IP/32" || true
}
# show_fwd_nft / show_fwd_ipt: print the forwarding's entries as the administrator lists them.
show_fwd_nft() {
	local pattern="^\s+(map|set) |${CLIENT_IP//./\\.}"
	note "the maps and sets of the table, with the forwarding's elements (key: client . proxy port):"
	printf "   [proxy]# nft list table ip fasp_proxy | grep -E '%s'\n" "$pattern"
	lab_nsx "$NS_P" nft list table ip fasp_proxy 2>&1 | grep -E "$pattern" | indent || true
	note "tcp_sessions: DNAT of the SSH to the server's port 22; sessions_any_port: of the FASP data"
	note "to its UDP 33001; tcp_masq_sessions, masq_sessions_any_port: their source NAT (masquerade:"
	note "the server sees the proxy's $PROXY_INNER_IP)"
}
show_fwd_ipt() {
	show "$NS_P" iptables -t nat -S FASP_PROXY
	show "$NS_P" iptables -t nat -S FASP_PROXY_POST
}

# forward_transfer LABEL URL ENTRIES_FN SHOW_FN: uploads $FWD_SRC from the client to server1
# with `ascp --proxy URL` (the password in ASPERA_PROXY_PASS, not on the command line); shows
# the forwarding while the data flows, checks the copy, the daemon's log, that the entries are
# gone after the client's close, and that server1's sshd saw only the proxy's address.
forward_transfer() {
	local label=$1 url=$2 entries=$3 show_fn=$4 ssh_mark log_mark opened="" id="" port="" _
	local sshd_lines
	ssh_mark=$(wc -l <"$SERVER1_LOG")
	log_mark=$(log_lines)
	ASPERA_PROXY_PASS=$FWD_PASS ASCP_SHOWN_ENV='ASPERA_PROXY_PASS=… ' ascp_bg "$label" \
		--proxy "$url" -P 22 -i "$CLIENT_KEY" --known-hosts "$CLIENT_KNOWN_HOSTS" -l "$FWD_RATE" \
		"$FWD_SRC" "root@$SERVER1_IP:$INBOX"
	# The forwarding exists from the client's /proxy/open (before its SSH) to its /proxy/close.
	for _ in $(seq 400); do
		opened=$(log_from "$log_mark" | grep -m1 "forwarding [0-9]* opened:" || true)
		[[ -n $opened && -n $($entries) ]] && break
		kill -0 "$ASCP_PID" 2>/dev/null || break
		sleep 0.05
	done
	id=$(sed -n 's/.*forwarding \([0-9]*\) opened:.*/\1/p' <<<"$opened")
	port=$(sed -n 's/.* via proxy [0-9.]* port \([0-9]*\).*/\1/p' <<<"$opened")
	if [[ -n $id && -n $port && -n $($entries) ]]; then
		# Wait for the data phase: the UDP flow client -> proxy port, DNAT'ed to the server.
		for _ in $(seq 200); do
			[[ -n $(lab_nsx "$NS_P" conntrack -L -p udp -s "$CLIENT_IP" -d "$PROXY_IP" --dport "$port" 2>/dev/null) ]] &&
				break
			kill -0 "$ASCP_PID" 2>/dev/null || break
			sleep 0.05
		done
		ok "forwarding $id (proxy port $port) is in the kernel while the data flows:"
		"$show_fn"
		sleep 0.5 # let the kernel's counters grow a little
		show "$NS_P" "$FASP_PROXY" sessions
		note "(PACKETS/BYTES: read from the kernel every 5 s, '-' before the first reading; conntrack has them live)"
		printf '   [proxy]# conntrack -L -s %s -d %s | grep dport=%s   (original -> reply: the server answers the proxy)\n' \
			"$CLIENT_IP" "$PROXY_IP" "$port"
		lab_nsx "$NS_P" conntrack -L -s "$CLIENT_IP" -d "$PROXY_IP" 2>/dev/null | grep -F "dport=$port " | indent || true
	else
		fail "$label: no forwarding seen in the kernel while ascp --proxy ran"
	fi
	ascp_wait "$label"
	verify "through the forward proxy to $SERVER1_IP" "$WORK/disk-server1/$(basename "$FWD_SRC")" "$FWD_SRC"

	# After ascp: its /proxy/close removed the entries.
	for _ in $(seq 100); do
		[[ -n $id ]] && log_from "$log_mark" | grep -q "forwarding $id closed" && [[ -z $($entries) ]] && break
		sleep 0.05
	done
	if [[ -z $($entries) ]]; then
		ok "after ascp's /proxy/close: no entry naming $CLIENT_IP is left"
	else
		fail "$label: entries outlived the forwarding: $($entries)"
	fi
	show "$NS_P" "$FASP_PROXY" sessions
	note "the daemon's forward-proxy log lines ($PROXY_LOG):"
	log_since_start | grep -E "proxy service ready|Started on port|forwarding [0-9]+ |forward proxy" | indent || true
	local want="forwarding ${id:-N} opened: user $FWD_USER, client $CLIENT_IP -> server $SERVER1_IP (tcp 22, udp 33001) via proxy $PROXY_IP port ${port:-P}"
	if ! log_from "$log_mark" | grep -qF "$want"; then
		fail "$label: the proxy's log lacks \"$want\""
	fi
	if ! log_from "$log_mark" | grep -qF "forwarding ${id:-N} closed by the client"; then
		fail "$label: the proxy's log lacks \"forwarding ${id:-N} closed by the client\""
	fi

	# What the outside server saw: its sshd (LogLevel VERBOSE) logs every login's source.
	sleep 0.2 # sshd's last lines of the login (disconnect)
	sshd_lines=$(tail -n "+$((ssh_mark + 1))" "$SERVER1_LOG" |
		grep -E "Connection from|Accepted publickey|Disconnected from|Received disconnect" || true)
	note "server1's sshd log ($SERVER1_LOG) for this login:"
	indent <<<"$sshd_lines"
	if grep -qF "$CLIENT_IP" <<<"$sshd_lines"; then
		fail "$label: server1's sshd saw the inside client's address $CLIENT_IP"
	elif grep -qF "Accepted publickey for root from $PROXY_INNER_IP port" <<<"$sshd_lines"; then
		ok "server1 saw only the proxy's address $PROXY_INNER_IP, never the client's $CLIENT_IP"
	else
		fail "$label: server1's sshd logged no login from the proxy's $PROXY_INNER_IP"
	fi
}

section "4. The proxy daemon (nftables backend)"
start_daemon "$CONF_NFT" nftables

# ---------------------------------------------------------------------------------------------
section "5. Upload through the proxy: ascp -P 33001 to $PROXY_IP (nftables)"
# ---------------------------------------------------------------------------------------------
SRC="$WORK/payload.bin"
note "writing a $DEMO_MIB MiB test file (random content): $SRC"
timeout "$DEMO_TIMEOUT" head -c "$((DEMO_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
BYTES=$(stat -c %s "$SRC")
cat "$SRC" >/dev/null # in the page cache, so every transfer reads from memory

proxied_transfer nft nft_session_elements show "$NS_P" nft list table ip fasp_proxy
PROXIED_BACKEND=$(backend_of_last_session)
verify "through the proxy to ${PROXIED_BACKEND:-?}" "$(disk_of "$PROXIED_BACKEND")/payload.bin"
PROXIED_MBPS=$(ascp_rate_mbps nft)
PROXIED_WALL=$ASCP_WALL
PROXIED_SECS=$(ascp_secs nft)
for _ in $(seq 100); do
	[[ -z $(nft_session_elements) ]] && break
	sleep 0.1
done
if [[ -z $(nft_session_elements) ]]; then
	ok "after the session: no element left in the sessions map"
else
	fail "an nftables entry outlived its session: $(nft_session_elements)"
fi
note "the proxy's log ($PROXY_LOG):"
indent <"$PROXY_LOG"
for line in "Received connection request from $CLIENT_IP" "Established SSH connection with server" \
	"Setup UDP forwarding between $CLIENT_IP:" "Connection closed (EOF)"; do
	grep -qF "$line" "$PROXY_LOG" || fail "the proxy's log lacks \"$line\""
done

# ---------------------------------------------------------------------------------------------
section "6. Round robin: the next session goes to the other server"
# ---------------------------------------------------------------------------------------------
SMALL="$WORK/small.bin"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$SMALL"
printf '   [client]$ ascp ... -l %s small.bin root@%s:%s\n' "$DEMO_RATE" "$PROXY_IP" "$INBOX"
if lab_nsx "$NS_C" timeout "$DEMO_TIMEOUT" "$ASCP" -P 33001 -i "$CLIENT_KEY" --known-hosts "$CLIENT_KNOWN_HOSTS" \
	-l "$DEMO_RATE" -q "$SMALL" "root@$PROXY_IP:$INBOX" 2>&1 | indent; then
	NEXT_BACKEND=$(backend_of_last_session)
	if [[ -n $NEXT_BACKEND && $NEXT_BACKEND != "$PROXIED_BACKEND" ]] &&
		cmp -s "$SMALL" "$(disk_of "$NEXT_BACKEND")/small.bin"; then
		ok "session 1 went to $PROXIED_BACKEND, session 2 to $NEXT_BACKEND (its copy is identical)"
	else
		fail "round robin: session 2 went to ${NEXT_BACKEND:-?} (session 1: ${PROXIED_BACKEND:-?})"
	fi
else
	fail "the second transfer through the proxy failed"
fi
rm -f -- "$WORK"/disk-server*/small.bin

# ---------------------------------------------------------------------------------------------
section "7. The same upload directly to the server: ascp -P 22 to ${PROXIED_BACKEND:-$SERVER1_IP}"
# ---------------------------------------------------------------------------------------------
DIRECT_TARGET=${PROXIED_BACKEND:-$SERVER1_IP}
note "same file, same -l $DEMO_RATE, same server; the packets are routed by the proxy namespace, not DNAT'ed"
ascp_bg direct -P 22 -i "$CLIENT_KEY" --known-hosts "$CLIENT_KNOWN_HOSTS" -l "$DEMO_RATE" \
	"$SRC" "root@$DIRECT_TARGET:$INBOX"
ascp_wait direct
verify "directly to $DIRECT_TARGET" "$(disk_of "$DIRECT_TARGET")/payload.bin"
DIRECT_MBPS=$(ascp_rate_mbps direct)
DIRECT_WALL=$ASCP_WALL
DIRECT_SECS=$(ascp_secs direct)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
PROXIED_WALL_MBPS=$(wall_rate_mbps "$PROXIED_WALL")
DIRECT_WALL_MBPS=$(wall_rate_mbps "$DIRECT_WALL")
THROUGHPUT_TABLE=$(
	printf '%-50s %10s %10s %7s\n' "$DEMO_MIB MiB, ascp -l $DEMO_RATE" proxied direct ratio
	printf '%-50s %10s %10s %7s\n' "ascp goodput (its \"Completed:\" line), Mb/s" \
		"${PROXIED_MBPS:-?}" "${DIRECT_MBPS:-?}" "$(ratio "${PROXIED_MBPS:-0}" "${DIRECT_MBPS:-0}")"
	printf '%-50s %10s %10s %7s\n' "file size / wall time of the ascp command, Mb/s" \
		"$PROXIED_WALL_MBPS" "$DIRECT_WALL_MBPS" "$(ratio "$PROXIED_WALL_MBPS" "$DIRECT_WALL_MBPS")"
	printf '%-50s %10s %10s\n' "  wall time of the ascp command, s" "$PROXIED_WALL" "$DIRECT_WALL"
	printf '%-50s %10s %10s\n' "  of which data phase (\"Completed: ... in\"), s" "${PROXIED_SECS:-?}" "${DIRECT_SECS:-?}"
)
echo "$THROUGHPUT_TABLE" | indent
note "goodput: ascp's own figure for its data phase; the wall time adds SSH set-up and close."
note "one sample each: on a busy machine the ratio moves from run to run (load: $(cut -d' ' -f1-3 /proc/loadavg))"

# ---------------------------------------------------------------------------------------------
section "8. The forward proxy: the client, inside, uploads to server1, outside, through the same daemon"
# ---------------------------------------------------------------------------------------------
note "now the client $CLIENT_IP is an inside user and server1 $SERVER1_IP an outside server: ascp asks"
note "the node API on $PROXY_IP:9091 (user $FWD_USER) for a forwarding, the kernel forwards its SSH and FASP"
note "data from a proxy port on to $SERVER1_IP:22 and :33001 with the proxy's $PROXY_INNER_IP as the source"
head -c "$((FWD_MIB * 1024 * 1024))" "$SRC" >"$FWD_SRC"
note "test file: $FWD_SRC ($FWD_MIB MiB), sent at -l $FWD_RATE so the forwarding can be watched"
forward_transfer fwd-nft "dnat://$FWD_USER@$PROXY_IP:9091" fwd_nft_entries show_fwd_nft

# ---------------------------------------------------------------------------------------------
section "9. The iptables backend: restart the daemon with <forwarding_type>iptables</forwarding_type>"
# ---------------------------------------------------------------------------------------------
stop_daemon
printf '   # diff %s %s\n' "$CONF_NFT" "$CONF_IPT"
diff "$CONF_NFT" "$CONF_IPT" | indent || true
show "$NS_P" "$FASP_PROXY" check-config "$CONF_IPT" || fail "check-config refused the iptables configuration"
start_daemon "$CONF_IPT" iptables
proxied_transfer ipt ipt_session_rules show "$NS_P" iptables -t nat -L -n
IPT_BACKEND=$(backend_of_last_session)
verify "through the proxy (iptables) to ${IPT_BACKEND:-?}" "$(disk_of "$IPT_BACKEND")/payload.bin"
IPT_MBPS=$(ascp_rate_mbps ipt)
for _ in $(seq 100); do
	[[ -z $(ipt_session_rules) ]] && break
	sleep 0.1
done
if [[ -z $(ipt_session_rules) ]]; then
	ok "after the session: no rule left in the FASP_PROXY chain"
else
	fail "an iptables entry outlived its session: $(ipt_session_rules)"
fi
note "the proxy's log since this daemon started:"
log_since_start | indent
note "the forward proxy with iptables, this time over HTTPS (dnats://, port 9092; ascp checks that"
note "the API's certificate names $PROXY_IP, as IBM's ascp does):"
forward_transfer fwd-ipt "dnats://$FWD_USER@$PROXY_IP:9092" fwd_ipt_entries show_fwd_ipt

# ---------------------------------------------------------------------------------------------
section "10. Shutdown: SIGTERM, nothing left in the kernel"
# ---------------------------------------------------------------------------------------------
stop_daemon
show "$NS_P" nft list tables
printf '   [proxy]# iptables -t nat -S | grep FASP\n'
lab_nsx "$NS_P" iptables -t nat -S 2>&1 | grep FASP | indent || true
if [[ -z $(nft_session_elements) && -z $(ipt_session_rules) ]]; then
	ok "no session entry is left (the empty tables and chains stay until purge)"
else
	fail "session entries left after SIGTERM: $(nft_session_elements) $(ipt_session_rules)"
fi
show "$NS_P" "$FASP_PROXY" --config "$CONF_IPT" purge || fail "fasp-proxy purge failed"
leftover_nft=$(lab_nsx "$NS_P" nft list tables 2>&1 | grep fasp_proxy || true)
leftover_ipt=$(lab_nsx "$NS_P" iptables -t nat -S 2>&1 | grep FASP || true)
if [[ -z $leftover_nft && -z $leftover_ipt ]]; then
	ok "after purge: no fasp_proxy table (nft list tables), no FASP chain (iptables -t nat -S)"
else
	fail "left after purge: $leftover_nft $leftover_ipt"
fi

# ---------------------------------------------------------------------------------------------
section "Summary"
# ---------------------------------------------------------------------------------------------
echo "$THROUGHPUT_TABLE" | indent
note "through the proxy with the iptables backend: ascp goodput ${IPT_MBPS:-?} Mb/s"
note "load average now: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other work on the machine lowers the figures)"
note "took $(($(date +%s) - T0)) s; the lab is removed on exit"
if ((${#FAILURES[@]})); then
	printf '\ndemo: FAILED (%d check(s)):\n' "${#FAILURES[@]}"
	printf '  - %s\n' "${FAILURES[@]}"
	exit 1
fi
printf '\ndemo: OK: ascp -P 33001 through fasp-proxy reached the internal servers, ascp --proxy reached an\n'
printf '      outside server, which saw only the address of the proxy; the kernel forwarded the data.\n'
