# shellcheck shell=bash
# The namespace lab shared by scripts/demo.sh, scripts/bench-transfer.sh and scripts/bench-proxy.sh.
# Sourced, never run:  source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"
#
# Safety: every link, address and route these functions make is made inside namespaces the
# calling script created with lab_add_ns (named by the script: its own prefix and $$). The
# cleanup signals only PIDs the script registered, and only while they are still its children,
# then whatever is left inside its own namespaces; it deletes only those namespaces and only the
# temp dir made by lab_workdir.
#
# Set by the calling script after sourcing (before the functions are used):
#   LAB_NAME           prefix of the cleanup's warnings ("demo", "bench")
#   LAB_LOG            the function that prints progress messages (e.g. note, log)
#   LAB_TERM_FIRST     1: the cleanup sends TERM and waits up to 3 s before KILL   (0)
#   LAB_CLEANUP_FIRST  function the cleanup runs before it stops the PIDs          ("")
#   LAB_CLEANUP_LAST   function the cleanup runs at its end (stderr is fd 3 then)  ("")

LAB_NAME=lab # defaults, never taken from the environment: the script sets them after sourcing
LAB_LOG=echo
LAB_TERM_FIRST=0
LAB_CLEANUP_FIRST=""
LAB_CLEANUP_LAST=""
LAB_PIDS=()        # processes the script started (direct children of its shell)
LAB_NS=()          # namespaces the script created
LAB_MISSING=()     # packages lab_require_packages had to install
LAB_WORK=""        # the temp dir made by lab_workdir
LAB_WORK_PREFIX="" # its path without the mktemp suffix (the cleanup checks it)

# lab_require_packages PKG...: installs the Debian packages that are missing (listed in LAB_MISSING).
lab_require_packages() {
	local p
	LAB_MISSING=()
	for p in "$@"; do
		# `dpkg -s` also succeeds for a removed package whose configuration files remain.
		dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed' || LAB_MISSING+=("$p")
	done
	if ((${#LAB_MISSING[@]})); then
		"$LAB_LOG" "installing missing packages: ${LAB_MISSING[*]}"
		timeout 600 apt-get update -qq
		DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "${LAB_MISSING[@]}"
	fi
}

# lab_sweep_stale PREFIX ROLES [EXPLAIN]: deletes namespaces PREFIX-<pid>-<role> (ROLES: "a|b|c")
# of earlier crashed runs, i.e. whose PID is gone; EXPLAIN=1 says so in the message.
lab_sweep_stale() {
	local prefix=$1 roles=$2 explain=${3:-0} ns
	for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
		if [[ $ns =~ ^$prefix-([0-9]+)-($roles)$ ]] && [[ ! -e /proc/${BASH_REMATCH[1]} ]]; then
			if ((explain)); then
				"$LAB_LOG" "deleting stale namespace $ns (its run, PID ${BASH_REMATCH[1]}, ended without cleaning up)"
			else
				"$LAB_LOG" "deleting stale namespace $ns"
			fi
			ip netns del "$ns" 2>/dev/null || true
		fi
	done
}

# lab_workdir PARENT NAME: makes the temp dir PARENT/NAME.XXXXXXXX (mode 755) -> LAB_WORK.
lab_workdir() {
	LAB_WORK_PREFIX="$1/$2"
	LAB_WORK=$(mktemp -d "$LAB_WORK_PREFIX.XXXXXXXX")
	chmod 755 "$LAB_WORK"
}

# lab_register_pid PID: the cleanup stops PID (a direct child of this shell).
lab_register_pid() { LAB_PIDS+=("$1"); }

# lab_kill_child PID [SIG]: sends SIG (default KILL) only while PID is still our child, so a
# recycled PID is never signalled.
lab_kill_child() {
	local pid=$1 sig=${2:-KILL} stat ppid
	[[ $pid =~ ^[0-9]+$ ]] && ((pid > 1)) || return 0
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
	stat=${stat##*) } # after "pid (comm) "
	read -r _ ppid _ <<<"$stat"
	[[ $ppid == "$$" ]] && kill "-$sig" "$pid" 2>/dev/null
	return 0
}

# lab_run_bg CMD...: runs CMD in the background and waits for it, so a trapped INT/TERM is
# handled at once (a foreground command would delay the trap until it ends).
lab_run_bg() {
	local rc=0 p
	"$@" &
	p=$!
	lab_register_pid "$p"
	wait "$p" || rc=$?
	return "$rc"
}

# lab_nsx NS CMD...: runs CMD inside namespace NS, bounded (60 s).
lab_nsx() {
	local ns=$1
	shift
	timeout 60 ip netns exec "$ns" "$@"
}

# lab_add_ns NS: creates namespace NS with lo up (recorded first, so a half-made one is deleted).
lab_add_ns() {
	LAB_NS+=("$1")
	ip netns add "$1"
	ip -n "$1" link set lo up
}

# lab_veth NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth pair made directly inside the two namespaces
# (nothing appears in the machine's own namespace), with the addresses (CIDR; "" for none), up.
lab_veth() {
	ip -n "$1" link add "$2" type veth peer name "$5" netns "$4"
	[[ -z $3 ]] || ip -n "$1" addr add "$3" dev "$2"
	[[ -z $6 ]] || ip -n "$4" addr add "$6" dev "$5"
	ip -n "$1" link set "$2" up
	ip -n "$4" link set "$5" up
}

# lab_default_route NS GATEWAY: the default route of namespace NS.
lab_default_route() { ip -n "$1" route add default via "$2"; }

# lab_forwarding NS: IPv4 forwarding on, in namespace NS only.
lab_forwarding() { lab_nsx "$1" sysctl -q -w net.ipv4.ip_forward=1; }

# lab_wait_listen NS ADDR PORT: until a TCP socket listens on ADDR:PORT in NS (at most 10 s).
lab_wait_listen() {
	local _
	for _ in $(seq 100); do
		[[ -n $(timeout 5 ip netns exec "$1" ss -Hltn "src $2 and sport = :$3" 2>/dev/null) ]] && return 0
		sleep 0.1
	done
	return 1
}

# lab_keygen FILE COMMENT: a throw-away ed25519 key pair without a passphrase.
lab_keygen() { ssh-keygen -q -t ed25519 -N '' -C "$2" -f "$1"; }

# lab_sshd_config FILE ADDR HOST_KEY AUTHORIZED_KEYS [DIRECTIVE...]: a key-only sshd_config for
# root on ADDR:22, plus one line per DIRECTIVE (e.g. "LogLevel INFO", "ForceCommand ...").
lab_sshd_config() {
	local file=$1 addr=$2 hostkey=$3 authkeys=$4
	shift 4
	{
		cat <<-EOF
			ListenAddress $addr:22
			HostKey $hostkey
			PidFile none
			AuthorizedKeysFile $authkeys
			PermitRootLogin prohibit-password
			PasswordAuthentication no
			KbdInteractiveAuthentication no
			UsePAM no
			StrictModes no
			MaxSessions 100
		EOF
		if (($#)); then printf '%s\n' "$@"; fi
	} >"$file"
}

# lab_start_sshd NS ADDR CONFIG LOG [WRAPPER...]: starts `WRAPPER... /usr/sbin/sshd -D -e -f CONFIG`
# inside NS in the background (output to LOG, PID registered) and waits until it listens on
# ADDR:22; on failure prints LOG to stderr and returns 1.
lab_start_sshd() {
	local ns=$1 addr=$2 config=$3 log=$4
	shift 4
	mkdir -p /run/sshd # sshd's privilege separation directory (the package makes it at boot)
	ip netns exec "$ns" "$@" /usr/sbin/sshd -D -e -f "$config" >"$log" 2>&1 &
	lab_register_pid "$!"
	lab_wait_listen "$ns" "$addr" 22 || {
		cat "$log" >&2
		return 1
	}
}

# lab_build_release ROOT CARGO_ARGS...: `cargo build --release CARGO_ARGS...` in ROOT; others may
# be editing src/ or building in the same target dir (cargo waits for its lock), so a failed
# build is retried, up to 6 times a minute apart. Returns 1 if none succeeded.
lab_build_release() {
	local root=$1 attempt
	shift
	for attempt in 1 2 3 4 5 6; do
		"$LAB_LOG" "building (cargo build --release $*), attempt $attempt"
		if (cd "$root" && timeout 1800 cargo build --release "$@") >&2; then
			return 0
		fi
		"$LAB_LOG" "build failed (someone may be mid-edit); retrying in 60 s"
		sleep 60
	done
	return 1
}

# The load average, for benchmarks: lab_loadavg prints it (1/5/15 min); lab_check_load WHAT
# prints it before WHAT, warns when the 1-minute figure is above LAB_BUSY_LOAD, and records
# "WHAT: load" in LAB_LOADS for the summary.
LAB_BUSY_LOAD=0.5
LAB_LOADS=()
lab_loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
lab_check_load() {
	local l
	l=$(lab_loadavg)
	if awk -v l="${l%% *}" -v b="$LAB_BUSY_LOAD" 'BEGIN { exit !(l > b) }'; then
		"$LAB_LOG" "WARNING: load average $l before $1: other work shares the $(nproc) CPUs, figures are noisy"
	else
		"$LAB_LOG" "load average $l before $1"
	fi
	LAB_LOADS+=("$1: $l")
}

# lab_chain NS_C CLIENT_IP NS_P PROXY_C_IP PROXY_S_IP NS_S SERVER_IP: the benchmarks' picture,
# three new namespaces in a row: client (c0) -- (pc) proxy (ps) -- (s0) server, /24 addresses,
# default routes via the proxy, forwarding on in the proxy only.
lab_chain() {
	local ns_c=$1 client=$2 ns_p=$3 proxy_c=$4 proxy_s=$5 ns_s=$6 server=$7
	"$LAB_LOG" "creating namespaces $ns_c, $ns_p, $ns_s"
	lab_add_ns "$ns_c"
	lab_add_ns "$ns_p"
	lab_add_ns "$ns_s"
	lab_veth "$ns_c" c0 "$client/24" "$ns_p" pc "$proxy_c/24"
	lab_veth "$ns_p" ps "$proxy_s/24" "$ns_s" s0 "$server/24"
	lab_default_route "$ns_c" "$proxy_c"
	lab_default_route "$ns_s" "$proxy_s"
	lab_forwarding "$ns_p"
	ip -n "$ns_c" route get "$server" >/dev/null
}

# lab_in_our_ns PID: whether the process lives in one of the namespaces the script created.
lab_in_our_ns() {
	local pid=$1 ns
	for ns in "${LAB_NS[@]}"; do
		[[ $(ip netns identify "$pid" 2>/dev/null) == "$ns" ]] && return 0
	done
	return 1
}

# lab_term_daemon PID [TIMEOUT_PID]: SIGTERM to a daemon the script started in one of its
# namespaces (so it removes its own kernel entries), waiting up to 20 s for it to end; then
# KILL its `timeout` wrapper TIMEOUT_PID (a child of this shell) if still there, and reap it.
lab_term_daemon() {
	local pid=$1 tpid=${2:-} _
	if [[ -n $pid ]] && lab_in_our_ns "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 100); do
			[[ -e /proc/$pid ]] || break
			sleep 0.2
		done
	fi
	if [[ -n $tpid ]]; then
		lab_kill_child "$tpid" KILL
		wait "$tpid" 2>/dev/null || true
	fi
}

# lab_cleanup: the EXIT trap (`trap lab_cleanup EXIT`). Runs LAB_CLEANUP_FIRST, stops the
# registered PIDs (TERM first if LAB_TERM_FIRST=1, then KILL), kills anything left inside our
# namespaces, deletes them and the temp dir, runs LAB_CLEANUP_LAST, exits with the status the
# script had.
lab_cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	set +e
	exec 3>&2 2>/dev/null # no "Terminated"/"Killed" job notices for the processes we end
	local pid ns p i alive
	[[ -n $LAB_CLEANUP_FIRST ]] && "$LAB_CLEANUP_FIRST"
	if ((LAB_TERM_FIRST && ${#LAB_PIDS[@]})); then
		# `timeout` passes TERM on to the command it runs.
		for pid in "${LAB_PIDS[@]}"; do lab_kill_child "$pid" TERM; done
		for i in $(seq 30); do
			alive=0
			for pid in "${LAB_PIDS[@]}"; do
				[[ -e /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] && alive=1
			done
			((alive)) || break
			sleep 0.1
		done
	fi
	for pid in "${LAB_PIDS[@]}"; do lab_kill_child "$pid"; done
	for ns in "${LAB_NS[@]}"; do
		for p in $(ip netns pids "$ns" 2>/dev/null); do
			[[ $p =~ ^[0-9]+$ ]] && ((p > 1)) && ((p != $$)) && kill -KILL "$p" 2>/dev/null
		done
	done
	wait 2>/dev/null
	for ns in "${LAB_NS[@]}"; do
		for i in 1 2 3 4 5; do
			ip netns del "$ns" 2>/dev/null
			[[ -e /run/netns/$ns ]] || break
			sleep 0.2
		done
		[[ -e /run/netns/$ns ]] && echo "$LAB_NAME: WARNING: could not delete namespace $ns" >&3
	done
	if [[ -n $LAB_WORK && -n $LAB_WORK_PREFIX && -d $LAB_WORK && $LAB_WORK == "$LAB_WORK_PREFIX".* ]]; then
		rm -rf -- "$LAB_WORK"
	fi
	[[ -n $LAB_CLEANUP_LAST ]] && "$LAB_CLEANUP_LAST"
	exit "$rc"
}
