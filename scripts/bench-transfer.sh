#!/usr/bin/env bash
# Goodput and CPU benchmark of `ascp` against `iperf3 -u` and OpenSSH `scp`, over one path of
# throw-away network namespaces (issue 4, "Benchmarks"). See docs/benchmarks.md.
#
#   sudo ./scripts/bench-transfer.sh              # 1 GiB file, 500 Mbit/s bottleneck, 1 % loss
#   sudo BENCH_MIB=256 ./scripts/bench-transfer.sh
#
# Path:  client ns 192.0.2.2 --veth-- 192.0.2.1 router ns 198.51.100.1 --veth-- 198.51.100.2 server ns
#
# Scenarios, each measuring iperf3 -u, ascp -T, ascp (encrypted) and scp over the same path:
#   a  free    no shaping, no loss
#   b  shaped  tbf on the router's server-facing egress (BENCH_SHAPE_MBIT, default 500 Mbit/s)
#   c  lossy   as b, plus BENCH_LOSS_PCT (default 1) % random loss (nft numgen in the router's
#              forward hook, both directions); ascp's -l is the shaped rate
#   d  wan     as c, plus BENCH_RTT_MS (default 20) ms of round-trip delay (netem on the router's
#              client-facing egress, i.e. on the return path); scp is stopped after
#              BENCH_SCP_D_TIMEOUT s and measured on what arrived by then
#
# Safety: every link, address, route, sysctl, tc qdisc and nft rule is made inside namespaces
# this script creates (fpb-<pid>-client/-router/-server); traffic goes only to documentation
# addresses inside them. On exit (also on failure or Ctrl-C) it kills the processes it started
# by PID, deletes its namespaces and its temp dir. Stale namespaces of earlier crashed runs
# (fpb-<pid>-* whose PID is gone) are deleted at start; nothing else is touched.
#
# Environment (all optional):
#   BENCH_MIB          test file size in MiB                               (1024)
#   BENCH_SHAPE_MBIT   bottleneck rate for scenarios b and c, Mbit/s        (500)
#   BENCH_LOSS_PCT     random loss in scenario c, whole percent             (1)
#   BENCH_FREE_RATE    ascp -l in scenario a                                (10g)
#   BENCH_IPERF_SECS   iperf3 duration per scenario, seconds                (10)
#   BENCH_IPERF_BW     iperf3 -b values tried in scenario a; the best        ("1G 2G 4G 10G")
#                      receiver-side rate is the loss-free reference
#   BENCH_IPERF_BW_SHAPED  iperf3 -b in scenarios b-d (saturates the shaper)  (2 x shaped rate)
#   BENCH_TIMEOUT      per-command timeout, seconds                         (300)
#   BENCH_RTT_MS       added round-trip delay in scenario d, ms             (20)
#   BENCH_SCP_D_TIMEOUT  scp time limit in scenario d, seconds             (120)
#   BENCH_SCENARIOS    which scenarios to run, e.g. "a c"                   ("a b c d")
#   BENCH_SKIP_BUILD   1: use target/release/ascp as it is                  (0)
#   BENCH_TMPDIR       where the temp dir (test file, copies, keys) lives   (${TMPDIR:-/tmp})
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

BENCH_MIB=${BENCH_MIB:-1024}
BENCH_SHAPE_MBIT=${BENCH_SHAPE_MBIT:-500}
[[ $BENCH_SHAPE_MBIT =~ ^[0-9]+$ ]] && ((BENCH_SHAPE_MBIT > 0)) || {
	echo "bench: BENCH_SHAPE_MBIT must be a positive integer" >&2
	exit 1
}
BENCH_LOSS_PCT=${BENCH_LOSS_PCT:-1}
BENCH_FREE_RATE=${BENCH_FREE_RATE:-10g}
BENCH_IPERF_SECS=${BENCH_IPERF_SECS:-10}
BENCH_IPERF_BW=${BENCH_IPERF_BW:-1G 2G 4G 10G}
BENCH_IPERF_BW_SHAPED=${BENCH_IPERF_BW_SHAPED:-$((BENCH_SHAPE_MBIT * 2))M}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
BENCH_SCENARIOS=${BENCH_SCENARIOS:-a b c d}
BENCH_RTT_MS=${BENCH_RTT_MS:-20}
BENCH_SCP_D_TIMEOUT=${BENCH_SCP_D_TIMEOUT:-120}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

# Packages this script uses (time: /usr/bin/time; jq: parsing iperf3 -J).
REQUIRED_PACKAGES=(iperf3 openssh-server openssh-client iproute2 nftables time jq)

PREFIX=fpb
NS_C="$PREFIX-$$-client"
NS_R="$PREFIX-$$-router"
NS_S="$PREFIX-$$-server"
CLIENT_IP=192.0.2.2
ROUTER_C_IP=192.0.2.1
ROUTER_S_IP=198.51.100.1
SERVER_IP=198.51.100.2
# Interface names: client c0 <-> rc router rs <-> s0 server.
BOTTLENECK_IF=rs
RETURN_IF=rc # router -> client: where scenario d's delay goes
IPERF_PORT=5201
DATAGRAM=1400 # ascp's default --datagram-size; iperf3 -l uses the same payload

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ASCP="$ROOT/target/release/ascp"

WORK=""

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup (scripts/lib/lab.sh): our PIDs, anything left inside our namespaces, the namespaces,
# the temp dir.
# ---------------------------------------------------------------------------------------------
LAB_NAME=bench LAB_LOG=log
trap lab_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces): sudo $0"
[[ $BENCH_MIB =~ ^[0-9]+$ ]] && ((BENCH_MIB > 0)) || die "BENCH_MIB must be a positive integer"
[[ $BENCH_LOSS_PCT =~ ^[0-9]+$ ]] && ((BENCH_LOSS_PCT < 100)) || die "BENCH_LOSS_PCT must be an integer 0..99"
[[ $BENCH_TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_TIMEOUT must be an integer"
[[ $BENCH_IPERF_SECS =~ ^[0-9]+$ ]] || die "BENCH_IPERF_SECS must be an integer"
[[ $BENCH_RTT_MS =~ ^[0-9]+$ ]] || die "BENCH_RTT_MS must be an integer"
[[ $BENCH_SCP_D_TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_SCP_D_TIMEOUT must be an integer"
for s in $BENCH_SCENARIOS; do [[ $s == [abcd] ]] || die "BENCH_SCENARIOS: unknown scenario '$s' (a, b, c, d)"; done

lab_require_packages "${REQUIRED_PACKAGES[@]}"

if [[ $BENCH_SKIP_BUILD != 1 ]]; then
	log "building ascp (release)"
	(cd "$ROOT" && timeout 1800 cargo build --release --bin ascp) >&2 || die "cargo build --release --bin ascp failed"
fi
[[ -x $ASCP ]] || die "$ASCP not found (build it or unset BENCH_SKIP_BUILD)"

# Stale namespaces of earlier crashed runs: exactly fpb-<pid>-{client,router,server}, PID gone.
lab_sweep_stale "$PREFIX" 'client|router|server'

lab_workdir "$BENCH_TMPDIR" fpb-bench
WORK=$LAB_WORK

# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
# The measured commands run through lab_run_bg (scripts/lib/lab.sh): a trapped INT/TERM is
# handled at once, and everything they start lives in one of our namespaces, so the cleanup
# finds it with `ip netns pids`.
log "creating namespaces $NS_C, $NS_R, $NS_S"
lab_add_ns "$NS_C"
lab_add_ns "$NS_R"
lab_add_ns "$NS_S"
# veth pairs are created inside the namespaces: nothing appears in the machine's own namespace.
lab_veth "$NS_C" c0 "$CLIENT_IP/24" "$NS_R" rc "$ROUTER_C_IP/24"
lab_veth "$NS_R" rs "$ROUTER_S_IP/24" "$NS_S" s0 "$SERVER_IP/24"
lab_default_route "$NS_C" "$ROUTER_C_IP"
lab_default_route "$NS_S" "$ROUTER_S_IP"
lab_forwarding "$NS_R"
ip -n "$NS_C" route get "$SERVER_IP" >/dev/null || die "no route client -> server"

# ---------------------------------------------------------------------------------------------
# sshd in the server namespace, throw-away keys
# ---------------------------------------------------------------------------------------------
SSH_DIR="$WORK/ssh"
mkdir -m 700 "$SSH_DIR"
lab_keygen "$SSH_DIR/ssh_host_ed25519_key" fasp-bench
lab_keygen "$SSH_DIR/id_ed25519" fasp-bench
cp "$SSH_DIR/id_ed25519.pub" "$SSH_DIR/authorized_keys"
echo "$SERVER_IP $(cat "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$SSH_DIR/known_hosts"
lab_sshd_config "$SSH_DIR/sshd_config" "$SERVER_IP" "$SSH_DIR/ssh_host_ed25519_key" "$SSH_DIR/authorized_keys" \
	"LogLevel VERBOSE" "MaxStartups 100" "Subsystem sftp /usr/lib/openssh/sftp-server"
lab_start_sshd "$NS_S" "$SERVER_IP" "$SSH_DIR/sshd_config" "$WORK/sshd.log" || die "sshd did not start"

# The server side is started by sshd; this wrapper records its CPU time (one file per run).
cat >"$WORK/ascp-server-timed" <<EOF
#!/bin/sh
# usage: ascp-server-timed LABEL --server
label=\$1
shift
exec /usr/bin/time -o "$WORK/server-\$label.time" -f '%e %U %S' "$ASCP" "\$@"
EOF
chmod 755 "$WORK/ascp-server-timed"

SSH_OPTS=(-i "$SSH_DIR/id_ed25519" -o "UserKnownHostsFile=$SSH_DIR/known_hosts" -o StrictHostKeyChecking=yes
	-o BatchMode=yes -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10)
lab_nsx "$NS_C" ssh "${SSH_OPTS[@]}" "root@$SERVER_IP" true || die "ssh to the lab sshd failed (see $WORK/sshd.log)"

# ---------------------------------------------------------------------------------------------
# Test file
# ---------------------------------------------------------------------------------------------
SRC="$WORK/src.bin"
DST_DIR="$WORK/dst"
mkdir -p "$DST_DIR"
log "writing a ${BENCH_MIB} MiB test file (random content)"
timeout "$BENCH_TIMEOUT" head -c "$((BENCH_MIB * 1024 * 1024))" /dev/urandom >"$SRC"
BYTES=$(stat -c %s "$SRC")
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
if awk -v l="${LOAD_START%% *}" 'BEGIN { exit !(l > 0.5) }'; then
	log "WARNING: load average is $LOAD_START: other work competes for the CPUs, figures will be low"
fi
cat "$SRC" >/dev/null # warm the page cache so every tool reads from memory

# ---------------------------------------------------------------------------------------------
# Shaping and loss (router namespace only)
# ---------------------------------------------------------------------------------------------
# tbf on the router's server-facing egress: burst = 1 ms at the rate (at least 32 KiB), queue
# bounded by latency 20 ms.
SHAPE_BURST=$((BENCH_SHAPE_MBIT * 1000 * 1000 / 8 / 1000))
((SHAPE_BURST < 32768)) && SHAPE_BURST=32768
SHAPE_LATENCY_MS=20

net_reset() {
	ip netns exec "$NS_R" tc qdisc del dev "$BOTTLENECK_IF" root 2>/dev/null || true
	ip netns exec "$NS_R" tc qdisc del dev "$RETURN_IF" root 2>/dev/null || true
	ip netns exec "$NS_R" nft delete table inet fpbench 2>/dev/null || true
}
net_shape() {
	ip netns exec "$NS_R" tc qdisc replace dev "$BOTTLENECK_IF" root handle 1: \
		tbf rate "${BENCH_SHAPE_MBIT}mbit" burst "$SHAPE_BURST" latency "${SHAPE_LATENCY_MS}ms"
}
net_delay() { # the whole RTT on the return path, away from the shaper
	ip netns exec "$NS_R" tc qdisc replace dev "$RETURN_IF" root netem delay "${BENCH_RTT_MS}ms" limit 100000
}
net_loss() { # random drop of forwarded packets, both directions, before the shaper
	ip netns exec "$NS_R" nft -f - <<EOF
table inet fpbench {
	chain forward {
		type filter hook forward priority 0; policy accept;
		numgen random mod 100 < $BENCH_LOSS_PCT counter drop
	}
}
EOF
}

# ---------------------------------------------------------------------------------------------
# Measurements. Each prints "key=value" lines into RES (an associative array).
# ---------------------------------------------------------------------------------------------
declare -A RES

fdiv() { awk -v a="$1" -v b="$2" -v f="${3:-%.1f}" 'BEGIN { if (b + 0 == 0) print "-"; else printf f "\n", a / b }'; }
mbit() { awk -v bytes="$1" -v s="$2" 'BEGIN { if (s + 0 <= 0) print "-"; else printf "%.1f\n", bytes * 8 / s / 1e6 }'; }

run_iperf() { # run_iperf SCEN: the best receiver-side rate over the -b values of the scenario
	local scen=$1 bw bws best=-1
	if [[ $scen == a ]]; then bws=$BENCH_IPERF_BW; else bws=$BENCH_IPERF_BW_SHAPED; fi
	for bw in $bws; do
		run_iperf_once "$scen" "$bw"
		if [[ $IPERF_MBIT != - ]] && awk -v a="$IPERF_MBIT" -v b="$best" 'BEGIN { exit !(a > b) }'; then
			best=$IPERF_MBIT
			RES[$scen.iperf.mbit]=$IPERF_MBIT RES[$scen.iperf.loss]=$IPERF_LOSS
			RES[$scen.iperf.sent]=$IPERF_SENT RES[$scen.iperf.bw]=$bw
		fi
	done
	if [[ $best == -1 ]]; then
		RES[$scen.iperf.mbit]=- RES[$scen.iperf.loss]=- RES[$scen.iperf.sent]=- RES[$scen.iperf.bw]=-
	fi
}

run_iperf_once() { # run_iperf_once SCEN BW -> IPERF_MBIT IPERF_SENT IPERF_LOSS
	local scen=$1 bw=$2 out="$WORK/iperf-$1-$2.json"
	IPERF_MBIT=- IPERF_SENT=- IPERF_LOSS=-
	ip netns exec "$NS_S" iperf3 -s -1 -B "$SERVER_IP" -p "$IPERF_PORT" >"$WORK/iperf-server-$scen.log" 2>&1 &
	local spid=$!
	lab_register_pid "$spid"
	lab_wait_listen "$NS_S" "$SERVER_IP" "$IPERF_PORT" || log "iperf3 server not listening yet"
	# One retry (with a fresh one-shot server if the first one has gone).
	local ok=0 _
	for _ in 1 2; do
		if lab_run_bg timeout "$BENCH_TIMEOUT" ip netns exec "$NS_C" iperf3 -c "$SERVER_IP" -p "$IPERF_PORT" -u \
			-l "$DATAGRAM" -b "$bw" -t "$BENCH_IPERF_SECS" -J >"$out" 2>"$WORK/iperf-$scen.err"; then
			ok=1
			break
		fi
		sleep 0.5
		if ! kill -0 "$spid" 2>/dev/null; then
			ip netns exec "$NS_S" iperf3 -s -1 -B "$SERVER_IP" -p "$IPERF_PORT" >>"$WORK/iperf-server-$scen.log" 2>&1 &
			spid=$!
			lab_register_pid "$spid"
			lab_wait_listen "$NS_S" "$SERVER_IP" "$IPERF_PORT" || true
		fi
	done
	{
		lab_kill_child "$spid"
		wait "$spid"
	} 2>/dev/null || true
	if ((ok == 0)); then
		log "iperf3 -b $bw failed in scenario $scen: $(head -c 400 "$WORK/iperf-$scen.err") $(jq -r '.error // empty' "$out" 2>/dev/null)"
		return 0
	fi
	# iperf3 >= 3.10 has end.sum_received for UDP (receiver side); older: end.sum (+ lost).
	IPERF_MBIT=$(jq -r '((.end.sum_received // .end.sum).bits_per_second) / 1e6 | . * 10 | round / 10' "$out")
	IPERF_SENT=$(jq -r '((.end.sum_sent // .end.sum).bits_per_second) / 1e6 | . * 10 | round / 10' "$out")
	IPERF_LOSS=$(jq -r '(.end.sum.lost_percent // 0) | . * 100 | round / 100' "$out")
	log "  iperf3 -u -b $bw: receiver $IPERF_MBIT Mbit/s (sender $IPERF_SENT), loss $IPERF_LOSS %"
}

check_copy() { # check_copy FILE -> ok | FAIL
	if [[ -f $1 ]] && cmp -s "$SRC" "$1"; then echo ok; else echo FAIL; fi
}

run_ascp() { # run_ascp SCEN MODE(plain|enc) RATE
	local scen=$1 mode=$2 rate=$3 label="$1-ascp-$2"
	local enc_flag=()
	[[ $mode == plain ]] && enc_flag=(-T)
	rm -f "$DST_DIR/src.bin" "$WORK/server-$label.time"
	local rc=0
	lab_run_bg ip netns exec "$NS_C" /usr/bin/time -o "$WORK/client-$label.time" -f '%e %U %S' \
		timeout -k 5 "$BENCH_TIMEOUT" "$ASCP" -q -P 22 -i "$SSH_DIR/id_ed25519" \
		--known-hosts "$SSH_DIR/known_hosts" --remote-ascp "$WORK/ascp-server-timed $label" \
		--overwrite always -l "$rate" "${enc_flag[@]}" "$SRC" "root@$SERVER_IP:$DST_DIR/" \
		>"$WORK/$label.log" 2>&1 || rc=$?
	# The server side writes its time file when it exits (just after the client).
	local _
	for _ in $(seq 50); do
		[[ -s $WORK/server-$label.time ]] && break
		sleep 0.1
	done
	local e cu cs su ss
	read -r e cu cs <<<"$(tail -n 1 "$WORK/client-$label.time" 2>/dev/null || echo "0 0 0")"
	read -r _ su ss <<<"$(tail -n 1 "$WORK/server-$label.time" 2>/dev/null || echo "- - -")"
	local st
	st=$(check_copy "$DST_DIR/src.bin")
	((rc == 0)) || st="FAIL(rc=$rc)"
	RES[$label.secs]=$e
	RES[$label.mbit]=$(mbit "$BYTES" "$e")
	RES[$label.status]=$st
	local gib
	gib=$(awk -v b="$BYTES" 'BEGIN { print b / 1073741824 }')
	RES[$label.ccpu]=$(awk -v u="$cu" -v s="$cs" -v g="$gib" 'BEGIN { printf "%.2f\n", (u + s) / g }')
	if [[ $su == - || -z $su ]]; then
		RES[$label.scpu]=-
	else
		RES[$label.scpu]=$(awk -v u="$su" -v s="$ss" -v g="$gib" 'BEGIN { printf "%.2f\n", (u + s) / g }')
	fi
	log "  ascp $mode -l $rate: ${RES[$label.mbit]} Mbit/s in ${e}s, $st, CPU/GiB client ${RES[$label.ccpu]} s server ${RES[$label.scpu]} s"
	if [[ $st != ok ]]; then
		log "  ascp output (tail):"
		tail -n 5 "$WORK/$label.log" >&2 || true
	fi
}

run_scp() { # run_scp SCEN
	local scen=$1 label="$1-scp" tmo=$BENCH_TIMEOUT
	# With RTT and loss scp crawls; its goodput is then measured on what arrived in time.
	[[ $scen == d ]] && ((tmo > BENCH_SCP_D_TIMEOUT)) && tmo=$BENCH_SCP_D_TIMEOUT
	rm -f "$DST_DIR/src.bin"
	local rc=0
	lab_run_bg ip netns exec "$NS_C" /usr/bin/time -o "$WORK/client-$label.time" -f '%e %U %S' \
		timeout -k 5 "$tmo" scp -q "${SSH_OPTS[@]}" "$SRC" "root@$SERVER_IP:$DST_DIR/" \
		>"$WORK/$label.log" 2>&1 || rc=$?
	local e
	read -r e _ <<<"$(tail -n 1 "$WORK/client-$label.time" 2>/dev/null || echo "0 0 0")"
	local st
	st=$(check_copy "$DST_DIR/src.bin")
	if ((rc == 124 || rc == 137)); then
		# Goodput of what arrived before the timeout.
		local got
		got=$(stat -c %s "$DST_DIR/src.bin" 2>/dev/null || echo 0)
		RES[$label.mbit]=$(mbit "$got" "$e")
		st="TIMEOUT($((got / 1048576)) MiB in ${e}s)"
	elif ((rc != 0)); then
		st="FAIL(rc=$rc)"
		RES[$label.mbit]=-
	else
		RES[$label.mbit]=$(mbit "$BYTES" "$e")
	fi
	RES[$label.secs]=$e
	RES[$label.status]=$st
	log "  scp (timeout ${tmo}s): ${RES[$label.mbit]} Mbit/s in ${e}s, $st"
	if [[ $st == FAIL* ]]; then
		tail -n 5 "$WORK/$label.log" >&2 || true
	fi
}

scenario_desc() {
	case $1 in
	a) echo "a: no shaping, no loss" ;;
	b) echo "b: tbf ${BENCH_SHAPE_MBIT} Mbit/s (burst ${SHAPE_BURST} B, latency ${SHAPE_LATENCY_MS} ms)" ;;
	c) echo "c: tbf ${BENCH_SHAPE_MBIT} Mbit/s + ${BENCH_LOSS_PCT} % random loss (both directions)" ;;
	d) echo "d: as c + ${BENCH_RTT_MS} ms RTT (netem delay on the return path)" ;;
	esac
}

for scen in $BENCH_SCENARIOS; do
	net_reset
	case $scen in
	a) rate=$BENCH_FREE_RATE ;;
	b)
		net_shape
		rate="${BENCH_SHAPE_MBIT}m"
		;;
	c)
		net_shape
		net_loss
		rate="${BENCH_SHAPE_MBIT}m"
		;;
	d)
		if ! net_delay 2>"$WORK/netem.err"; then
			log "scenario d skipped: tc netem is not available in this kernel ($(head -n 1 "$WORK/netem.err"))"
			RES[d.skipped]=1
			continue
		fi
		net_shape
		net_loss
		rate="${BENCH_SHAPE_MBIT}m"
		;;
	esac
	log "scenario $(scenario_desc "$scen")"
	run_iperf "$scen"
	run_ascp "$scen" plain "$rate"
	run_ascp "$scen" enc "$rate"
	run_scp "$scen"
	RES[$scen.rate]=$rate
done
net_reset

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
g() { echo "${RES[$1]:--}"; }
ratio() { # ratio NUM DEN
	if [[ $1 == - || $2 == - ]]; then echo -; else fdiv "$1" "$2" "%.2f"; fi
}

{
	echo "== fasp-proxy transfer benchmark (scripts/bench-transfer.sh) =="
	echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "kernel:   $(uname -srm)"
	echo "load:     $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end (1/5/15 min; > 0 means other work shared the CPUs)"
	echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)"
	echo "ascp:     $("$ASCP" --version 2>/dev/null) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [[ -n $(git status --porcelain -- src 2>/dev/null) ]] && echo '+dirty'))"
	echo "tools:    $(iperf3 --version | head -n 1 | awk '{print $1, $2}'), $(ssh -V 2>&1 | awk '{print $1}' | tr -d ,)"
	echo "file:     $BENCH_MIB MiB ($BYTES bytes), datagram payload $DATAGRAM B, iperf3 -t $BENCH_IPERF_SECS, -b best of '$BENCH_IPERF_BW' in a, $BENCH_IPERF_BW_SHAPED in b-d"
	echo "command:  BENCH_MIB=$BENCH_MIB BENCH_SHAPE_MBIT=$BENCH_SHAPE_MBIT BENCH_LOSS_PCT=$BENCH_LOSS_PCT BENCH_RTT_MS=$BENCH_RTT_MS BENCH_FREE_RATE=$BENCH_FREE_RATE BENCH_IPERF_BW='$BENCH_IPERF_BW' BENCH_SCENARIOS='$BENCH_SCENARIOS' scripts/bench-transfer.sh"
	echo
	printf '%-9s %-8s %11s %11s %12s %9s %9s  %s\n' scenario tool "-l" "Mbit/s" "time s" "cli s/GiB" "srv s/GiB" status
	for scen in $BENCH_SCENARIOS; do
		if [[ -n ${RES[$scen.skipped]:-} ]]; then
			printf '%-9s %s\n' "$scen" "skipped (no tc netem in this kernel)"
			continue
		fi
		printf '%-9s %-8s %11s %11s %12s %9s %9s  %s\n' "$scen" iperf3 "-b $(g "$scen.iperf.bw")" "$(g "$scen.iperf.mbit")" "${BENCH_IPERF_SECS}" - - "loss $(g "$scen.iperf.loss") % (sent $(g "$scen.iperf.sent"))"
		for m in plain enc; do
			l="$scen-ascp-$m"
			name="ascp -T"
			[[ $m == enc ]] && name="ascp"
			printf '%-9s %-8s %11s %11s %12s %9s %9s  %s\n' "$scen" "$name" "$(g "$scen.rate")" "$(g "$l.mbit")" "$(g "$l.secs")" "$(g "$l.ccpu")" "$(g "$l.scpu")" "$(g "$l.status")"
		done
		printf '%-9s %-8s %11s %11s %12s %9s %9s  %s\n' "$scen" scp - "$(g "$scen-scp.mbit")" "$(g "$scen-scp.secs")" - - "$(g "$scen-scp.status")"
	done
	echo
	for scen in $BENCH_SCENARIOS; do echo "  $(scenario_desc "$scen")"; done
	echo "  Mbit/s = file bytes * 8 / wall time of the whole command (SSH setup and checksums included);"
	echo "  iperf3 = receiver-side rate (best -b). CPU = user+system seconds per GiB (ascp client = sender,"
	echo "  server = receiver, started by sshd). status: destination compared byte for byte with cmp."
	echo
	echo "ratios (issue 4 targets):"
	for m in plain enc; do
		name="ascp -T"
		[[ $m == enc ]] && name="ascp   "
		if [[ " $BENCH_SCENARIOS " == *" a "* ]]; then
			echo "  $name / iperf3 loss-free (a)        = $(ratio "$(g "a-ascp-$m.mbit")" "$(g a.iperf.mbit)")   (target >= 0.9)"
		fi
		if [[ " $BENCH_SCENARIOS " == *" c "* ]]; then
			echo "  $name under loss (c) / shaped rate  = $(ratio "$(g "c-ascp-$m.mbit")" "$BENCH_SHAPE_MBIT")   (target >= 0.9)"
		fi
	done
	if [[ " $BENCH_SCENARIOS " == *" b "* ]]; then
		echo "  ascp -T shaped (b) / shaped rate       = $(ratio "$(g b-ascp-plain.mbit)" "$BENCH_SHAPE_MBIT")"
		echo "  iperf3 shaped (b) / shaped rate        = $(ratio "$(g b.iperf.mbit)" "$BENCH_SHAPE_MBIT")"
		echo "  scp shaped (b) / shaped rate           = $(ratio "$(g b-scp.mbit)" "$BENCH_SHAPE_MBIT")"
	fi
	if [[ " $BENCH_SCENARIOS " == *" c "* ]]; then
		echo "  scp under loss (c) / shaped rate       = $(ratio "$(g c-scp.mbit)" "$BENCH_SHAPE_MBIT")   (expected far below)"
	fi
	if [[ " $BENCH_SCENARIOS " == *" d "* && -z ${RES[d.skipped]:-} ]]; then
		echo "  ascp -T loss+RTT (d) / shaped rate     = $(ratio "$(g d-ascp-plain.mbit)" "$BENCH_SHAPE_MBIT")"
		echo "  ascp    loss+RTT (d) / shaped rate     = $(ratio "$(g d-ascp-enc.mbit)" "$BENCH_SHAPE_MBIT")"
		echo "  scp     loss+RTT (d) / shaped rate     = $(ratio "$(g d-scp.mbit)" "$BENCH_SHAPE_MBIT")   (expected far below)"
	fi
} | tee "$WORK/summary.txt"
