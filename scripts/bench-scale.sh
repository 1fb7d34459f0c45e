#!/usr/bin/env bash
# The data plane at scale (issue 15, part 3): 100,000 live sessions in the nftables backend and
# under the BPF fast path: install and remove rates, one upkeep cycle (refresh + counters of
# every session), a restart's prepare + reconcile after kill -9, and memory. The method and the
# results are in docs/benchmarks.md, "Data plane at scale"; the code is benches/scale.rs.
#
#   sudo ./scripts/bench-scale.sh                         # 100,000 sessions, both backends
#   sudo BENCH_SESSIONS=10000 BENCH_BACKENDS=nftables ./scripts/bench-scale.sh
#
# Safety: every link, address, sysctl, nftables, conntrack and BPF change is made inside the
# namespaces the benchmark creates (fpl-<pid>-*), removed when it ends, also on failure; no
# traffic is sent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    echo "bench-scale.sh: needs root (network namespaces, nftables, BPF)" >&2
    exit 1
fi
for tool in ip nft conntrack; do
    command -v "$tool" >/dev/null || { echo "bench-scale.sh: $tool is missing (scripts/test.sh installs it)" >&2; exit 1; }
done
exec cargo bench --bench scale
