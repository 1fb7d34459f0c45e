#!/usr/bin/env bash
# Forward proxy benchmark: an inside client reaches an outside OpenSSH server through
# `fasp-proxy run`'s node API (`POST /proxy/open`, a kernel DNAT forwarding) against the same
# client going straight to the server, side by side in one run, over throw-away network
# namespaces. See docs/benchmarks.md, "Forward proxy".
#
#   sudo ./scripts/bench-forward.sh                       # defaults (about 5 minutes once built)
#   sudo BENCH_MIB=256 BENCH_SECTIONS="latency scale" ./scripts/bench-forward.sh
#
# Lab:  client ns 192.0.2.2 --veth-- 192.0.2.1 proxy ns 198.51.100.1 --veth-- 198.51.100.2 server ns
#       fasp-proxy run in the proxy ns: the forward proxy's API on 192.0.2.1:9091 (HTTP),
#       <forwarding_type>nftables, ports BENCH_PORT_LOW-BENCH_PORT_HIGH; sshd on 198.51.100.2:22 with
#       ForceCommand <release ascp> --server. The proxy ns routes (ip_forward=1), so "direct"
#       traffic crosses the same kernel as forwarded traffic, only without the DNAT entry.
#
# What it measures:
#   1. latency: from the start of `POST /proxy/open` to the first byte of the outside sshd's
#      banner ("SSH-2.0-") read through the forwarding (a TCP connect to proxy_addr:proxy_tcp_port),
#      then `POST /proxy/close`; against a direct TCP connect to 198.51.100.2:22 and its first
#      banner byte. BENCH_LATENCY_RUNS of each, alternating which goes first; median and p90.
#      Run with <authentication> true (each call verifies the password: argon2id) and again with
#      it false (the API and kernel programming alone). Client: scripts/lib/fwd_bench.py (python3,
#      standard library only), inside the client namespace.
#   2. goodput: our release `ascp --proxy dnat://USER@192.0.2.1:9091 -P 22 ...
#      root@198.51.100.2:DIR` (password from ASPERA_PROXY_PASS) against `ascp -P 22 ...
#      root@198.51.100.2:DIR`, same file, -T and encrypted, order direct, forward, forward, direct
#      (BENCH_REPS times). Three figures per run: file bytes / time until the process exited
#      ("exit": includes the open, SSH, the close call), until it printed "Completed:" ("done"),
#      and ascp's own "Completed: ... (X Mb/s)" rate ("ascp").
#   3. scale: BENCH_FORWARDINGS live forwardings opened by BENCH_THREADS client threads (a fresh
#      HTTP connection per call, as IBM's client and ours make), the daemon's VmRSS at rest and
#      with all of them open, the kernel's elements counted (nft -j), then all closed by the same
#      threads; open and close rates (forwardings per second), and nothing may be left in
#      `nft list table ip fasp_proxy`. Once with <authentication> true (argon2id per call, at most
#      2 at once in the daemon) and once, in a second daemon run, with it false, so the API and
#      kernel programming cost shows alone.
#
# Safety: every link, address, route, sysctl and nft change is made inside the namespaces this
# script creates (fpf-<pid>-client/-proxy/-server); traffic goes only to documentation addresses
# inside them. On exit (also on failure or Ctrl-C) it stops the daemon (SIGTERM: it removes its own
# entries), the processes it started, by PID, then anything left inside its namespaces, deletes the
# namespaces and its temp dir. Stale namespaces of earlier crashed runs (fpf-<pid>-* whose PID is
# gone) are deleted at start. Every loop is bounded in count and time.
#
# Environment (all optional):
#   BENCH_MIB            file size of the goodput runs, MiB                       (512)
#   BENCH_RATE           ascp -l                                                  (10g)
#   BENCH_MODES          "plain" (-T) and/or "enc" (encrypted)                    ("plain enc")
#   BENCH_REPS           repetitions of the direct,forward,forward,direct cycle   (1)
#   BENCH_LATENCY_RUNS   runs per path for the latency (each daemon run)          (50)
#   BENCH_FORWARDINGS    live forwardings for the scale part                      (1000)
#   BENCH_THREADS        concurrent API clients in the scale part (at most 32)    (8)
#   BENCH_PORT_LOW / BENCH_PORT_HIGH   the daemon's port range (must hold BENCH_FORWARDINGS)  (5000 / 7000)
#   BENCH_SECTIONS       which parts to run: latency goodput scale               ("latency goodput scale")
#   BENCH_TIMEOUT        time limit of every transfer and every client batch, s   (300)
#   BENCH_SETTLE_SECS    before the second daemon run, wait at most this long for the
#                        first run's API connections to leave the proxy ns's conntrack
#                        table (TIME_WAIT, 120 s); 0 = do not wait                 (150)
#   BENCH_SKIP_BUILD     1: use target/release/{ascp,fasp-proxy} as they are      (0)
#   BENCH_TMPDIR         where the temp dir goes (needs ~2 x BENCH_MIB free)      (${TMPDIR:-/tmp})
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

BENCH_MIB=${BENCH_MIB:-512}
BENCH_RATE=${BENCH_RATE:-10g}
BENCH_MODES=${BENCH_MODES:-plain enc}
BENCH_REPS=${BENCH_REPS:-1}
BENCH_LATENCY_RUNS=${BENCH_LATENCY_RUNS:-50}
BENCH_FORWARDINGS=${BENCH_FORWARDINGS:-1000}
BENCH_THREADS=${BENCH_THREADS:-8}
BENCH_PORT_LOW=${BENCH_PORT_LOW:-5000}
BENCH_PORT_HIGH=${BENCH_PORT_HIGH:-7000}
BENCH_SECTIONS=${BENCH_SECTIONS:-latency goodput scale}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
BENCH_SETTLE_SECS=${BENCH_SETTLE_SECS:-150}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

REQUIRED_PACKAGES=(openssh-server openssh-client iproute2 nftables)

PREFIX=fpf
NS_C="$PREFIX-$$-client"
NS_P="$PREFIX-$$-proxy"
NS_S="$PREFIX-$$-server"
CLIENT_IP=192.0.2.2
PROXY_C_IP=192.0.2.1
PROXY_S_IP=198.51.100.1
SERVER_IP=198.51.100.2
API_PORT=9091
PROXY_USER=benchuser
# A throw-away password for a throw-away daemon; given to the clients through the environment only.
PROXY_PASS="fpf-$$-$RANDOM$RANDOM"
DAEMON_LIMIT=7200 # the daemon and sshd are bounded too (seconds)
BUSY_LOAD=0.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ASCP="$ROOT/target/release/ascp"
FP="$ROOT/target/release/fasp-proxy"
HELPER="$ROOT/scripts/lib/fwd_bench.py"

WORK=""
DPID=""  # the daemon itself (child of its `timeout`)
DTPID="" # its `timeout`
T_START=$SECONDS
COMMAND_LINE="BENCH_MIB=$BENCH_MIB BENCH_RATE=$BENCH_RATE BENCH_MODES='$BENCH_MODES' BENCH_REPS=$BENCH_REPS BENCH_LATENCY_RUNS=$BENCH_LATENCY_RUNS BENCH_FORWARDINGS=$BENCH_FORWARDINGS BENCH_THREADS=$BENCH_THREADS BENCH_PORT_LOW=$BENCH_PORT_LOW BENCH_PORT_HIGH=$BENCH_PORT_HIGH BENCH_SETTLE_SECS=$BENCH_SETTLE_SECS BENCH_SECTIONS='$BENCH_SECTIONS' scripts/bench-forward.sh"

# Progress goes to the script's own stderr (fd 4), also from inside functions whose output is
# redirected to a file (the traps can fire there).
exec 4>&2
log() { printf '[bench-forward %(%H:%M:%S)T] %s\n' -1 "$*" >&4; }
die() {
	log "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup (scripts/lib/lab.sh): the daemon (SIGTERM first, so it removes its entries), our PIDs,
# anything left inside our namespaces, the namespaces, the temp dir.
# ---------------------------------------------------------------------------------------------
stop_daemon() { # gracefully: the daemon closes its forwardings and removes its kernel entries
	lab_term_daemon "$DPID" "$DTPID"
	DPID="" DTPID=""
}
cleaned_up() { echo "bench-forward: cleaned up after $((SECONDS - T_START)) s" >&4; }
LAB_NAME=bench-forward LAB_LOG=log LAB_CLEANUP_FIRST=stop_daemon LAB_CLEANUP_LAST=cleaned_up
trap lab_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces): sudo $0"
if ! [[ $BENCH_SETTLE_SECS =~ ^[0-9]+$ ]] || ((BENCH_SETTLE_SECS > 600)); then die "BENCH_SETTLE_SECS must be 0-600"; fi
for v in BENCH_MIB BENCH_REPS BENCH_LATENCY_RUNS BENCH_FORWARDINGS BENCH_THREADS BENCH_PORT_LOW \
	BENCH_PORT_HIGH BENCH_TIMEOUT; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer"; fi
done
for m in $BENCH_MODES; do [[ $m == plain || $m == enc ]] || die "BENCH_MODES: unknown mode '$m' (plain, enc)"; done
for s in $BENCH_SECTIONS; do
	[[ $s == latency || $s == goodput || $s == scale ]] || die "BENCH_SECTIONS: unknown '$s' (latency, goodput, scale)"
done
((BENCH_PORT_HIGH <= 65535 && BENCH_PORT_LOW >= 1024)) || die "BENCH_PORT_LOW/HIGH must be 1024-65535"
# The range must hold every forwarding at once, besides the API's own port when it falls inside.
((BENCH_PORT_HIGH - BENCH_PORT_LOW + 1 >= BENCH_FORWARDINGS + 1)) ||
	die "the port range $BENCH_PORT_LOW-$BENCH_PORT_HIGH cannot hold $BENCH_FORWARDINGS forwardings"
((BENCH_THREADS <= 32)) || die "BENCH_THREADS: at most 32 (the API's per-source connection cap, <per_source><max_api_connections>)"
section() { [[ " $BENCH_SECTIONS " == *" $1 "* ]]; }

lab_require_packages "${REQUIRED_PACKAGES[@]}"
PY=$(command -v python3) || die "python3 is needed (scripts/lib/fwd_bench.py)"
PY=$("$PY" -c 'import sys; print(sys.executable)') # the interpreter itself, not a shim
[[ -r $HELPER ]] || die "$HELPER not found"

if [[ $BENCH_SKIP_BUILD != 1 ]]; then
	lab_build_release "$ROOT" --bins || die "cargo build --release failed 6 times"
fi
[[ -x $ASCP && -x $FP ]] || die "$ASCP or $FP not found (build them or unset BENCH_SKIP_BUILD)"

lab_sweep_stale "$PREFIX" 'client|proxy|server'

lab_workdir "$BENCH_TMPDIR" fpf-bench
WORK=$LAB_WORK

LAB_BUSY_LOAD=$BUSY_LOAD
LOAD_START=$(lab_loadavg)

# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
lab_chain "$NS_C" "$CLIENT_IP" "$NS_P" "$PROXY_C_IP" "$PROXY_S_IP" "$NS_S" "$SERVER_IP" ||
	die "no route client -> server"

# ---------------------------------------------------------------------------------------------
# The outside server: sshd with ForceCommand <release ascp> --server, throw-away keys
# ---------------------------------------------------------------------------------------------
SSH_DIR="$WORK/ssh"
mkdir -m 700 "$SSH_DIR"
lab_keygen "$SSH_DIR/ssh_host_ed25519_key" fasp-bench
lab_keygen "$SSH_DIR/id_ed25519" fasp-bench
KEY="$SSH_DIR/id_ed25519"
cp "$KEY.pub" "$SSH_DIR/authorized_keys"
SSHD_EXTRA=("LogLevel INFO" "MaxStartups 200")
# OpenSSH 9.8+ penalises sources whose connections end before authentication (the latency part
# closes every connection after the banner): off in this lab sshd.
OPENSSH_VER=$(ssh -V 2>&1 | sed -n 's/^OpenSSH_\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
read -r OSV_MAJ OSV_MIN <<<"${OPENSSH_VER:-0 0}"
if ((OSV_MAJ > 9 || (OSV_MAJ == 9 && OSV_MIN >= 8))); then SSHD_EXTRA+=("PerSourcePenalties no"); fi
lab_sshd_config "$SSH_DIR/sshd_config" "$SERVER_IP" "$SSH_DIR/ssh_host_ed25519_key" "$SSH_DIR/authorized_keys" \
	"${SSHD_EXTRA[@]}" "ForceCommand $ASCP --server"
lab_start_sshd "$NS_S" "$SERVER_IP" "$SSH_DIR/sshd_config" "$WORK/sshd.log" timeout "$DAEMON_LIMIT" ||
	die "sshd did not start"
# Host keys are checked against the server's name on both paths.
KH="$SSH_DIR/known_hosts"
echo "$SERVER_IP $(cat "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$KH"

# ---------------------------------------------------------------------------------------------
# The proxy: create-config, the forward proxy only, a node-API user; two configurations that
# differ only in <authentication>
# ---------------------------------------------------------------------------------------------
ETC="$WORK/etc"
timeout 30 "$FP" create-config --dir "$ETC" --api-name "$PROXY_C_IP" >"$WORK/create-config.out" 2>&1 || {
	cat "$WORK/create-config.out" >&2
	die "fasp-proxy create-config failed"
}
mkdir -p "$WORK/log"
DLOG="$WORK/log/fasp-proxy.log"
write_conf() { # write_conf FILE AUTH(true|false)
	# <keepalive_interval>: no forwarding may expire while the scale part holds it open without
	# keepalives (the default is 180 s; opening and closing 1000 with authentication takes longer
	# on a loaded machine).
	cat >"$1" <<-EOF
		<CONF><server>
		<rproxy><log_level>0</log_level><log_directory>$WORK/log</log_directory></rproxy>
		<proxy><enabled>true</enabled><authentication>$2</authentication>
		<bind_ip_address>$PROXY_C_IP</bind_ip_address>
		<port_range_low>$BENCH_PORT_LOW</port_range_low><port_range_high>$BENCH_PORT_HIGH</port_range_high>
		<keepalive_interval>900</keepalive_interval>
		<allowed_destinations><cidr>198.51.100.0/24</cidr></allowed_destinations>
		</proxy>
		<enable_http>true</enable_http><http_port>$API_PORT</http_port>
		<forwarding_type>nftables</forwarding_type>
		</server></CONF>
	EOF
}
CONF_AUTH="$ETC/aspera.conf"
CONF_NOAUTH="$ETC/aspera-noauth.conf" # beside it: the same node-users file (not consulted)
write_conf "$CONF_AUTH" true
write_conf "$CONF_NOAUTH" false
printf '%s\n' "$PROXY_PASS" | timeout 60 "$FP" --config "$CONF_AUTH" node-user add "$PROXY_USER" >"$WORK/node-user.out" 2>&1 || {
	cat "$WORK/node-user.out" >&2
	die "fasp-proxy node-user add failed"
}

start_daemon() { # start_daemon CONF LABEL: `fasp-proxy run` in the proxy ns -> DTPID, DPID
	local conf=$1 label=$2 from
	from=$(stat -c %s "$DLOG" 2>/dev/null || echo 0)
	ip netns exec "$NS_P" timeout "$DAEMON_LIMIT" "$FP" --config "$conf" run >"$WORK/daemon-$label.out" 2>&1 &
	DTPID=$!
	lab_register_pid "$DTPID"
	started() { [[ $(tail -c +"$((from + 1))" "$DLOG" 2>/dev/null) == *"Started on port(s) $API_PORT"* ]]; }
	for _ in $(seq 100); do
		started && break
		kill -0 "$DTPID" 2>/dev/null || break
		sleep 0.1
	done
	started || {
		cat "$WORK/daemon-$label.out" "$DLOG" >&2 2>/dev/null
		die "fasp-proxy run ($label) did not start"
	}
	DPID=$(awk '{print $1}' "/proc/$DTPID/task/$DTPID/children" 2>/dev/null || true)
	[[ $DPID =~ ^[0-9]+$ && $(cat "/proc/$DPID/comm" 2>/dev/null) == fasp-proxy ]] || die "cannot find the daemon's PID"
	lab_wait_listen "$NS_P" "$PROXY_C_IP" "$API_PORT" || die "the API does not listen on $PROXY_C_IP:$API_PORT"
	log "fasp-proxy run is up ($label, pid $DPID)"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status"; }
threads_of() { awk '/^Threads:/ { print $2 }' "/proc/$DPID/status"; }
daemon_cpu() { # user+system seconds of the daemon so far
	local stat
	stat=$(cat "/proc/$DPID/stat")
	stat=${stat##*) }
	awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / t }' <<<"$stat"
}
daemon_cpu_split() { # "user system" seconds of the daemon so far
	local stat
	stat=$(cat "/proc/$DPID/stat")
	stat=${stat##*) }
	awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f %.2f\n", $12 / t, $13 / t }' <<<"$stat"
}
cpu_delta() { # cpu_delta "U0 S0" "U1 S1" -> "user U s + system S s"
	awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f s (user %.2f + system %.2f)\n", (y[1] - x[1]) + (y[2] - x[2]), y[1] - x[1], y[2] - x[2] }'
}
# Connections the proxy namespace's kernel tracks (each API call is one TCP connection, tracked
# in TIME_WAIT for 120 s after it closed).
conntrack_count() { timeout 10 ip netns exec "$NS_P" cat /proc/sys/net/netfilter/nf_conntrack_count 2>/dev/null || echo -; }
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == "-") print "-"; else printf "%.1f\n", k / 1024 }'; }
# nft_counts -> "name count" lines and "total N" for the proxy's table (nothing: "total 0")
nft_counts() {
	{ timeout 30 ip netns exec "$NS_P" nft -j list table ip fasp_proxy 2>/dev/null || true; } | "$PY" "$HELPER" nftcount
}
nft_total() { nft_counts | awk '$1 == "total" { print $2 }'; }
# Lines of `nft list table ip fasp_proxy` that name the client (what tests/forward_proxy.rs reads).
nft_client_lines() {
	{ timeout 30 ip netns exec "$NS_P" nft list table ip fasp_proxy 2>/dev/null || true; } | grep -c "$CLIENT_IP" || true
}
live_forwardings() { # "N live forwardings" of `fasp-proxy sessions`; -1 when unreadable
	local n
	n=$({ timeout 30 ip netns exec "$NS_P" "$FP" sessions 2>/dev/null || true; } | awk '/ live forwarding/ { print $1 }')
	[[ $n =~ ^[0-9]+$ ]] && echo "$n" || echo -1
}
helper() { # helper CMD ARGS...: scripts/lib/fwd_bench.py in the client namespace, bounded, in the
	# background (so Ctrl-C is handled at once), its password from the environment
	local p rc=0
	FWD_BENCH_PASS=$PROXY_PASS timeout -k 5 "$((BENCH_TIMEOUT + 60))" ip netns exec "$NS_C" \
		"$PY" "$HELPER" "$1" --api "$PROXY_C_IP:$API_PORT" --user "$PROXY_USER" "${@:2}" &
	p=$!
	lab_register_pid "$p"
	wait "$p" || rc=$?
	return "$rc"
}

declare -A RES
now_us() { echo "${EPOCHREALTIME/./}"; }
mbit() { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s == "-" || s + 0 <= 0) print "-"; else printf "%.1f\n", bytes * 8 / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
mean() { awk '{ for (i = 1; i <= NF; i++) if ($i != "-") { s += $i; n++ } } END { if (n) printf "%.1f\n", s / n; else print "-" }' <<<"$*"; }
# quantile Q VALUES...: nearest-rank quantile (Q = 50 median, 90 p90), "-" without values
quantile() {
	local q=$1
	shift
	tr ' ' '\n' <<<"$*" | grep -v '^-*$' | sort -g | awk -v q="$q" '
		{ v[NR] = $1 }
		END {
			if (!NR) { print "-"; exit }
			if (q == 50 && NR % 2 == 0) { printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2; exit }
			r = int(q / 100 * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
			printf "%.6f\n", v[r]
		}'
}
ms() { awk -v s="$1" 'BEGIN { if (s == "-" || s == "") print "-"; else printf "%.2f\n", s * 1000 }'; }
FAILS=0
NOTES=()

# ---------------------------------------------------------------------------------------------
# Daemon run 1: <authentication> true
# ---------------------------------------------------------------------------------------------
start_daemon "$CONF_AUTH" auth
sleep 1
RES[auth.rss.start]=$(rss_kib)

# Check both paths once with a 1-byte file (and warm up sshd and the daemon's code paths).
TINY="$WORK/tiny.bin"
head -c 1 /dev/urandom >"$TINY"
DST="$WORK/dst"
mkdir -p "$DST"
ascp_cmd() { # ascp_cmd PATH(direct|forward) MODE SRC DSTDIR: runs ascp bounded
	local path=$1 mode=$2 src=$3 dst=$4 proxy=() enc=()
	[[ $path == forward ]] && proxy=(--proxy "dnat://$PROXY_USER@$PROXY_C_IP:$API_PORT")
	[[ $mode == plain ]] && enc=(-T)
	ASPERA_PROXY_PASS=$PROXY_PASS timeout -k 5 "$BENCH_TIMEOUT" ip netns exec "$NS_C" "$ASCP" "${proxy[@]}" \
		-P 22 -i "$KEY" --known-hosts "$KH" --overwrite always -l "$BENCH_RATE" "${enc[@]}" \
		"$src" "root@$SERVER_IP:$dst/"
}
stamp() { # each stdin line prefixed with the time it arrived (microseconds)
	local l
	while IFS= read -r l; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$l"; done
}
# ascp_timed PATH MODE SRC DSTDIR OUT: ascp's stdout lines time-stamped into OUT, then
# "END <us> <rc>". "Completed:" is printed when every file is confirmed, before the SSH session
# (and, through the proxy, the forwarding) is closed; END is when the process has exited.
ascp_timed() {
	local out=$5 rc=0
	ascp_cmd "$1" "$2" "$3" "$4" 2>"$out.err" </dev/null | stamp >"$out" || rc=$?
	echo "END ${EPOCHREALTIME/./} $rc" >>"$out"
}
# timed_result OUT T0 -> "DONE_S WALL_S RC ASCP_MBIT" ("-" for what is missing); ASCP_MBIT is
# ascp's own rate from "Completed: ... (2.95Gb/s)".
timed_result() {
	awk -v t0="$2" '
		$2 == "Completed:" && done == "" {
			done = $1
			if (match($0, /\(([0-9.]+)([GMK]?)b\/s\)/)) {
				r = substr($0, RSTART + 1, RLENGTH - 5)
				u = substr(r, length(r), 1)
				if (u == "G") own = (r + 0) * 1000; else if (u == "M") own = r + 0; else if (u == "K") own = (r + 0) / 1000; else own = (r + 0) / 1e6
			}
		}
		$1 == "END" { end = $2; rc = $3 }
		END {
			printf "%s %s %s %s\n", (done == "" ? "-" : sprintf("%.3f", (done - t0) / 1e6)),
				(end == "" ? "-" : sprintf("%.3f", (end - t0) / 1e6)), (rc == "" ? 1 : rc),
				(own == "" ? "-" : sprintf("%.1f", own))
		}' "$1"
}
for path in direct forward; do
	mkdir -p "$DST/check"
	if ! lab_run_bg ascp_cmd "$path" enc "$TINY" "$DST/check" >"$WORK/check-$path.log" 2>&1 </dev/null || ! cmp -s "$TINY" "$DST/check/tiny.bin"; then
		cat "$WORK/check-$path.log" >&2
		tail -n 20 "$DLOG" >&2 || true
		die "a $path transfer of a 1-byte file failed"
	fi
	rm -rf "$DST/check"
done
grep -q "forwarding 1 opened: user $PROXY_USER, client $CLIENT_IP -> server $SERVER_IP" "$DLOG" ||
	die "the forward transfer did not go through a forwarding (daemon log: $DLOG)"
log "direct and forwarded transfers work"

# ---------------------------------------------------------------------------------------------
# 1. Latency: open -> first SSH banner byte through the forwarding, vs a direct connect
# ---------------------------------------------------------------------------------------------
latency() { # latency LABEL: BENCH_LATENCY_RUNS per path -> RES[lat.LABEL.*]
	local label=$1 out="$WORK/latency-$1.txt" k
	lab_check_load "latency ($label)"
	RES[lat.$label.ct]=$(conntrack_count)
	helper latency --server "$SERVER_IP" --runs "$BENCH_LATENCY_RUNS" --deadline "$BENCH_TIMEOUT" >"$out" 2>&1 ||
		{ FAILS=$((FAILS + 1)) && log "  the latency client reported errors: $(grep -m 3 -E '^(error|note)' "$out" | tr '\n' ' ')"; }
	RES[lat.$label.n.forward]=$(grep -c '^run forward ' "$out" || true)
	RES[lat.$label.n.direct]=$(grep -c '^run direct ' "$out" || true)
	RES[lat.$label.errors]=$(grep -c '^error ' "$out" || true)
	# forward: total, open call, open end -> first byte, TCP connect, close call; direct: total, connect
	local -a fwd_cols=(x x total open banner connect close) dir_cols=(x x total connect)
	for k in 2 3 4 5 6; do
		RES[lat.$label.forward.${fwd_cols[$k]}]=$(awk -v c=$((k + 1)) '$1 == "run" && $2 == "forward" { print $c }' "$out" | xargs)
	done
	for k in 2 3; do
		RES[lat.$label.direct.${dir_cols[$k]}]=$(awk -v c=$((k + 1)) '$1 == "run" && $2 == "direct" { print $c }' "$out" | xargs)
	done
	log "  latency ($label): forward median $(ms "$(quantile 50 "${RES[lat.$label.forward.total]}")") ms (open call $(ms "$(quantile 50 "${RES[lat.$label.forward.open]}")") ms), direct median $(ms "$(quantile 50 "${RES[lat.$label.direct.total]}")") ms; ${RES[lat.$label.n.forward]} + ${RES[lat.$label.n.direct]} runs, ${RES[lat.$label.errors]} errors"
}
if section latency; then latency auth; fi

# ---------------------------------------------------------------------------------------------
# 2. Goodput: ascp through a forwarding vs direct
# ---------------------------------------------------------------------------------------------
ORDER=()
for ((r = 0; r < BENCH_REPS; r++)); do ORDER+=(direct forward forward direct); done
single_run() { # single_run PATH MODE -> appends Mbit/s to RES[gp.MODE.PATH(.done|.own)]
	local path=$1 mode=$2 t0 out="$WORK/single-$2-$1" tdone wall rc own st=ok
	rm -rf "$DST/single"
	mkdir -p "$DST/single"
	t0=$(now_us)
	lab_run_bg ascp_timed "$path" "$mode" "$SRC" "$DST/single" "$out" || true
	read -r tdone wall rc own <<<"$(timed_result "$out" "$t0")"
	cmp -s "$SRC" "$DST/single/src.bin" || st=FAIL
	((rc == 0)) || st="FAIL(rc=$rc)"
	local m=- md=-
	if [[ $st == ok ]]; then
		m=$(mbit "$SRC_BYTES" "$wall")
		md=$(mbit "$SRC_BYTES" "$tdone")
	else
		FAILS=$((FAILS + 1))
		own=-
		tail -n 5 "$out.err" >&2 || true
	fi
	RES[gp.$mode.$path]+="$m "
	RES[gp.$mode.$path.done]+="$md "
	RES[gp.$mode.$path.own]+="$own "
	log "  $mode $path: $m Mbit/s by exit (${wall} s), $md by 'Completed' (${tdone} s), ascp says $own Mbit/s, $st"
	rm -rf "$DST/single"
}
if section goodput; then
	SRC="$WORK/src.bin"
	log "writing the test file: $BENCH_MIB MiB (random content)"
	timeout "$BENCH_TIMEOUT" head -c "$((BENCH_MIB * 1048576))" /dev/urandom >"$SRC"
	SRC_BYTES=$(stat -c %s "$SRC")
	cat "$SRC" >/dev/null
	CPU0=$(daemon_cpu)
	for mode in $BENCH_MODES; do
		lab_check_load "goodput, $mode"
		for path in "${ORDER[@]}"; do single_run "$path" "$mode"; done
	done
	RES[gp.daemon_cpu]=$(awk -v a="$CPU0" -v b="$(daemon_cpu)" 'BEGIN { printf "%.2f\n", b - a }')
	rm -f "$SRC"
fi

# ---------------------------------------------------------------------------------------------
# 3. Scale: BENCH_FORWARDINGS live forwardings, memory, open and close rates
# ---------------------------------------------------------------------------------------------
scale() { # scale LABEL -> RES[sc.LABEL.*]
	local label=$1 ids="$WORK/ids-$1.txt" out cpu0 n
	lab_check_load "$BENCH_FORWARDINGS forwardings ($label)"
	# At rest: after the daemon has served calls (the latency and transfers, or a warm-up), so the
	# figure holds what any serving daemon holds.
	sleep 1
	RES[sc.$label.rest]=$(rss_kib)
	RES[sc.$label.rest_threads]=$(threads_of)
	RES[sc.$label.before_elems]=$(nft_total)
	RES[sc.$label.ct_before]=$(conntrack_count)
	cpu0=$(daemon_cpu_split)
	out="$WORK/open-$label.txt"
	helper open --server "$SERVER_IP" --count "$BENCH_FORWARDINGS" --threads "$BENCH_THREADS" \
		--ids "$ids" --deadline "$BENCH_TIMEOUT" >"$out" 2>&1 || { FAILS=$((FAILS + 1)) && log "  open: $(grep -m 3 -E '^(error|open)' "$out" | tr '\n' ' ')"; }
	RES[sc.$label.open]=$(awk '$1 == "open" { print }' "$out")
	RES[sc.$label.open_cpu]=$(cpu_delta "$cpu0" "$(daemon_cpu_split)")
	RES[sc.$label.ct_open]=$(conntrack_count)
	sleep 1
	RES[sc.$label.full]=$(rss_kib)
	RES[sc.$label.full_hwm]=$(hwm_kib)
	RES[sc.$label.full_threads]=$(threads_of)
	RES[sc.$label.full_fds]=$(find "/proc/$DPID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
	nft_counts >"$WORK/nft-full-$label.txt" || true
	RES[sc.$label.full_elems]=$(awk '$1 == "total" { print $2 }' "$WORK/nft-full-$label.txt")
	RES[sc.$label.full_detail]=$(awk '$1 != "total" && $2 > 0 { printf "%s%s %s", sep, $1, $2; sep = ", " }' "$WORK/nft-full-$label.txt")
	RES[sc.$label.full_live]=$(live_forwardings)
	n=$(wc -l <"$ids" 2>/dev/null || echo 0)
	log "  $label: $n forwardings open: $(awk '{ print $9 }' <<<"${RES[sc.$label.open]:-x x x x x x x x -}")/s; daemon RSS $(mib "${RES[sc.$label.rest]}") -> $(mib "${RES[sc.$label.full]}") MiB; kernel elements ${RES[sc.$label.full_elems]} (${RES[sc.$label.full_detail]}); sessions says ${RES[sc.$label.full_live]}"
	cpu0=$(daemon_cpu_split)
	out="$WORK/close-$label.txt"
	helper close --ids "$ids" --threads "$BENCH_THREADS" --deadline "$BENCH_TIMEOUT" >"$out" 2>&1 ||
		{ FAILS=$((FAILS + 1)) && log "  close: $(grep -m 3 -E '^(error|close)' "$out" | tr '\n' ' ')"; }
	RES[sc.$label.close]=$(awk '$1 == "close" { print }' "$out")
	RES[sc.$label.close_cpu]=$(cpu_delta "$cpu0" "$(daemon_cpu_split)")
	RES[sc.$label.ct_close]=$(conntrack_count)
	# Nothing may be left: every element of the table, and every line naming the client.
	RES[sc.$label.after_elems]=$(nft_total)
	RES[sc.$label.after_lines]=$(nft_client_lines)
	RES[sc.$label.after_live]=$(live_forwardings)
	sleep 2
	RES[sc.$label.after]=$(rss_kib)
	log "  $label: closed: $(awk '{ print $9 }' <<<"${RES[sc.$label.close]:-x x x x x x x x -}")/s; left: ${RES[sc.$label.after_elems]} elements, ${RES[sc.$label.after_lines]} lines naming $CLIENT_IP, ${RES[sc.$label.after_live]} live; RSS after $(mib "${RES[sc.$label.after]}") MiB"
	if [[ ${RES[sc.$label.after_elems]} != 0 || ${RES[sc.$label.after_lines]} != 0 || ${RES[sc.$label.after_live]} != 0 ]]; then
		FAILS=$((FAILS + 1))
		NOTES+=("$label: left after closing every forwarding: ${RES[sc.$label.after_elems]} kernel elements, ${RES[sc.$label.after_lines]} nft lines naming $CLIENT_IP, ${RES[sc.$label.after_live]} live forwardings")
		timeout 30 ip netns exec "$NS_P" nft list table ip fasp_proxy >"$WORK/nft-left-$label.txt" 2>&1 || true
	fi
}
if section scale; then scale auth; fi
RES[auth.hwm]=$(hwm_kib)

# ---------------------------------------------------------------------------------------------
# Daemon run 2: <authentication> false (the API and the kernel programming alone)
# ---------------------------------------------------------------------------------------------
if section latency || section scale; then
	stop_daemon
	RES[auth.left_after_stop]=$(nft_total)
	# Every API call leaves its TCP connection in the proxy namespace's conntrack table for 120 s
	# (TIME_WAIT), and the daemon walks that table on every open and close (see the docs): the
	# second daemon run starts once the first run's calls have left it, so both start alike.
	if section scale && ((BENCH_SETTLE_SECS > 0)); then
		settle_to=$(( ${RES[sc.auth.ct_before]:-0} + 50 ))
		log "waiting up to $BENCH_SETTLE_SECS s for the proxy namespace's conntrack table to drop from $(conntrack_count) to $settle_to entries"
		t_settle=$SECONDS
		for _ in $(seq "$((BENCH_SETTLE_SECS * 2))"); do
			ct=$(conntrack_count)
			[[ $ct =~ ^[0-9]+$ ]] && ((ct <= settle_to)) && break
			((SECONDS - t_settle < BENCH_SETTLE_SECS)) || break
			sleep 0.5
		done
		RES[settle]="$((SECONDS - t_settle)) s, to $(conntrack_count) entries"
	fi
	start_daemon "$CONF_NOAUTH" noauth
	sleep 1
	RES[noauth.rss.start]=$(rss_kib)
	# Warm-up: a few forwardings opened and closed, so "at rest" is a daemon that has served.
	helper open --server "$SERVER_IP" --count 16 --threads 4 --ids "$WORK/ids-warmup.txt" --deadline 60 >"$WORK/warmup-open.txt" 2>&1 || true
	helper close --ids "$WORK/ids-warmup.txt" --threads 4 --deadline 60 >"$WORK/warmup-close.txt" 2>&1 || true
	if section latency; then latency noauth; fi
	if section scale; then scale noauth; fi
	RES[noauth.hwm]=$(hwm_kib)
	stop_daemon
	RES[noauth.left_after_stop]=$(nft_total)
fi
NOTICES=$(grep -ciE "warn|error|panic" "$DLOG" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
g() { echo "${RES[$1]:--}"; }
field() { # field RECORD NAME: the value after NAME in a "open ok N failed N secs S rate R ..." record
	awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) { print $(i + 1); exit } }' <<<"$1"
}
ALL_LOADS=$(printf '%s; ' "${LAB_LOADS[@]}")
{
	echo "== fasp-proxy forward proxy benchmark (scripts/bench-forward.sh) =="
	echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $((SECONDS - T_START)) s"
	echo "kernel:   $(uname -srm)"
	echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)"
	echo "load:     $LOAD_START at start, $(lab_loadavg) at end (1/5/15 min)"
	echo "          ${ALL_LOADS%; }"
	echo "binaries: $("$FP" --version 2>/dev/null), $("$ASCP" --version 2>/dev/null) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [[ -n $(git status --porcelain -- src 2>/dev/null) ]] && echo '+dirty'))"
	echo "tools:    $(ssh -V 2>&1 | awk '{print $1}' | tr -d ,), $("$PY" --version 2>&1), $(nft --version 2>/dev/null)"
	echo "command:  $COMMAND_LINE"
	echo
	if section latency; then
		echo "latency, ms: POST /proxy/open start -> first byte of the outside sshd's banner through the forwarding"
		echo "  (then POST /proxy/close), vs a direct TCP connect to $SERVER_IP:22 -> first banner byte;"
		echo "  $BENCH_LATENCY_RUNS runs per path, alternating which goes first; fresh HTTP connection per call"
		printf '  %-22s %-8s %8s %8s   %s\n' "daemon" path median p90 "median of the parts"
		for label in auth noauth; do
			name="authentication true"
			[[ $label == noauth ]] && name="authentication false"
			f=$(g "lat.$label.forward.total") d=$(g "lat.$label.direct.total")
			fm=$(quantile 50 "$f") fp=$(quantile 90 "$f") dm=$(quantile 50 "$d") dp=$(quantile 90 "$d")
			printf '  %-22s %-8s %8s %8s   open call %s, open reply -> first byte %s (TCP connect %s); close call %s\n' \
				"$name" forward "$(ms "$fm")" "$(ms "$fp")" "$(ms "$(quantile 50 "$(g "lat.$label.forward.open")")")" \
				"$(ms "$(quantile 50 "$(g "lat.$label.forward.banner")")")" "$(ms "$(quantile 50 "$(g "lat.$label.forward.connect")")")" \
				"$(ms "$(quantile 50 "$(g "lat.$label.forward.close")")")"
			printf '  %-22s %-8s %8s %8s   TCP connect %s\n' "" direct "$(ms "$dm")" "$(ms "$dp")" "$(ms "$(quantile 50 "$(g "lat.$label.direct.connect")")")"
			printf '  %-22s %-8s %8s %8s   (%s + %s runs, %s errors; %s flows in the proxy ns conntrack table at start)\n' "" "ratio" "$(ratio "$fm" "$dm")" "$(ratio "$fp" "$dp")" \
				"$(g "lat.$label.n.forward")" "$(g "lat.$label.n.direct")" "$(g "lat.$label.errors")" "$(g "lat.$label.ct")"
		done
		echo
	fi
	if section goodput; then
		echo "goodput, Mbit/s, 1 x $BENCH_MIB MiB, ascp -l $BENCH_RATE (runs in the order ${ORDER[*]:0:4}):"
		echo "  'exit' = file bytes * 8 / time until ascp exited (through the proxy: open, SSH, transfer, close call);"
		echo "  'done' = until ascp printed 'Completed:'; 'ascp' = ascp's own 'Completed: ... (X Mb/s)' figure"
		echo "  ratio = mean forward / mean direct; 'med' = median forward / median direct"
		rw=$((BENCH_REPS * 16 > 30 ? BENCH_REPS * 16 : 30)) # room for the runs: 2 per cycle, up to "12345.6/"
		printf "  %-12s %-5s %-${rw}s %-${rw}s %8s %8s %6s %5s\n" what until "direct runs" "forward runs" direct forward ratio med
		for mode in $BENCH_MODES; do
			what="-T"
			[[ $mode == enc ]] && what="encrypted"
			for until in exit "done" ascp; do
				sfx=""
				[[ $until == "done" ]] && sfx=.done
				[[ $until == ascp ]] && sfx=.own
				dr=$(g "gp.$mode.direct$sfx") fr=$(g "gp.$mode.forward$sfx")
				d=$(mean "$dr") p=$(mean "$fr") md=$(quantile 50 "$dr") mp=$(quantile 50 "$fr")
				printf "  %-12s %-5s %-${rw}s %-${rw}s %8s %8s %6s %5s\n" "$what" "$until" "$(xargs <<<"$dr" | tr ' ' /)" \
					"$(xargs <<<"$fr" | tr ' ' /)" "$d" "$p" "$(ratio "$p" "$d")" "$(ratio "$mp" "$md")"
				what=""
			done
		done
		echo "  target: forward/direct >= 0.97. Daemon CPU during all goodput runs: $(g gp.daemon_cpu) s"
		echo
	fi
	if section scale; then
		echo "$BENCH_FORWARDINGS live forwardings: $BENCH_THREADS client threads, a fresh HTTP connection per call"
		echo "  (rate = forwardings / wall time of the batch; call = one POST's time as a client thread saw it)"
		for label in auth noauth; do
			name="authentication true (argon2id per call, at most 2 at once)"
			[[ $label == noauth ]] && name="authentication false"
			o=$(g "sc.$label.open") c=$(g "sc.$label.close")
			rest=$(g "sc.$label.rest") full=$(g "sc.$label.full")
			echo "  $name:"
			for what in open close; do
				r=$o
				[[ $what == close ]] && r=$c
				printf '    %-6s %s/%s ok in %s s = %s/s (first tenth %s/s, last tenth %s/s); call median %s ms, p90 %s ms, max %s ms\n' "$what:" \
					"$(field "$r" ok)" "$BENCH_FORWARDINGS" "$(field "$r" secs)" "$(field "$r" rate)" "$(field "$r" rate_first_tenth)" "$(field "$r" rate_last_tenth)" \
					"$(ms "$(field "$r" call_median)")" "$(ms "$(field "$r" call_p90)")" "$(ms "$(field "$r" call_max)")"
				printf '           daemon CPU %s\n' "$(g "sc.$label.${what}_cpu")"
			done
			echo "    conntrack flows in the proxy ns: $(g "sc.$label.ct_before") before, $(g "sc.$label.ct_open") after opening, $(g "sc.$label.ct_close") after closing"
			echo "    VmRSS: at rest $(mib "$rest") MiB -> with $BENCH_FORWARDINGS open $(mib "$full") MiB = +$(awk -v a="$rest" -v b="$full" -v n="$BENCH_FORWARDINGS" 'BEGIN { if (a == "-" || b == "-") print "-"; else printf "%.1f MiB, %.2f KiB/forwarding", (b - a) / 1024, (b - a) / n }'); after closing all $(mib "$(g "sc.$label.after")") MiB; VmHWM $(mib "$(g "sc.$label.full_hwm")") MiB; $(g "sc.$label.full_threads") threads, $(g "sc.$label.full_fds") fds"
			echo "    kernel: $(g "sc.$label.full_elems") elements with all open ($(g "sc.$label.full_detail")), \`fasp-proxy sessions\`: $(g "sc.$label.full_live") live"
			echo "            after closing: $(g "sc.$label.after_elems") elements, $(g "sc.$label.after_lines") lines of \`nft list table ip fasp_proxy\` naming $CLIENT_IP, $(g "sc.$label.after_live") live"
		done
		echo
	fi
	echo "daemon memory (VmRSS): at start $(mib "$(g auth.rss.start)") MiB (authentication true), $(mib "$(g noauth.rss.start)") MiB (false); VmHWM of the runs $(mib "$(g auth.hwm)") / $(mib "$(g noauth.hwm)") MiB"
	[[ -n ${RES[settle]:-} ]] && echo "between the daemon runs: waited $(g settle) in the proxy ns's conntrack table"
	echo "checks: $FAILS failures; kernel elements left after each daemon stopped: $(g auth.left_after_stop) / $(g noauth.left_after_stop); $NOTICES warning/error lines in the daemon log"
	for n in "${NOTES[@]}"; do echo "  $n"; done
} | tee "$WORK/summary.txt"
((FAILS == 0)) || exit 1
