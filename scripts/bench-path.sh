#!/usr/bin/env bash
# Data path CPU (issue 15): path CPU per delivered packet, client -> proxy -> server, routed and
# through the proxy's data plane, side by side in one run over throw-away network namespaces.
# The method, the lab and the results are in docs/benchmarks.md, "Data path CPU"; the code is
# benches/path.rs.
#
#   sudo ./scripts/bench-path.sh                                  # 5 rounds, about 12 minutes
#   sudo BENCH_ROUNDS=3 BENCH_LOADS=1400B@800M,64B@max ./scripts/bench-path.sh
#   sudo BENCH_CASES=nft1 BENCH_SESSIONS=100000 ./scripts/bench-path.sh
#
# Environment (all optional):
#   BENCH_ROUNDS    rounds; each runs every case, in the opposite order of the round before  (5)
#   BENCH_SECS      the measured window of one run, seconds (after 0.5 s of warm-up)          (3)
#   BENCH_SESSIONS  live sessions of the many-sessions case                                   (10000)
#   BENCH_LOADS     loads to run, comma-separated: 1400B@200M,1400B@400M,1400B@800M,64B@max,
#                   newflow@10k,1400B@800M-sink,64B@max-sink
#   BENCH_CASES     cases besides `routed` (always run: the ratios are to it):
#                   nft1,nft<SESSIONS>,bpf1,bpf<SESSIONS>
#
# Safety: every link, address, route, sysctl and nftables change is made inside the namespaces
# the benchmark creates (fpl-<pid>-*), removed when it ends, also on failure; traffic goes only
# to documentation addresses (192.0.2.0/24, 198.51.100.0/24) inside them. The threads it starts
# end with it.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-path.sh: needs root (network namespaces, nftables)" >&2
    exit 1
fi
for tool in ip nft conntrack; do
    command -v "$tool" >/dev/null || { echo "bench-path.sh: $tool is missing (scripts/test.sh installs it)" >&2; exit 1; }
done
exec cargo bench --bench path
