#!/usr/bin/env bash
# Front end under flood (issue 12, "Benchmark"): the success rate and the set-up time of
# legitimate `ascp` uploads through `fasp-proxy run`, with no attack, while one address floods
# the SSH front end, and while many addresses do, side by side in one run, over throw-away
# network namespaces. See docs/benchmarks.md, "Front end under flood".
#
#   sudo ./scripts/bench-flood.sh                          # defaults (about 3 minutes once built)
#   sudo BENCH_SKIP_BUILD=1 BENCH_LEGIT=100 BENCH_ROUNDS=1 ./scripts/bench-flood.sh
#   sudo BENCH_PHASES="quiet a" BENCH_FLOOD_RATE=0 ./scripts/bench-flood.sh
#
# Lab:  client ns 192.0.2.2, 2001:db8:1::2 --veth-- 192.0.2.1, 2001:db8:1::1 proxy ns 198.51.100.1
#       --veth-- 198.51.100.2 server ns. The client ns also holds the attackers: 192.0.2.99
#       (192.0.2.98, ... in later rounds) on its link, and 2001:db8:1:1::/64 as a local route on lo
#       (net.ipv6.ip_nonlocal_bind=1 there), routed back from the proxy ns. fasp-proxy run
#       listens on [::]:33001 with the product's default limits; the only change is
#       <per_source><ipv6_prefix>128</ipv6_prefix>, so each IPv6 address of flood B is a source of
#       its own. sshd on 198.51.100.2:22 with ForceCommand <release ascp> --server.
#
# Phases (each round runs them in BENCH_PHASES order, the next round in reverse, to even out drift):
#   quiet   no attack.
#   a       one address (192.0.2.99) keeps BENCH_FLOOD_A_CONNS connections open: half say nothing,
#           half send an SSH version line and stall; each reconnects as soon as the proxy closes it.
#   b       BENCH_FLOOD_B_SOURCES IPv6 addresses x BENCH_FLOOD_B_PER_SOURCE connections, the same way,
#           against the default random early drop (<rproxy><max_startups> 100:30:300).
#   The attackers are scripts/lib/flood.py (python3, standard library only) inside the client
#   namespace; all slots of one flood together open at most BENCH_FLOOD_RATE new connections a
#   second (0: no limit). Each round uses fresh attacker addresses (a penalty lasts up to 600 s
#   and is remembered 10 minutes: a reused address would still be locked out from the round before).
#   A flood starts, the legitimate uploads start once every attacker slot has made its first
#   attempt, and the flood is stopped when they are done (it stops by itself after
#   BENCH_PHASE_MAX_SECS in any case).
#
# What it measures, per phase:
#   - legitimate clients: BENCH_LEGIT uploads (BENCH_LEGIT_PARALLEL at a time) of a 1 KiB file with
#     our release `ascp -P 33001 -q ... root@192.0.2.1:DIR/` from 192.0.2.2: success (exit 0 and
#     the file arrived, cmp) and the set-up time (wall time of the ascp process), median and p90,
#     and their ratio to the quiet phase's.
#   - attackers: connections attempted, admitted (got the proxy's SSH version line), refused
#     (closed before it), how many were held open at most, how long the proxy let admitted ones live.
#   - the daemon: the lines its log gained during the phase (penalties by kind, refusals by cause,
#     deadline closures, the count of random early drops), its CPU seconds, its VmRSS (peak of
#     samples every 0.5 s, and at the end).
#
# Safety: every link, address, route, sysctl and nft change is made inside the namespaces this
# script creates (fpk-<pid>-client/-proxy/-server); traffic goes only to documentation addresses
# (192.0.2.0/24, 198.51.100.0/24, 2001:db8::/32) inside them. On exit (also on failure or Ctrl-C)
# it stops the daemon (SIGTERM first), the processes it started, by PID, then anything left inside
# its namespaces, deletes the namespaces and its temp dir. Stale namespaces of earlier crashed runs
# (fpk-<pid>-* whose PID is gone) are deleted at start. Every loop is bounded in count and time.
#
# Environment (all optional):
#   BENCH_LEGIT               legitimate uploads per phase and round                      (50)
#   BENCH_LEGIT_PARALLEL      of them at once                                             (1)
#   BENCH_LEGIT_INTERVAL      seconds from the start of one upload (or batch) to the next's;
#                             later when the one before is still running                 (0.5)
#   BENCH_ROUNDS              rounds (phase order reversed every other round; at most 9)  (2)
#   BENCH_PHASES              phases of a round, in order: quiet a b                      ("quiet a b")
#   BENCH_FLOOD_A_CONNS       connections the one attacker address keeps open             (400)
#   BENCH_FLOOD_B_SOURCES     attacking IPv6 addresses of flood B                         (100)
#   BENCH_FLOOD_B_PER_SOURCE  connections each of them keeps open                         (10)
#   BENCH_FLOOD_RATE          most new attacker connections a second per flood, 0 = none  (1000)
#   BENCH_FILE_KIB            size of the uploaded file, KiB                              (1)
#   BENCH_SETTLE_SECS         pause after each phase (after the attackers' connections are gone) (3)
#   BENCH_PHASE_MAX_SECS      hard limit of a flood                                       (300)
#   BENCH_TIMEOUT             time limit of each upload, seconds                          (60)
#   BENCH_SKIP_BUILD          1: use target/release/{ascp,fasp-proxy} as they are         (0)
#   BENCH_TMPDIR              where the temp dir goes                                     (${TMPDIR:-/tmp})
set -euo pipefail
# shellcheck source=lib/lab.sh source-path=SCRIPTDIR disable=SC1091 # followed with shellcheck -x
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

BENCH_LEGIT=${BENCH_LEGIT:-50}
BENCH_LEGIT_PARALLEL=${BENCH_LEGIT_PARALLEL:-1}
BENCH_LEGIT_INTERVAL=${BENCH_LEGIT_INTERVAL:-0.5}
BENCH_ROUNDS=${BENCH_ROUNDS:-2}
BENCH_PHASES=${BENCH_PHASES:-quiet a b}
BENCH_FLOOD_A_CONNS=${BENCH_FLOOD_A_CONNS:-400}
BENCH_FLOOD_B_SOURCES=${BENCH_FLOOD_B_SOURCES:-100}
BENCH_FLOOD_B_PER_SOURCE=${BENCH_FLOOD_B_PER_SOURCE:-10}
BENCH_FLOOD_RATE=${BENCH_FLOOD_RATE:-1000}
BENCH_FILE_KIB=${BENCH_FILE_KIB:-1}
BENCH_SETTLE_SECS=${BENCH_SETTLE_SECS:-3}
BENCH_PHASE_MAX_SECS=${BENCH_PHASE_MAX_SECS:-300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-60}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_TMPDIR=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}

REQUIRED_PACKAGES=(openssh-server openssh-client iproute2 nftables)

PREFIX=fpk
NS_C="$PREFIX-$$-client"
NS_P="$PREFIX-$$-proxy"
NS_S="$PREFIX-$$-server"
CLIENT_IP=192.0.2.2
CLIENT_IP6=2001:db8:1::2
PROXY_C_IP=192.0.2.1
PROXY_C_IP6=2001:db8:1::1
PROXY_S_IP=198.51.100.1
SERVER_IP=198.51.100.2
FLOOD_B_NET=2001:db8:1:1:: # /64, local on the client ns's lo
PROXY_PORT=33001
DAEMON_LIMIT=7200 # the daemon and sshd are bounded too (seconds)
BUSY_LOAD=0.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ASCP="$ROOT/target/release/ascp"
FP="$ROOT/target/release/fasp-proxy"
HELPER="$ROOT/scripts/lib/flood.py"

WORK=""
DPID=""  # the daemon itself (child of its `timeout`)
DTPID="" # its `timeout`
T_START=$SECONDS
COMMAND_LINE="BENCH_LEGIT=$BENCH_LEGIT BENCH_LEGIT_PARALLEL=$BENCH_LEGIT_PARALLEL BENCH_LEGIT_INTERVAL=$BENCH_LEGIT_INTERVAL BENCH_ROUNDS=$BENCH_ROUNDS BENCH_PHASES='$BENCH_PHASES' BENCH_FLOOD_A_CONNS=$BENCH_FLOOD_A_CONNS BENCH_FLOOD_B_SOURCES=$BENCH_FLOOD_B_SOURCES BENCH_FLOOD_B_PER_SOURCE=$BENCH_FLOOD_B_PER_SOURCE BENCH_FLOOD_RATE=$BENCH_FLOOD_RATE BENCH_FILE_KIB=$BENCH_FILE_KIB scripts/bench-flood.sh"

# Progress goes to the script's own stderr (fd 4), also from inside functions whose output is
# redirected to a file (the traps can fire there).
exec 4>&2
log() { printf '[bench-flood %(%H:%M:%S)T] %s\n' -1 "$*" >&4; }
die() {
	log "ERROR: $*"
	exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup (scripts/lib/lab.sh): the daemon (SIGTERM first, so it removes its entries), our PIDs
# (the attackers, uploads and samplers among them), anything left inside our namespaces, the
# namespaces, the temp dir.
# ---------------------------------------------------------------------------------------------
stop_daemon() { # gracefully: the daemon closes its sessions and removes its kernel entries
	lab_term_daemon "$DPID" "$DTPID"
	DPID="" DTPID=""
}
cleaned_up() { echo "bench-flood: cleaned up after $((SECONDS - T_START)) s" >&4; }
# shellcheck disable=SC2034 # read by scripts/lib/lab.sh
LAB_NAME=bench-flood LAB_LOG=log LAB_CLEANUP_FIRST=stop_daemon LAB_CLEANUP_LAST=cleaned_up
trap lab_cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

# ---------------------------------------------------------------------------------------------
# Preflight
# ---------------------------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (it creates network namespaces): sudo $0"
for v in BENCH_LEGIT BENCH_LEGIT_PARALLEL BENCH_ROUNDS BENCH_FLOOD_A_CONNS BENCH_FLOOD_B_SOURCES \
	BENCH_FLOOD_B_PER_SOURCE BENCH_FILE_KIB BENCH_PHASE_MAX_SECS BENCH_TIMEOUT; do
	if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} == 0)); then die "$v must be a positive integer"; fi
done
for v in BENCH_FLOOD_RATE BENCH_SETTLE_SECS; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number"
done
((BENCH_ROUNDS <= 9)) || die "BENCH_ROUNDS: at most 9 (one fresh attacker address per round)"
((BENCH_PHASE_MAX_SECS <= 3600)) || die "BENCH_PHASE_MAX_SECS: at most 3600"
((BENCH_LEGIT <= 10000 && BENCH_LEGIT_PARALLEL <= 32)) || die "BENCH_LEGIT at most 10000, BENCH_LEGIT_PARALLEL at most 32"
((BENCH_FLOOD_A_CONNS <= 10000)) || die "BENCH_FLOOD_A_CONNS: at most 10000"
((BENCH_FLOOD_B_SOURCES <= 1000 && BENCH_FLOOD_B_PER_SOURCE <= 100)) ||
	die "BENCH_FLOOD_B_SOURCES at most 1000, BENCH_FLOOD_B_PER_SOURCE at most 100"
if ! [[ $BENCH_LEGIT_INTERVAL =~ ^[0-9]{1,2}(\.[0-9]+)?$ ]]; then
	die "BENCH_LEGIT_INTERVAL must be a number of seconds below 100"
fi
[[ -n ${BENCH_PHASES// /} ]] || die "BENCH_PHASES is empty"
for p in $BENCH_PHASES; do
	[[ $p == quiet || $p == a || $p == b ]] || die "BENCH_PHASES: unknown phase '$p' (quiet, a, b)"
done

lab_require_packages "${REQUIRED_PACKAGES[@]}"
PY=$(command -v python3) || die "python3 is needed (scripts/lib/flood.py)"
PY=$("$PY" -c 'import sys; print(sys.executable)') # the interpreter itself, not a shim
[[ -r $HELPER ]] || die "$HELPER not found"

if [[ $BENCH_SKIP_BUILD != 1 ]]; then
	lab_build_release "$ROOT" --bins || die "cargo build --release failed 6 times"
fi
[[ -x $ASCP && -x $FP ]] || die "$ASCP or $FP not found (build them or unset BENCH_SKIP_BUILD)"

lab_sweep_stale "$PREFIX" 'client|proxy|server'

lab_workdir "$BENCH_TMPDIR" fpk-bench
WORK=$LAB_WORK

LAB_BUSY_LOAD=$BUSY_LOAD
LOAD_START=$(lab_loadavg)

# ---------------------------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------------------------
lab_chain "$NS_C" "$CLIENT_IP" "$NS_P" "$PROXY_C_IP" "$PROXY_S_IP" "$NS_S" "$SERVER_IP" ||
	die "no route client -> server"
# IPv6 on the client link (nodad: usable at once), flood B's sources on the client's lo.
ip -n "$NS_C" -6 addr add "$CLIENT_IP6/64" dev c0 nodad
ip -n "$NS_P" -6 addr add "$PROXY_C_IP6/64" dev pc nodad
lab_nsx "$NS_C" sysctl -q -w net.ipv6.ip_nonlocal_bind=1
ip -n "$NS_C" -6 route add local "$FLOOD_B_NET/64" dev lo
ip -n "$NS_P" -6 route add "$FLOOD_B_NET/64" via "$CLIENT_IP6"
# One fresh attacker address per round for flood A: 192.0.2.99, 192.0.2.98, ...
attacker_a() { echo "192.0.2.$((100 - $1))"; } # attacker_a ROUND
for ((r = 1; r <= BENCH_ROUNDS; r++)); do ip -n "$NS_C" addr add "$(attacker_a "$r")/24" dev c0; done
ip -n "$NS_C" route get "$SERVER_IP" >/dev/null || die "no route client -> server"

# ---------------------------------------------------------------------------------------------
# The internal server: sshd with ForceCommand <release ascp> --server, throw-away keys
# ---------------------------------------------------------------------------------------------
SSH_DIR="$WORK/ssh"
mkdir -m 700 "$SSH_DIR"
lab_keygen "$SSH_DIR/ssh_host_ed25519_key" fasp-bench
lab_keygen "$SSH_DIR/id_ed25519" fasp-bench
KEY="$SSH_DIR/id_ed25519"
cp "$KEY.pub" "$SSH_DIR/authorized_keys"
lab_sshd_config "$SSH_DIR/sshd_config" "$SERVER_IP" "$SSH_DIR/ssh_host_ed25519_key" "$SSH_DIR/authorized_keys" \
	"LogLevel INFO" "MaxStartups 200" "ForceCommand $ASCP --server"
lab_start_sshd "$NS_S" "$SERVER_IP" "$SSH_DIR/sshd_config" "$WORK/sshd.log" timeout "$DAEMON_LIMIT" ||
	die "sshd did not start"

# ---------------------------------------------------------------------------------------------
# The proxy: create-config, one default rule to the server, the front end on [::]:33001 with the
# default limits (IPv6 sources counted per address), `fasp-proxy run` in the proxy ns
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
<ssh_bind_address>::</ssh_bind_address>
<ssh_port>$PROXY_PORT</ssh_port>
<ssh_host_key>$ETC/ssh_host_ed25519_key</ssh_host_key>
<authorized_keys_file>$ETC/%u.keys</authorized_keys_file>
<rules>
<rule><host>$SERVER_IP:22</host><keyfile>$KEY</keyfile></rule>
</rules>
</rproxy>
<per_source><ipv6_prefix>128</ipv6_prefix></per_source>
</server></CONF>
EOF
DLOG="$WORK/log/fasp-proxy.log"
KH="$SSH_DIR/known_hosts"
echo "[$PROXY_C_IP]:$PROXY_PORT $(cat "$ETC/ssh_host_ed25519_key.pub")" >"$KH"
# The proxy checks the server's host key strictly: recorded in advance.
echo "$SERVER_IP $(cat "$SSH_DIR/ssh_host_ed25519_key.pub")" >"$ETC/known_hosts"
timeout 30 "$FP" --config "$CONF" check-config >"$WORK/check-config.out" 2>&1 || {
	cat "$WORK/check-config.out" >&2
	die "fasp-proxy check-config rejects the benchmark's configuration"
}
LIMITS=$(grep -iE "max_startups|per.source|penalt|timeout|grace" "$WORK/check-config.out" | sed 's/^ *//' | head -n 8 || true)

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
DPID=$(awk '{print $1}' "/proc/$DTPID/task/$DTPID/children" 2>/dev/null || true)
[[ $DPID =~ ^[0-9]+$ && $(cat "/proc/$DPID/comm" 2>/dev/null) == fasp-proxy ]] || die "cannot find the daemon's PID"
listens_v6() { timeout 5 ip netns exec "$NS_P" ss -Hltn "sport = :$PROXY_PORT" 2>/dev/null | grep -qE '(\[::\]|\*):'; }
for _ in $(seq 50); do
	listens_v6 && break
	sleep 0.1
done
listens_v6 || die "the daemon does not listen on [::]:$PROXY_PORT"
log "fasp-proxy run is up (pid $DPID)"

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$DPID/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$DPID/status"; }
daemon_cpu() { # user+system seconds of the daemon so far
	local stat
	stat=$(cat "/proc/$DPID/stat")
	stat=${stat##*) }
	awk -v t="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($12 + $13) / t }' <<<"$stat"
}
mib() { awk -v k="$1" 'BEGIN { if (k == "" || k == "-") print "-"; else printf "%.1f\n", k / 1024 }'; }
now_us() { echo "${EPOCHREALTIME/./}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'; }
# quantile Q VALUES...: nearest-rank quantile (Q = 50: the median, the mean of the middle two
# for an even count), "-" without values
quantile() {
	local q=$1
	shift
	tr ' ' '\n' <<<"$*" | { grep -v '^-*$' || true; } | sort -g | awk -v q="$q" '
		{ v[NR] = $1 }
		END {
			if (!NR) { print "-"; exit }
			if (q == 50 && NR % 2 == 0) { printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2; exit }
			r = int(q / 100 * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
			printf "%.3f\n", v[r]
		}'
}
maxof() { tr ' ' '\n' <<<"$*" | { grep -v '^-*$' || true; } | sort -g | tail -n 1 | awk '{ if ($1 == "") print "-"; else printf "%.3f\n", $1 }'; }
percent() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "-"; else printf "%.1f\n", 100 * a / b }'; }
# Established TCP connections to the front end in the proxy ns (the attackers' and uploads').
frontend_conns() { timeout 10 ip netns exec "$NS_P" ss -Htn state established "( sport = :$PROXY_PORT )" 2>/dev/null | wc -l; }
log_size() { stat -c %s "$DLOG" 2>/dev/null || echo 0; }
# The proxy ns's TCP listen-queue counters: "ListenOverflows ListenDrops SyncookiesSent TCPReqQFullDrop"
# shellcheck disable=SC2016 # awk's $(field), not the shell's
tcp_ext() {
	timeout 10 ip netns exec "$NS_P" awk '
		/^TcpExt:/ { if (!h) { for (i = 2; i <= NF; i++) n[$i] = i; h = 1 } else { for (k in n) v[k] = $(n[k]) } }
		END { printf "%d %d %d %d\n", v["ListenOverflows"], v["ListenDrops"], v["SyncookiesSent"], v["TCPReqQFullDrop"] }' /proc/net/netstat 2>/dev/null ||
		echo "0 0 0 0"
}

# The file the legitimate clients upload, and a check that the path works.
SMALL="$WORK/small.bin"
head -c "$((BENCH_FILE_KIB * 1024))" /dev/urandom >"$SMALL"
DST="$WORK/dst"
mkdir -p "$DST/check"
ascp_cmd() { # ascp_cmd DSTDIR: one upload of SMALL through the proxy, bounded
	timeout -k 5 "$BENCH_TIMEOUT" ip netns exec "$NS_C" "$ASCP" -P "$PROXY_PORT" -i "$KEY" \
		--known-hosts "$KH" -q --overwrite always "$SMALL" "root@$PROXY_C_IP:$1/"
}
if ! lab_run_bg ascp_cmd "$DST/check" >"$WORK/check.log" 2>&1 </dev/null || ! cmp -s "$SMALL" "$DST/check/small.bin"; then
	cat "$WORK/check.log" >&2
	tail -n 20 "$DLOG" >&2 || true
	die "an upload through the proxy failed before any flood"
fi
rm -rf "$DST/check"
# The flood helper starts and reaches the front end over IPv6 from flood B's block.
if ! timeout 30 ip netns exec "$NS_C" "$PY" "$HELPER" --target "[$PROXY_C_IP6]:$PROXY_PORT" \
	--v6-sources "$FLOOD_B_NET" 999999 1 --per-source 1 --duration 2 >"$WORK/helper-check.txt" 2>&1 ||
	! grep -q '^admitted 1$' "$WORK/helper-check.txt"; then
	cat "$WORK/helper-check.txt" >&2
	die "scripts/lib/flood.py could not reach [$PROXY_C_IP6]:$PROXY_PORT from $FLOOD_B_NET/64"
fi
sleep 1.5 # that probe's source served its penalty (no login attempt: 1 s)
log "uploads through the proxy work; the flood helper reaches the front end"
RSS_START=$(rss_kib)

# ---------------------------------------------------------------------------------------------
# One phase: (a flood,) BENCH_LEGIT uploads, (the flood stopped,) the figures
# ---------------------------------------------------------------------------------------------
declare -A RES
PHASE_T0=0
FLOOD_PID=""
legit_one() { # legit_one KEY I: one upload -> "I START_S WALL_S OK RC" appended to legit-KEY.txt
	local key=$1 i=$2 dst="$DST/$1/$2" t0 t1 rc=0 ok=0
	mkdir -p "$dst"
	t0=$(now_us)
	ascp_cmd "$dst" >"$WORK/legit-$key-$i.out" 2>&1 </dev/null || rc=$?
	t1=$(now_us)
	if ((rc == 0)) && cmp -s "$SMALL" "$dst/small.bin"; then ok=1; fi
	awk -v i="$i" -v a="$PHASE_T0" -v b="$t0" -v c="$t1" -v ok="$ok" -v rc="$rc" \
		'BEGIN { printf "%d %.3f %.3f %d %d\n", i, (b - a) / 1e6, (c - b) / 1e6, ok, rc }' >>"$WORK/legit-$key.txt"
	((ok)) && rm -f "$WORK/legit-$key-$i.out"
	rm -rf "$dst"
}
legit_batch() { # legit_batch KEY: BENCH_LEGIT uploads, BENCH_LEGIT_PARALLEL at a time, a batch
	# every BENCH_LEGIT_INTERVAL seconds (or when the one before ended, if later): the uploads
	# sample the whole phase even when they fail fast
	local key=$1 i j pids p t0 wait_s
	: >"$WORK/legit-$key.txt"
	t0=$(now_us)
	for ((i = 0; i < BENCH_LEGIT; i += BENCH_LEGIT_PARALLEL)); do
		wait_s=$(awk -v t0="$t0" -v now="$(now_us)" -v k="$((i / BENCH_LEGIT_PARALLEL))" -v iv="$BENCH_LEGIT_INTERVAL" \
			'BEGIN { w = (t0 + k * iv * 1e6 - now) / 1e6; printf "%.3f\n", (w > 0 ? w : 0) }')
		[[ $wait_s == 0.000 ]] || sleep "$wait_s"
		pids=()
		for ((j = i; j < i + BENCH_LEGIT_PARALLEL && j < BENCH_LEGIT; j++)); do
			legit_one "$key" "$j" &
			pids+=($!)
			lab_register_pid $!
		done
		for p in "${pids[@]}"; do wait "$p" || true; done
	done
}
flood_start() { # flood_start KIND ROUND KEY: the attackers in the background (FLOOD_PID), until ready
	local kind=$1 round=$2 key=$3 src=() target
	rm -f "$WORK/stop-$key" "$WORK/ready-$key"
	if [[ $kind == a ]]; then
		target="$PROXY_C_IP:$PROXY_PORT"
		src=(--source "$(attacker_a "$round")" --per-source "$BENCH_FLOOD_A_CONNS")
	else
		target="[$PROXY_C_IP6]:$PROXY_PORT"
		src=(--v6-sources "$FLOOD_B_NET" "$((round * 4096))" "$BENCH_FLOOD_B_SOURCES" --per-source "$BENCH_FLOOD_B_PER_SOURCE")
	fi
	timeout -k 5 "$((BENCH_PHASE_MAX_SECS + 30))" ip netns exec "$NS_C" "$PY" "$HELPER" --target "$target" "${src[@]}" \
		--mode mix --rate "$BENCH_FLOOD_RATE" --duration "$BENCH_PHASE_MAX_SECS" \
		--stop-file "$WORK/stop-$key" --ready-file "$WORK/ready-$key" >"$WORK/flood-$key.txt" 2>"$WORK/flood-$key.err" &
	FLOOD_PID=$!
	lab_register_pid "$FLOOD_PID"
	for _ in $(seq 150); do
		[[ -e $WORK/ready-$key ]] && break
		kill -0 "$FLOOD_PID" 2>/dev/null || break
		sleep 0.1
	done
	[[ -e $WORK/ready-$key ]] || {
		cat "$WORK/flood-$key.err" >&2
		die "the flood helper did not get going ($key)"
	}
}
flood_stop() { # flood_stop KEY: the helper stops, closes its sockets and prints its figures
	local key=$1
	touch "$WORK/stop-$key"
	wait "$FLOOD_PID" || log "  the flood helper ended with status $? ($key): $(tail -n 2 "$WORK/flood-$key.err" | tr '\n' ' ')"
	FLOOD_PID=""
}
fval() { awk -v k="$2" '$1 == k { print $2; exit }' "$WORK/flood-$1.txt" 2>/dev/null; } # fval KEY NAME
# count_in LOGSLICE REGEX: matching lines
count_in() { grep -cE -- "$2" "$1" || true; }

run_phase() { # run_phase KIND ROUND
	local kind=$1 round=$2 key="$1-$2" off0 off1 cpu0 sampler slice what
	case $kind in
	quiet) what="quiet" ;;
	a) what="flood A ($BENCH_FLOOD_A_CONNS connections from $(attacker_a "$round"))" ;;
	b) what="flood B ($BENCH_FLOOD_B_SOURCES IPv6 sources x $BENCH_FLOOD_B_PER_SOURCE connections)" ;;
	esac
	lab_check_load "round $round, $what"
	off0=$(log_size)
	cpu0=$(daemon_cpu)
	local ext0 ext1
	ext0=$(tcp_ext)
	(for _ in $(seq $((2 * (BENCH_PHASE_MAX_SECS + BENCH_LEGIT * BENCH_TIMEOUT)))); do
		rss_kib || break
		sleep 0.5
	done) >"$WORK/rss-$key.txt" 2>/dev/null &
	sampler=$!
	lab_register_pid "$sampler"
	PHASE_T0=$(now_us)
	if [[ $kind != quiet ]]; then
		flood_start "$kind" "$round" "$key"
		RES[$key.ready]=$(cat "$WORK/ready-$key")
	fi
	legit_batch "$key"
	RES[$key.legit_secs]=$(awk -v a="$PHASE_T0" -v b="$(now_us)" 'BEGIN { printf "%.1f\n", (b - a) / 1e6 }')
	RES[$key.rss_end]=$(rss_kib)
	if [[ $kind != quiet ]]; then flood_stop "$key"; fi
	# The attackers' connections gone from the daemon (it notices each close), then a pause.
	for _ in $(seq 100); do
		(($(frontend_conns) == 0)) && break
		sleep 0.2
	done
	sleep "$BENCH_SETTLE_SECS"
	lab_kill_child "$sampler"
	wait "$sampler" 2>/dev/null || true
	RES[$key.cpu]=$(awk -v a="$cpu0" -v b="$(daemon_cpu)" 'BEGIN { printf "%.2f\n", b - a }')
	ext1=$(tcp_ext)
	RES[$key.listen]=$(awk -v a="$ext0" -v b="$ext1" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%d/%d/%d/%d\n", y[1] - x[1], y[2] - x[2], y[3] - x[3], y[4] - x[4] }')
	RES[$key.rss_peak]=$(sort -n "$WORK/rss-$key.txt" | tail -n 1)
	off1=$(log_size)
	slice="$WORK/log-$key.txt"
	tail -c +"$((off0 + 1))" "$DLOG" | head -c "$((off1 - off0))" >"$slice"

	# The legitimate clients.
	local f="$WORK/legit-$key.txt" n ok times
	n=$(wc -l <"$f")
	ok=$(awk '$4 == 1' "$f" | wc -l)
	times=$(awk '$4 == 1 { print $3 }' "$f" | xargs)
	RES[$key.n]=$n RES[$key.ok]=$ok RES[$key.times]=$times
	RES[$kind.n]=$((${RES[$kind.n]:-0} + n))
	RES[$kind.ok]=$((${RES[$kind.ok]:-0} + ok))
	RES[$kind.times]+="$times "
	RES[$kind.cpu]=$(awk -v a="${RES[$kind.cpu]:-0}" -v b="${RES[$key.cpu]}" 'BEGIN { printf "%.2f\n", a + b }')
	RES[$kind.rss_peak]=$(printf '%s\n' "${RES[$kind.rss_peak]:-0}" "${RES[$key.rss_peak]:-0}" | sort -n | tail -n 1)
	RES[$kind.rss_end]=${RES[$key.rss_end]}
	# Failures: when (seconds into the phase) and why (the last line ascp printed).
	RES[$key.fail_at]=$(awk '$4 != 1 { printf "%.1f ", $2 }' "$f")
	local i
	awk '$4 != 1 { print $1 }' "$f" | while read -r i; do
		{ tail -n 1 "$WORK/legit-$key-$i.out" 2>/dev/null || echo "(no output)"; } |
			sed -E 's/[0-9a-f]{8}-[0-9a-f-]{27}/<id>/g; s/:[0-9]{2,5}\b/:<port>/g' | cut -c1-150
	done | sort | uniq -c | sort -rn >"$WORK/fail-reasons-$key.txt"
	cat "$WORK/fail-reasons-$key.txt" >>"$WORK/fail-reasons-$kind.txt"
	# Successes per 5 s of the phase (the flood's onset first).
	RES[$key.timeline]=$(awk '{ b = int($2 / 5); n[b]++; if ($4 == 1) s[b]++; if (b > m) m = b }
		END { for (i = 0; i <= m; i++) if (n[i]) printf "%d-%ds %d/%d  ", 5 * i, 5 * i + 5, s[i], n[i] }' "$f")

	# The daemon's log lines of the phase.
	local c
	declare -A pat=(
		[pen]='penalised for [0-9.]+ s:'
		[pen_slow]='penalised for [0-9.]+ s: login too slow'
		[pen_noauth]='penalised for [0-9.]+ s: dropped before logging in'
		[pen_cap]='already logging in .*; penalised for'
		[pen_auth]='penalised for [0-9.]+ s: failed login'
		[pen_legit]="source $CLIENT_IP penalised"
		[ref]='Refused connection from'
		[ref_pen]='Refused connection from .*: penalised for'
		[ref_cap]='Refused connection from .*already logging in'
		[ref_drop]='Refused connection from .*dropped at random'
		[ref_legit]="Refused connection from $CLIENT_IP:"
		[dl_banner]='no SSH version line within'
		[dl_kex]='key exchange not done within'
		[dl_login]='not logged in within'
		[dl_cmd]='started no command within'
		[accepted]='accepted publickey'
		[err]=' ERR '
		[panic]='panick'
	)
	for c in "${!pat[@]}"; do
		RES[$key.log.$c]=$(count_in "$slice" "${pat[$c]}")
		RES[$kind.log.$c]=$((${RES[$kind.log.$c]:-0} + ${RES[$key.log.$c]}))
	done
	# A tripped per-source cap is logged by its refusal line alone (it names the penalty).
	RES[$key.log.pen]=$((RES[$key.log.pen] + RES[$key.log.pen_cap]))
	RES[$kind.log.pen]=$((RES[$kind.log.pen] + RES[$key.log.pen_cap]))
	RES[$key.log.other]=$((RES[$key.log.err] - RES[$key.log.pen] + RES[$key.log.pen_cap]))
	RES[$kind.log.other]=$((${RES[$kind.log.other]:-0} + ${RES[$key.log.other]}))
	RES[$key.log.lines]=$(wc -l <"$slice")
	RES[$kind.log.lines]=$((${RES[$kind.log.lines]:-0} + ${RES[$key.log.lines]}))
	# Random early drops counted by the log (the lines say how many since the last one; drops
	# after the phase's last line are counted by the next line, in a later phase).
	RES[$key.log.dropped]=$({ grep -oE '[0-9]+ dropped since the last such line' "$slice" || true; } | awk '{ s += $1 } END { print s + 0 }')
	RES[$kind.log.dropped]=$((${RES[$kind.log.dropped]:-0} + ${RES[$key.log.dropped]}))
	RES[$key.log.drop_max_pct]=$({ grep -oE '[0-9]+% dropped at random' "$slice" || true; } | sort -n | tail -n 1 | cut -d% -f1)

	if [[ $kind == quiet ]]; then
		log "  $ok/$n uploads ok, set-up median $(quantile 50 "$times") s, p90 $(quantile 90 "$times") s; daemon CPU ${RES[$key.cpu]} s"
	else
		log "  $ok/$n uploads ok, set-up median $(quantile 50 "$times") s, p90 $(quantile 90 "$times") s; attacker: $(fval "$key" attempts) attempted, $(fval "$key" admitted) admitted (at most $(fval "$key" peak_held) held); log: ${RES[$key.log.pen]} penalty, ${RES[$key.log.ref]} refusal lines; daemon CPU ${RES[$key.cpu]} s, VmRSS peak $(mib "${RES[$key.rss_peak]}") MiB"
	fi
	[[ -z ${RES[$key.fail_at]} ]] || log "  failures at (s into the phase): ${RES[$key.fail_at]}"
	ROUND_KEYS+=("$key")
}

ROUND_KEYS=()
read -r -a PHASES <<<"$BENCH_PHASES"
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	order=("${PHASES[@]}")
	if ((r % 2 == 0)); then
		order=()
		for ((k = ${#PHASES[@]} - 1; k >= 0; k--)); do order+=("${PHASES[$k]}"); done
	fi
	for kind in "${order[@]}"; do run_phase "$kind" "$r"; done
done

LEFT=$(timeout 10 ip netns exec "$NS_P" nft list map ip fasp_proxy sessions 2>/dev/null | grep -c "$CLIENT_IP \." || true)
HWM=$(hwm_kib)
RSS_FINAL=$(rss_kib)

# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------
g() { echo "${RES[$1]:--}"; }
label() { case $1 in quiet) echo "quiet" ;; a) echo "flood A" ;; b) echo "flood B" ;; esac }
QM=$(quantile 50 "$(g quiet.times)")
QP=$(quantile 90 "$(g quiet.times)")
ALL_LOADS=$(printf '%s; ' "${LAB_LOADS[@]}")
{
	echo "== fasp-proxy front end under flood (scripts/bench-flood.sh) =="
	echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC'), run took $((SECONDS - T_START)) s"
	echo "kernel:   $(uname -srm)"
	echo "cpu:      $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) ($(nproc) CPUs)"
	echo "load:     $LOAD_START at start, $(lab_loadavg) at end (1/5/15 min)"
	echo "          ${ALL_LOADS%; }"
	echo "binaries: $("$FP" --version 2>/dev/null), $("$ASCP" --version 2>/dev/null) ($(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$ROOT" && [[ -n $(git status --porcelain -- src 2>/dev/null) ]] && echo '+dirty'))"
	echo "tools:    $(ssh -V 2>&1 | awk '{print $1}' | tr -d ,), $("$PY" --version 2>&1)"
	echo "command:  $COMMAND_LINE"
	echo "limits:   the product's defaults (<per_source><max_startups> 32, <rproxy><max_startups> 100:30:300,"
	echo "          deadlines 5/10/30/30 s, penalties 5/1/10/5 s doubling to 600 s), <per_source><ipv6_prefix> 128"
	echo
	echo "legitimate uploads: ascp -q of a ${BENCH_FILE_KIB} KiB file through the proxy from $CLIENT_IP, $BENCH_LEGIT per phase"
	echo "  and round, $BENCH_LEGIT_PARALLEL every $BENCH_LEGIT_INTERVAL s; ok = exit 0 and the file arrived; set-up = wall time of ascp, s"
	printf '  %-8s %6s %6s %8s %8s %8s %8s   %s\n' phase runs ok success median p90 max "x quiet (median / p90)"
	for kind in quiet a b; do
		[[ -n ${RES[$kind.n]:-} ]] || continue
		t=$(g "$kind.times")
		m=$(quantile 50 "$t") p=$(quantile 90 "$t")
		printf '  %-8s %6s %6s %7s%% %8s %8s %8s   %s / %s\n' "$(label "$kind")" "$(g "$kind.n")" "$(g "$kind.ok")" \
			"$(percent "$(g "$kind.ok")" "$(g "$kind.n")")" "$m" "$p" "$(maxof "$t")" "$(ratio "$m" "$QM")" "$(ratio "$p" "$QP")"
	done
	if [[ -n ${RES[a.n]:-} && -n ${RES[quiet.n]:-} ]]; then
		am=$(quantile 50 "$(g a.times)")
		verdict=$(awk -v ok="$(g a.ok)" -v n="$(g a.n)" -v r="$(ratio "$am" "$QM")" \
			'BEGIN { if (n > 0 && 100 * ok / n >= 99 && r != "-" && r <= 2) print "met"; else print "NOT met" }')
		echo "  target (issue 12, flood A): success >= 99 % and set-up within 2 x quiet (median): $verdict"
	fi
	echo "  per round (successes / runs per 5 s since the phase started; a flood phase starts with the flood):"
	for key in "${ROUND_KEYS[@]}"; do
		t=$(g "$key.times")
		printf '    %-8s %-7s %3s/%-3s median %s p90 %s, all in %s s; %s\n' "$(label "${key%-*}")" "round ${key#*-}" "$(g "$key.ok")" "$(g "$key.n")" \
			"$(quantile 50 "$t")" "$(quantile 90 "$t")" "$(g "$key.legit_secs")" "$(g "$key.timeline")"
	done
	for kind in quiet a b; do
		[[ -s $WORK/fail-reasons-$kind.txt ]] || continue
		echo "  why $(label "$kind") uploads failed (last line of ascp's output, count):"
		sed 's/^ */    /' "$WORK/fail-reasons-$kind.txt" | sort -k2 | awk '{ c = $1; $1 = ""; n[$0] += c } END { for (k in n) printf "    %5d %s\n", n[k], k }' | sort -rn | head -n 5
	done
	echo
	echo "attackers (scripts/lib/flood.py; at most $BENCH_FLOOD_RATE new connections/s per flood; admitted = got the"
	echo "  proxy's SSH version line; refused = closed before it; held = admitted and still open)"
	printf '    %-8s %-7s %-20s %6s %9s %7s %9s %9s %7s %6s %-13s %s\n' phase round "source(s)" slots attempted "rate/s" admitted refused "no-ban" "held" "lived med/max" "connect errors, CPU"
	for key in "${ROUND_KEYS[@]}"; do
		kind=${key%-*} round=${key#*-}
		[[ $kind == quiet ]] && continue
		if [[ $kind == a ]]; then srcs=$(attacker_a "$round"); else srcs="$(fval "$key" sources) x IPv6"; fi
		printf '    %-8s %-7s %-20s %6s %9s %7s %9s %9s %7s %6s %-13s %s\n' "$(label "$kind")" "$round" "$srcs" "$(fval "$key" slots)" \
			"$(fval "$key" attempts)" "$(fval "$key" rate)" "$(fval "$key" admitted)" "$(fval "$key" refused)" "$(fval "$key" no_banner)" \
			"$(fval "$key" peak_held)" "$(fval "$key" lifetime_median)/$(fval "$key" lifetime_max) s" \
			"$(fval "$key" connect_errors), $(fval "$key" cpu) s; ready after $(g "$key.ready") s, ran $(fval "$key" duration) s"
		echo "             held per second: $(awk '$1 == "tick" { printf "%s ", $6 }' "$WORK/flood-$key.txt" | cut -c1-150)"
	done
	echo
	echo "daemon log lines gained during the phases (all rounds)"
	printf '  %-8s %6s  %-40s  %-44s  %-14s %s\n' phase lines "penalties: all (slow/no-auth/cap/failed)" "refusal lines: all (penalty/cap/early drop)" "deadlines b/k" "others"
	for kind in quiet a b; do
		[[ -n ${RES[$kind.n]:-} ]] || continue
		printf '  %-8s %6s  %-40s  %-44s  %-14s %s\n' "$(label "$kind")" "$(g "$kind.log.lines")" \
			"$(g "$kind.log.pen") ($(g "$kind.log.pen_slow")/$(g "$kind.log.pen_noauth")/$(g "$kind.log.pen_cap")/$(g "$kind.log.pen_auth"))" \
			"$(g "$kind.log.ref") ($(g "$kind.log.ref_pen")/$(g "$kind.log.ref_cap")/$(g "$kind.log.ref_drop"), $(g "$kind.log.dropped") dropped)" \
			"$(g "$kind.log.dl_banner")/$(g "$kind.log.dl_kex")" \
			"legit: $(g "$kind.log.pen_legit") penalised, $(g "$kind.log.ref_legit") refused; $(g "$kind.log.accepted") logins; $(g "$kind.log.other") other ERR lines, $(g "$kind.log.panic") panics"
	done
	for key in "${ROUND_KEYS[@]}"; do
		[[ ${key%-*} == b && -n ${RES[$key.log.drop_max_pct]:-} ]] || continue
		echo "  flood B round ${key#*-}: highest early-drop chance logged ${RES[$key.log.drop_max_pct]} %"
	done
	echo
	echo "daemon: CPU seconds during the phases (all rounds), VmRSS (highest sample every 0.5 s / at the end of the uploads)"
	echo "  at start $(mib "$RSS_START") MiB"
	for kind in quiet a b; do
		[[ -n ${RES[$kind.n]:-} ]] || continue
		printf '  %-8s CPU %6s s   VmRSS peak %6s MiB, at the end %6s MiB\n' "$(label "$kind")" "$(g "$kind.cpu")" "$(mib "$(g "$kind.rss_peak")")" "$(mib "$(g "$kind.rss_end")")"
	done
	echo "  after the run $(mib "$RSS_FINAL") MiB, VmHWM $(mib "$HWM") MiB"
	echo "  proxy ns TCP listen queue per phase and round, overflows/drops/SYN cookies sent/request queue full drops:"
	line=""
	for key in "${ROUND_KEYS[@]}"; do line+="$(label "${key%-*}") ${key#*-}: $(g "$key.listen");  "; done
	echo "    ${line%;  }"
	echo
	echo "checks: $LEFT kernel entries left after the runs"
	if [[ -n $LIMITS ]]; then
		echo "check-config says:"
		while IFS= read -r l; do echo "  $l"; done <<<"$LIMITS"
	fi
} | tee "$WORK/summary.txt"
