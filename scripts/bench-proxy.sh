#!/usr/bin/env bash
# Reverse proxy benchmark (issue 5, "Benchmarks"): `ascp` through `fasp-proxy run` against `ascp`
# straight to the internal server, side by side in one run, over throw-away network namespaces.
# See docs/benchmarks.md, "Reverse proxy".
#
#   sudo ./scripts/bench-proxy.sh                    # defaults (about 4 minutes)
#   sudo BENCH_MIB=128 BENCH_CONC_MIB=4 ./scripts/bench-proxy.sh
#
# Lab:  client ns 192.0.2.2 --veth-- 192.0.2.1 proxy ns 198.51.100.1 --veth-- 198.51.100.2 server ns
#       fasp-proxy run listens on 192.0.2.1:33001 (and all addresses of the proxy ns); sshd on
#       198.51.100.2:22 with ForceCommand <release ascp> --server. The proxy ns routes (ip_forward=1),
#       so "direct" traffic crosses the same kernel as proxied traffic, only without the proxy.
#
# What it measures:
#   1. goodput, proxied (ascp -P 33001 root@192.0.2.1) vs direct (ascp -P 22 root@198.51.100.2), -T
#      and encrypted, same file: one session (BENCH_MIB), and BENCH_CONC concurrent sessions
#      (BENCH_CONC_MIB each; aggregate = total bytes / wall time of the whole batch). Order
#      direct, proxied, proxied, direct (BENCH_REPS times) to even out drift. Two clocks per run:
#      until the ascp process exits ("exit"), and until it prints "Completed:" ("done": every file
#      confirmed by the receiver, before the SSH session is closed); they differ when closing
#      the session is slow.
#   2. session set-up: ascp of a 1-byte file, median of BENCH_SETUP_RUNS per path, alternating
#      which path goes first; both clocks.
#   3. the daemon's memory (VmRSS) at rest and with BENCH_IDLE idle sessions: OpenSSH `ssh -p 33001
#      root@192.0.2.1 'ascp --server'` whose stdin sends nothing. The proxy ends such a session 30 s
#      after its exec (no SessionInit), so the connections are opened paced (at most
#      BENCH_IDLE_INFLIGHT still authenticating, under the per-source limit of 64 set here) and the peak is
#      taken from samples of `fasp-proxy sessions` and /proc/<pid>/status. The sessions are then
#      closed (ssh ended by PID) and the whole is repeated (BENCH_IDLE_WAVES), to see whether the
#      memory is given back or reused.
#
# Safety: every link, address, route, sysctl and nft change is made inside the namespaces this
# script creates (fpx-<pid>-client/-proxy/-server); traffic goes only to documentation addresses
# inside them. On exit (also on failure or Ctrl-C) it stops the processes it started, by PID,
# then anything left inside its namespaces, deletes the namespaces and its temp dir. Stale
# namespaces of earlier crashed runs (fpx-<pid>-* whose PID is gone) are deleted at start.
#
# Environment (all optional):
#   BENCH_MIB            single-session file size, MiB                         (512)
#   BENCH_CONC           concurrent sessions                                   (50)
#   BENCH_CONC_MIB       file size per concurrent session, MiB                 (16)
#   BENCH_RATE           ascp -l                                               (10g)
#   BENCH_MODES          "plain" (-T) and/or "enc" (encrypted)                 ("plain enc")
#   BENCH_REPS           repetitions of the direct,proxied,proxied,direct cycle (1)
#   BENCH_SETUP_RUNS     1-byte transfers per path for the set-up time          (10)
#   BENCH_IDLE           idle sessions for the memory figure                    (500)
#   BENCH_IDLE_INFLIGHT  most idle connections opened but not yet exec'd        (40)
#   BENCH_IDLE_LAUNCH_SECS  stop opening idle sessions after this long          (24)
#   BENCH_IDLE_WAVES     how many times the idle sessions are opened and closed (2)
#   BENCH_TIMEOUT        time limit of every transfer, seconds                  (300)
#   BENCH_PIN            1: client ascp on CPU 0, server ascp on CPU 1 (taskset), for
#                        less scheduling noise on small machines; same for both paths    (0)
#   BENCH_SECTIONS       which parts to run: goodput (= single concurrent) setup memory
#                                                                   ("goodput setup memory")
#   BENCH_SKIP_BUILD     1: use target/release/{ascp,fasp-proxy} as they are    (0)
#   BENCH_TMPDIR         where the temp dir goes (needs ~2 x BENCH_MIB free)    (${TMPDIR:-/tmp})
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

BENCH_MIB=${BENCH_MIB:-512}
BENCH_CONC=${BENCH_CONC:-50}
BENCH_CONC_MIB=${BENCH_CONC_MIB:-16}
BENCH_RATE=${BENCH_RATE:-10g}
BENCH_MODES=${BENCH_MODES:-plain enc}
BENCH_REPS=${BENCH_REPS:-1}
BENCH_SETUP_RUNS=${BENCH_SETUP_RUNS:-10}
BENCH_IDLE=${BENCH_IDLE:-500}
BENCH_IDLE_INFLIGHT=${BENCH_IDLE_INFLIGHT:-40}
BENCH_IDLE_LAUNCH_SECS=${BENCH_IDLE_LAUNCH_SECS:-24}
BENCH_IDLE_WAVES=${BENCH_IDLE_WAVES:-2}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
BENCH_SECTIONS=${BENCH_SECTIONS:-goodput setup memory}
BENCH_PIN=${BENCH_PIN:-0}
CLIENT_PIN=() SERVER_PIN=""
if [[ $BENCH_PIN == 1 ]]; then
	CLIENT_PIN=(taskset -c 0) SERVER_PIN="taskset -c 1 "
fi
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

REQUIRED_PACKAGES=(openssh-server openssh-client iproute2 nftables)

PREFIX=fpx
NS_C="$PREFIX-$$-client"
NS_P="$PREFIX-$$-proxy"
NS_S="$PREFIX-$$-server"
CLIENT_IP=192.0.2.2
PROXY_C_IP=192.0.2.1
PROXY_S_IP=198.51.100.1
SERVER_IP=198.51.100.2
PROXY_PORT=33001
DAEMON_LIMIT=7200 # the daemon and sshd are bounded too (seconds)
BUSY_LOAD=0.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ASCP="$ROOT/target/release/ascp"
FP="$ROOT/target/release/fasp-proxy"

WORK=""
DPID="" # the daemon itself (child of its `timeout`)
T_START=$SECONDS

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup (scripts/lib/lab.sh): the daemon (SIGTERM first, so it removes its entries), our PIDs,
# anything left inside our namespaces, the namespaces, the temp dir.
# ---------------------------------------------------------------------------------------------
stop_daemon() { # the daemon first, gracefully: it closes its sessions and removes its kernel entries
	lab_term_daemon "$DPID"
}
cleaned_up() { echo "bench: cleaned up after $((SECONDS - T_START)) s" >&3; }
LAB_NAME=bench LAB_LOG=log LAB_CLEANUP_FIRST=stop_daemon LAB_CLEANUP_LAST=cleaned_up
trap lab_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces): sudo $0"
for v in BENCH_MIB BENCH_CONC BENCH_CONC_MIB BENCH_REPS BENCH_SETUP_RUNS BENCH_IDLE \
	BENCH_IDLE_INFLIGHT BENCH_IDLE_LAUNCH_SECS BENCH_IDLE_WAVES BENCH_TIMEOUT; do
	[[ ${!v} =~ ^[0-9]+$ ]] && ((${!v} > 0)) || die "$v must be a positive integer"
done
for m in $BENCH_MODES; do [[ $m == plain || $m == enc ]] || die "BENCH_MODES: unknown mode '$m' (plain, enc)"; done
for s in $BENCH_SECTIONS; do
	[[ $s == goodput || $s == single || $s == concurrent || $s == setup || $s == memory ]] ||
		die "BENCH_SECTIONS: unknown '$s' (goodput = single + concurrent, setup, memory)"
done
((BENCH_IDLE_INFLIGHT < 64)) || log "note: BENCH_IDLE_INFLIGHT >= 64, the per-source cap this script configures; expect refusals"
section() { # section NAME: whether BENCH_SECTIONS asks for it ("goodput" = single + concurrent)
	[[ " $BENCH_SECTIONS " == *" $1 "* ]] && return 0
	[[ $1 == single || $1 == concurrent ]] && [[ " $BENCH_SECTIONS " == *" goodput "* ]] && return 0
	[[ $1 == goodput ]] && { [[ " $BENCH_SECTIONS " == *" single "* ]] || [[ " $BENCH_SECTIONS " == *" concurrent "* ]]; }
}

lab_require_packages "${REQUIRED_PACKAGES[@]}"

if [[ $BENCH_SKIP_BUILD != 1 ]]; then
	lab_build_release "$ROOT" --bin ascp --bin fasp-proxy || die "cargo build --release failed 6 times"
fi
[[ -x $ASCP && -x $FP ]] || die "$ASCP or $FP not found (build them or unset BENCH_SKIP_BUILD)"

lab_sweep_stale "$PREFIX" 'client|proxy|server'

lab_workdir "$BENCH_TMPDIR" fpx-bench
WORK=$LAB_WORK

LAB_BUSY_LOAD=$BUSY_LOAD
LOAD_START=$(lab_loadavg)

# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
lab_chain "$NS_C" "$CLIENT_IP" "$NS_P" "$PROXY_C_IP" "$PROXY_S_IP" "$NS_S" "$SERVER_IP" ||
	die "no route client -> server"

# ---------------------------------------------------------------------------------------------
# sshd in the server namespace (ForceCommand: the release ascp), throw-away keys
# ---------------------------------------------------------------------------------------------
SSH_DIR="$WORK/ssh"
mkdir -m 700 "$SSH_DIR"
lab_keygen "$SSH_DIR/ssh_host_ed25519_key" fasp-bench
lab_keygen "$SSH_DIR/id_ed25519" fasp-bench
KEY="$SSH_DIR/id_ed25519"
cp "$KEY.pub" "$SSH_DIR/authorized_keys"
lab_sshd_config "$SSH_DIR/sshd_config" "$SERVER_IP" "$SSH_DIR/ssh_host_ed25519_key" "$SSH_DIR/authorized_keys" \
	"LogLevel INFO" "MaxStartups 200" "ForceCommand $SERVER_PIN$ASCP --server"
lab_start_sshd "$NS_S" "$SERVER_IP" "$SSH_DIR/sshd_config" "$WORK/sshd.log" timeout "$DAEMON_LIMIT" ||
	die "sshd did not start"

# ---------------------------------------------------------------------------------------------
# The proxy: create-config, one default rule to the server, `fasp-proxy run` in the proxy ns
# ---------------------------------------------------------------------------------------------
ETC="$WORK/etc"
timeout 30 "$FP" create-config --dir "$ETC" >"$WORK/create-config.out" 2>&1 || {
	cat "$WORK/create-config.out" >&2
	die "fasp-proxy create-config failed"
}
cp "$KEY.pub" "$ETC/root.keys"
mkdir -p "$WORK/log"
CONF="$ETC/aspera.conf"
cat >"$CONF" <<EOF
<CONF><server><rproxy>
<enabled>true</enabled>
<log_level>0</log_level>
<log_directory>$WORK/log</log_directory>
<ssh_bind_address>0.0.0.0</ssh_bind_address>
<ssh_port>$PROXY_PORT</ssh_port>
<ssh_host_key>$ETC/ssh_host_ed25519_key</ssh_host_key>
<authorized_keys_file>$ETC/%u.keys</authorized_keys_file>
<rules>
<rule><host>$SERVER_IP:22</host><keyfile>$KEY</keyfile></rule>
</rules>
</rproxy>
<!-- One client address opens up to BENCH_IDLE_INFLIGHT logins at once on purpose. -->
<per_source><max_startups>64</max_startups></per_source>
</server></CONF>
EOF
DLOG="$WORK/log/fasp-proxy.log"
# Both host keys for the client: the server's (direct) and the proxy's front end.
{
	echo "$SERVER_IP $(cat "$SSH_DIR/ssh_host_ed25519_key.pub")"
	echo "[$PROXY_C_IP]:$PROXY_PORT $(cat "$ETC/ssh_host_ed25519_key.pub")"
} >"$SSH_DIR/known_hosts"
KH="$SSH_DIR/known_hosts"
# The proxy checks the server's host key strictly: recorded in advance.
echo "$SERVER_IP $(cat "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$ETC/known_hosts"

ip netns exec "$NS_P" timeout "$DAEMON_LIMIT" "$FP" --config "$CONF" run >"$WORK/daemon.out" 2>&1 &
DTPID=$!
lab_register_pid "$DTPID"
for _ in $(seq 100); do
	grep -q "listening on" "$DLOG" 2>/dev/null && break
	kill -0 "$DTPID" 2>/dev/null || break
	sleep 0.1
done
grep -q "listening on" "$DLOG" 2>/dev/null || {
	cat "$WORK/daemon.out" "$DLOG" >&2 2>/dev/null
	die "fasp-proxy run did not start"
}
DPID=$(cat "/proc/$DTPID/task/$DTPID/children" 2>/dev/null | awk '{print $1}')
[[ $DPID =~ ^[0-9]+$ && $(cat "/proc/$DPID/comm" 2>/dev/null) == fasp-proxy ]] || die "cannot find the daemon's PID"
log "fasp-proxy run is up (pid $DPID)"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status"; }
daemon_cpu() { # user+system seconds of the daemon so far
	local stat
	stat=$(cat "/proc/$DPID/stat")
	stat=${stat##*) }
	awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / t }' <<<"$stat"
}
sessions_count() { # live sessions of the daemon (the "N live sessions" line of `fasp-proxy sessions`)
	local n
	n=$(timeout 10 ip netns exec "$NS_P" "$FP" sessions 2>/dev/null | awk '/ live session/ { print $1 }')
	[[ $n =~ ^[0-9]+$ ]] && echo "$n" || echo -1
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }
RSS_START=$(rss_kib)
sleep 1
RSS_START=$(rss_kib)

# Check both paths once (and warm up the sshd / proxy code paths).
TINY="$WORK/tiny.bin"
head -c 1 /dev/urandom >"$TINY"
DST="$WORK/dst"
mkdir -p "$DST"
ascp_cmd() { # ascp_cmd PATH(direct|proxied) MODE SRC DSTDIR: runs ascp bounded
	local path=$1 mode=$2 src=$3 dst=$4 host port enc=()
	if [[ $path == direct ]]; then host=$SERVER_IP port=22; else host=$PROXY_C_IP port=$PROXY_PORT; fi
	[[ $mode == plain ]] && enc=(-T)
	timeout -k 5 "$BENCH_TIMEOUT" ip netns exec "$NS_C" "${CLIENT_PIN[@]}" "$ASCP" -P "$port" -i "$KEY" \
		--known-hosts "$KH" --overwrite always -l "$BENCH_RATE" "${enc[@]}" "$src" "root@$host:$dst/"
}
stamp() { # each stdin line prefixed with the time it arrived (microseconds)
	local l
	while IFS= read -r l; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$l"; done
}
# ascp_timed PATH MODE SRC DSTDIR OUT: ascp's stdout lines time-stamped into OUT, then
# "END <us> <rc>". The "Completed:" line is printed when every file is confirmed, before the
# SSH session is closed; END is when the process has exited.
ascp_timed() {
	local out=$5 rc=0
	ascp_cmd "$1" "$2" "$3" "$4" 2>"$out.err" | stamp >"$out" || rc=$?
	echo "END ${EPOCHREALTIME/./} $rc" >>"$out"
}
# timed_result OUT T0 -> "DONE_S WALL_S RC" (DONE_S "-" without a Completed line)
timed_result() {
	awk -v t0="$2" '
		$2 == "Completed:" && done == "" { done = $1 }
		$1 == "END" { end = $2; rc = $3 }
		END {
			printf "%s %s %s\n", (done == "" ? "-" : sprintf("%.3f", (done - t0) / 1e6)),
				(end == "" ? "-" : sprintf("%.3f", (end - t0) / 1e6)), (rc == "" ? 1 : rc)
		}' "$1"
}
for path in direct proxied; do
	mkdir -p "$DST/check"
	if ! lab_run_bg ascp_cmd "$path" enc "$TINY" "$DST/check" >"$WORK/check-$path.log" 2>&1 </dev/null || ! cmp -s "$TINY" "$DST/check/tiny.bin"; then
		cat "$WORK/check-$path.log" >&2
		tail -n 20 "$DLOG" >&2 || true
		die "a $path transfer of a 1-byte file failed"
	fi
	rm -rf "$DST/check"
done
log "direct and proxied transfers work"

declare -A RES
now_us() { echo "${EPOCHREALTIME/./}"; }
secs_since() { awk -v a="$1" -v b="$(now_us)" 'BEGIN { printf "%.3f\n", (b - a) / 1e6 }'; }
mbit() { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s + 0 <= 0) print "-"; else printf "%.1f\n", bytes * 8 / s / 1e6 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
mean() { awk '{ for (i = 1; i <= NF; i++) if ($i != "-") { s += $i; n++ } } END { if (n) printf "%.1f\n", s / n; else print "-" }' <<<"$*"; }
median() { tr ' ' '\n' <<<"$*" | grep -v '^-*$' | sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "-"; else if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ORDER=()
for ((r = 0; r < BENCH_REPS; r++)); do ORDER+=(direct proxied proxied direct); done
FAILS=0

# ---------------------------------------------------------------------------------------------
# 1. Goodput: one session and BENCH_CONC concurrent sessions
# ---------------------------------------------------------------------------------------------
single_run() { # single_run PATH MODE -> appends Mbit/s to RES[single.MODE.PATH(.done)]
	local path=$1 mode=$2 t0 out="$WORK/single-$2-$1" done wall rc st=ok
	rm -rf "$DST/single"
	mkdir -p "$DST/single"
	t0=$(now_us)
	lab_run_bg ascp_timed "$path" "$mode" "$SRC" "$DST/single" "$out" || true
	read -r done wall rc <<<"$(timed_result "$out" "$t0")"
	cmp -s "$SRC" "$DST/single/src.bin" || st=FAIL
	((rc == 0)) || st="FAIL(rc=$rc)"
	local m=- md=-
	if [[ $st == ok ]]; then
		m=$(mbit "$SRC_BYTES" "$wall")
		md=$(mbit "$SRC_BYTES" "$done")
	else
		FAILS=$((FAILS + 1))
		tail -n 5 "$out.err" >&2 || true
	fi
	RES[single.$mode.$path]+="$m "
	RES[single.$mode.$path.done]+="$md "
	log "  1 session  $mode $path: $m Mbit/s by exit (${wall} s), $md Mbit/s by 'Completed' (${done} s), $st"
	rm -rf "$DST/single"
}
conc_run() { # conc_run PATH MODE -> appends aggregate Mbit/s to RES[conc.MODE.PATH(.done)]
	local path=$1 mode=$2 t0 i ok=0 pids=() out done wall rc last_done=0 last_wall=0 logged=0
	rm -rf "$DST/conc"
	for ((i = 0; i < BENCH_CONC; i++)); do mkdir -p "$DST/conc/$i"; done
	# Sample the daemon's RSS while the batch runs.
	(while :; do
		rss_kib
		sleep 0.2
	done) >"$WORK/rss-conc-$mode-$path.txt" 2>/dev/null &
	local sampler=$!
	lab_register_pid "$sampler"
	t0=$(now_us)
	for ((i = 0; i < BENCH_CONC; i++)); do
		ascp_timed "$path" "$mode" "$SRC_SMALL" "$DST/conc/$i" "$WORK/conc-$mode-$path-$i" &
		pids+=($!)
		lab_register_pid $!
	done
	for p in "${pids[@]}"; do wait "$p" || true; done
	lab_kill_child "$sampler"
	wait "$sampler" 2>/dev/null || true
	for ((i = 0; i < BENCH_CONC; i++)); do
		out="$WORK/conc-$mode-$path-$i"
		read -r done wall rc <<<"$(timed_result "$out" "$t0")"
		if ((rc == 0)) && [[ $done != - ]] && cmp -s "$SRC_SMALL" "$DST/conc/$i/small.bin"; then
			ok=$((ok + 1))
		elif ((!logged)); then
			logged=1
			log "  session $i failed (rc=$rc): $(tail -n 2 "$out.err" | tr '\n' ' ')"
		fi
		[[ $done != - ]] && last_done=$(awk -v a="$last_done" -v b="$done" 'BEGIN { print (b > a ? b : a) }')
		[[ $wall != - ]] && last_wall=$(awk -v a="$last_wall" -v b="$wall" 'BEGIN { print (b > a ? b : a) }')
	done
	local peak
	peak=$(sort -n "$WORK/rss-conc-$mode-$path.txt" | tail -n 1)
	if [[ $path == proxied && -n $peak ]] && ((peak > ${RES[rss.conc.peak]:-0})); then RES[rss.conc.peak]=$peak; fi
	local m=- md=-
	if ((ok == BENCH_CONC)); then
		m=$(mbit "$((SRC_SMALL_BYTES * BENCH_CONC))" "$last_wall")
		md=$(mbit "$((SRC_SMALL_BYTES * BENCH_CONC))" "$last_done")
	else
		FAILS=$((FAILS + 1))
	fi
	RES[conc.$mode.$path]+="$m "
	RES[conc.$mode.$path.done]+="$md "
	RES[conc.$mode.$path.ok]+="$ok/$BENCH_CONC "
	log "  $BENCH_CONC sessions $mode $path: $m Mbit/s aggregate by last exit (${last_wall} s), $md by last 'Completed' (${last_done} s), $ok/$BENCH_CONC ok, daemon RSS peak $(mib "${peak:-0}") MiB"
	rm -rf "$DST/conc"
}

if section goodput; then
	SRC="$WORK/src.bin"
	SRC_SMALL="$WORK/small.bin"
	log "writing test files: $BENCH_MIB MiB and $BENCH_CONC_MIB MiB (random content)"
	timeout "$BENCH_TIMEOUT" head -c "$((BENCH_MIB * 1048576))" /dev/urandom >"$SRC"
	timeout "$BENCH_TIMEOUT" head -c "$((BENCH_CONC_MIB * 1048576))" /dev/urandom >"$SRC_SMALL"
	SRC_BYTES=$(stat -c %s "$SRC")
	SRC_SMALL_BYTES=$(stat -c %s "$SRC_SMALL")
	cat "$SRC" "$SRC_SMALL" >/dev/null
	CPU0=$(daemon_cpu)
	for mode in $BENCH_MODES; do
		section single || break
		lab_check_load "goodput, 1 session, $mode"
		for path in "${ORDER[@]}"; do single_run "$path" "$mode"; done
	done
	for mode in $BENCH_MODES; do
		section concurrent || break
		lab_check_load "goodput, $BENCH_CONC sessions, $mode"
		for path in "${ORDER[@]}"; do conc_run "$path" "$mode"; done
	done
	RES[goodput.daemon_cpu]=$(awk -v a="$CPU0" -v b="$(daemon_cpu)" 'BEGIN { printf "%.2f\n", b - a }')
	rm -f "$SRC" "$SRC_SMALL"
fi

# ---------------------------------------------------------------------------------------------
# 2. Session set-up: a 1-byte file, median of BENCH_SETUP_RUNS per path
# ---------------------------------------------------------------------------------------------
if section setup; then
	lab_check_load "session set-up"
	mkdir -p "$DST/setup"
	for ((i = 0; i < BENCH_SETUP_RUNS; i++)); do
		if ((i % 2)); then paths=(proxied direct); else paths=(direct proxied); fi
		for path in "${paths[@]}"; do
			rm -f "$DST/setup/tiny.bin"
			out="$WORK/setup-$path-$i"
			t0=$(now_us)
			lab_run_bg ascp_timed "$path" enc "$TINY" "$DST/setup" "$out" || true
			read -r done wall rc <<<"$(timed_result "$out" "$t0")"
			if ((rc == 0)) && [[ $done != - ]] && cmp -s "$TINY" "$DST/setup/tiny.bin"; then
				RES[setup.$path]+="$done "
				RES[setup.$path.wall]+="$wall "
				RES[setup.$path.tail]+="$(awk -v a="$done" -v b="$wall" 'BEGIN { printf "%.3f", b - a }') "
			else
				FAILS=$((FAILS + 1))
				log "  set-up run $i $path failed (rc=$rc): $(tail -n 2 "$out.err" | tr '\n' ' ')"
			fi
		done
	done
	for path in direct proxied; do
		RES[setup.$path.median]=$(median ${RES[setup.$path]:-})
		RES[setup.$path.wall.median]=$(median ${RES[setup.$path.wall]:-})
		RES[setup.$path.tail.median]=$(median ${RES[setup.$path.tail]:-})
		log "  set-up $path: median ${RES[setup.$path.median]} s to 'Completed' (${RES[setup.$path]:-}), ${RES[setup.$path.wall.median]} s to exit"
	done
fi

# ---------------------------------------------------------------------------------------------
# 3. Memory at BENCH_IDLE idle sessions (the 30 s window before the proxy's handshake timeout)
# ---------------------------------------------------------------------------------------------
idle_wave() { # idle_wave W: opens BENCH_IDLE idle sessions, samples, closes them -> RES[idle.W.*]
	local w=$1 launched=0 peak=0 peak_rss=0 max_rss=0 peak_t=- peak_fd=- t0 el est alive rss
	local launching room k p t_launch_end="" refused0 pids=()
	# Let earlier sessions finish, then read the daemon at rest.
	for _ in $(seq 50); do [[ $(sessions_count) == 0 ]] && break; sleep 0.2; done
	sleep 1
	RES[idle.$w.rest]=$(rss_kib)
	RES[idle.$w.rest_fd]=$(ls "/proc/$DPID/fd" | wc -l)
	refused0=$(grep -c "already authenticating" "$DLOG" 2>/dev/null || true)
	exec 7<>"$WORK/idle.fifo" # a writer that never writes: the sessions' stdin stays open, silent
	t0=$(now_us)
	: >"$WORK/idle-samples-$w.txt"
	while :; do
		el=$(secs_since "$t0")
		est=$(sessions_count)
		alive=$(ip netns pids "$NS_C" 2>/dev/null | wc -l)
		rss=$(rss_kib)
		echo "$el $launched $alive $est $rss" >>"$WORK/idle-samples-$w.txt"
		if ((rss > max_rss)); then max_rss=$rss; fi
		if ((est > peak)); then
			peak=$est peak_rss=$rss peak_t=$el
			peak_fd=$(ls "/proc/$DPID/fd" | wc -l)
			RES[idle.$w.peak_anon]=$(awk '/^RssAnon:/ { print $2 }' "/proc/$DPID/status")
			RES[idle.$w.peak_threads]=$(awk '/^Threads:/ { print $2 }' "/proc/$DPID/status")
		fi
		launching=0
		if awk -v e="$el" -v l="$BENCH_IDLE_LAUNCH_SECS" 'BEGIN { exit !(e < l) }' && ((alive < BENCH_IDLE && launched < 2 * BENCH_IDLE)); then
			# Keep at most BENCH_IDLE_INFLIGHT connections between TCP connect and exec.
			launching=1
			room=$((BENCH_IDLE_INFLIGHT - (alive - (est < 0 ? 0 : est))))
			((room > BENCH_IDLE - alive)) && room=$((BENCH_IDLE - alive))
			((room > 20)) && room=20
			for ((k = 0; k < room; k++)); do
				timeout -k 5 90 ip netns exec "$NS_C" "${IDLE_SSH[@]}" <"$WORK/idle.fifo" >/dev/null 2>>"$WORK/idle-ssh.err" 7>&- &
				pids+=($!)
				lab_register_pid $!
				launched=$((launched + 1))
			done
		elif [[ -z $t_launch_end ]]; then
			t_launch_end=$el
		fi
		# Done when all are live, or when no longer launching and the count stopped rising for
		# 2 s; never past 40 s (the first sessions end 30 s after their exec anyway).
		if ((est >= BENCH_IDLE)); then break; fi
		if ((!launching)) && awk -v e="$el" -v p="${peak_t/-/0}" 'BEGIN { exit !(e - p > 2) }'; then break; fi
		if awk -v e="$el" 'BEGIN { exit !(e > 40) }'; then break; fi
		sleep 0.1
	done
	RES[idle.$w.launched]=$launched
	RES[idle.$w.peak]=$peak
	RES[idle.$w.peak_t]=$peak_t
	RES[idle.$w.peak_rss]=$peak_rss
	RES[idle.$w.max_rss]=$max_rss
	RES[idle.$w.peak_fd]=$peak_fd
	RES[idle.$w.hwm]=$(hwm_kib)
	RES[idle.$w.refused]=$(($(grep -c "already authenticating" "$DLOG" 2>/dev/null || true) - refused0))
	log "  wave $w: peak $peak live sessions at ${peak_t} s (launched $launched ssh), daemon RSS $(mib "$peak_rss") MiB (rest $(mib "${RES[idle.$w.rest]}") MiB), $peak_fd fds"
	# End them (by PID), then see whether the daemon gives the memory back.
	for p in "${pids[@]}"; do lab_kill_child "$p" TERM; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	exec 7>&-
	for _ in $(seq 100); do [[ $(sessions_count) == 0 ]] && break; sleep 0.2; done
	sleep 2
	RES[idle.$w.after]=$(rss_kib)
	RES[idle.$w.after_sessions]=$(sessions_count)
}

if section memory; then
	lab_check_load "memory at $BENCH_IDLE idle sessions"
	mkfifo "$WORK/idle.fifo"
	IDLE_SSH=(ssh -p "$PROXY_PORT" -i "$KEY" -o "UserKnownHostsFile=$KH" -o StrictHostKeyChecking=yes
		-o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=20 -o LogLevel=ERROR
		-o ControlMaster=no -o ControlPath=none -o ServerAliveInterval=0 "root@$PROXY_C_IP" "ascp --server")
	for ((w = 1; w <= BENCH_IDLE_WAVES; w++)); do idle_wave "$w"; done
	RES[idle.ssh_errors]=$(sort "$WORK/idle-ssh.err" 2>/dev/null | uniq -c | sort -rn | head -n 3 | sed 's/^ *//' | tr '\n' ';')
fi

# Nothing may be left in the kernel once every session is gone.
LEFT=$(timeout 10 ip netns exec "$NS_P" nft list map ip fasp_proxy sessions 2>/dev/null | grep -c "192.0.2.2 \." || true)
NOTICES=$(grep -ciE "warn|error|panic" "$DLOG" 2>/dev/null || true)

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
g() { echo "${RES[$1]:--}"; }
ALL_LOADS=$(printf '%s; ' "${LAB_LOADS[@]}")
{
	echo "== fasp-proxy reverse proxy benchmark (scripts/bench-proxy.sh) =="
	echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $((SECONDS - T_START)) s"
	echo "kernel:   $(uname -srm)"
	echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)"
	echo "load:     $LOAD_START at start, $(lab_loadavg) at end (1/5/15 min)"
	echo "          ${ALL_LOADS%; }"
	echo "binaries: $("$FP" --version 2>/dev/null), $("$ASCP" --version 2>/dev/null) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [[ -n $(git status --porcelain -- src 2>/dev/null) ]] && echo '+dirty'))"
	echo "tools:    $(ssh -V 2>&1 | awk '{print $1}' | tr -d ,)"
	echo "command:  BENCH_MIB=$BENCH_MIB BENCH_CONC=$BENCH_CONC BENCH_CONC_MIB=$BENCH_CONC_MIB BENCH_RATE=$BENCH_RATE BENCH_MODES='$BENCH_MODES' BENCH_REPS=$BENCH_REPS BENCH_SETUP_RUNS=$BENCH_SETUP_RUNS BENCH_IDLE=$BENCH_IDLE BENCH_IDLE_INFLIGHT=$BENCH_IDLE_INFLIGHT BENCH_IDLE_WAVES=$BENCH_IDLE_WAVES BENCH_PIN=$BENCH_PIN scripts/bench-proxy.sh"
	echo
	if section goodput; then
		echo "goodput, Mbit/s = file bytes * 8 / time from start (runs in the order ${ORDER[*]:0:4}):"
		echo "  'exit' = until the ascp process exited (what a user waits for);"
		echo "  'done' = until ascp printed 'Completed:' (every file confirmed, before the SSH session is closed)"
		echo "  ratio = mean proxied / mean direct; 'med' = median proxied / median direct (robust to one outlier)"
		printf '  %-24s %-5s %-27s %-27s %8s %8s %6s %5s\n' what until "direct runs" "proxied runs" direct proxied ratio med
		for kind in single conc; do
			[[ $kind == single ]] && ! section single && continue
			[[ $kind == conc ]] && ! section concurrent && continue
			for mode in $BENCH_MODES; do
				name="-T"
				[[ $mode == enc ]] && name="encrypted"
				if [[ $kind == single ]]; then what="1 x ${BENCH_MIB} MiB, $name"; else what="$BENCH_CONC x ${BENCH_CONC_MIB} MiB, $name"; fi
				for until in exit done; do
					sfx=""
					[[ $until == done ]] && sfx=.done
					d=$(mean "$(g "$kind.$mode.direct$sfx")") p=$(mean "$(g "$kind.$mode.proxied$sfx")")
					md=$(median "$(g "$kind.$mode.direct$sfx")") mp=$(median "$(g "$kind.$mode.proxied$sfx")")
					printf '  %-24s %-5s %-27s %-27s %8s %8s %6s %5s\n' "$what" "$until" "$(g "$kind.$mode.direct$sfx" | xargs | tr ' ' /)" "$(g "$kind.$mode.proxied$sfx" | xargs | tr ' ' /)" "$d" "$p" "$(ratio "$p" "$d")" "$(ratio "$mp" "$md")"
					what=""
				done
			done
		done
		echo "  target: proxied/direct >= 0.97. $BENCH_CONC sessions: aggregate = all bytes / time until the last one."
		if section concurrent; then
			echo "  daemon CPU during all goodput runs: $(g goodput.daemon_cpu) s; daemon RSS peak during $BENCH_CONC proxied sessions: $(mib "$(g rss.conc.peak)") MiB"
		else
			echo "  daemon CPU during all goodput runs: $(g goodput.daemon_cpu) s"
		fi
		echo
	fi
	if section setup; then
		echo "session set-up: ascp of a 1-byte file (encrypted), median of $BENCH_SETUP_RUNS, seconds from start"
		printf '  %-8s %-12s %-12s  %s\n' path "to 'done'" "to exit" "runs (to 'done')"
		for path in direct proxied; do
			printf '  %-8s %-12s %-12s  %s\n' "$path" "$(g "setup.$path.median")" "$(g "setup.$path.wall.median")" "$(g "setup.$path")"
		done
		echo "  ratio proxied/direct = $(ratio "$(g setup.proxied.median)" "$(g setup.direct.median)") to 'done', $(ratio "$(g setup.proxied.wall.median)" "$(g setup.direct.wall.median)") to exit   (target <= 2.2)"
		echo "  from 'done' to exit (closing the session), median: direct $(g setup.direct.tail.median) s, proxied $(g setup.proxied.tail.median) s"
		echo
	fi
	echo "daemon memory (VmRSS of fasp-proxy run)"
	echo "  at start                       $(mib "$RSS_START") MiB"
	if section memory; then
		for ((w = 1; w <= BENCH_IDLE_WAVES; w++)); do
			rest=$(g "idle.$w.rest") pk=$(g "idle.$w.peak_rss") n=$(g "idle.$w.peak")
			echo "  wave $w: at rest $(mib "$rest") MiB ($(g "idle.$w.rest_fd") fds) -> with $n idle sessions live $(mib "$pk") MiB (anon $(mib "$(g "idle.$w.peak_anon")"), $(g "idle.$w.peak_fd") fds, $(g "idle.$w.peak_threads") threads)   (target <= 50 MiB at $BENCH_IDLE)"
			echo "          +$(mib "$((pk - rest))") MiB = $(awk -v d="$((pk - rest))" -v n="$n" 'BEGIN { if (n > 0) printf "%.1f", d / n; else print "-" }') KiB/session; highest sample $(mib "$(g "idle.$w.max_rss")"), VmHWM $(mib "$(g "idle.$w.hwm")") MiB; after they closed $(mib "$(g "idle.$w.after")") MiB ($(g "idle.$w.after_sessions") left)"
			echo "          $(g "idle.$w.launched") ssh launched (<= $BENCH_IDLE_INFLIGHT opening at once), all live after $(g "idle.$w.peak_t") s; refused by the unauthenticated cap: $(g "idle.$w.refused")"
		done
		echo "  idle session = OpenSSH ssh -p $PROXY_PORT root@$PROXY_C_IP 'ascp --server' (authenticated, exec'd, no SessionInit yet; the proxy ends it after 30 s)"
		echo "  ssh errors: $(g idle.ssh_errors)"
	fi
	echo
	echo "checks: $FAILS failed transfers; $LEFT kernel entries left after the runs; $NOTICES warning/error lines in the daemon log"
} | tee "$WORK/summary.txt"
