#!/usr/bin/env bash
# The seed's final act, measured: rolling restarts (kill -USR2) while ab and wrk run.
#
#   bash benchmarks/rollout.sh [cython|python] [WORKERS]
#
# Needs ab (apache2-utils) and wrk. Every run is bounded (10 s) and goes to 127.0.0.1 only.
# Prints, for one server: steady-state wrk, wrk with 3 rollouts, ab with one rollout at 3 s,
# and whether every worker pid was replaced.
set -euo pipefail
loop=${1:-cython}
workers=${2:-4}
out=$(mktemp) err=$(mktemp)
trap 'kill -TERM $master 2>/dev/null || true; rm -f "$out" "$err"' EXIT

fastcluster serve --workers "$workers" --loop "$loop" --bind 127.0.0.1:0 >"$out" 2>"$err" &
for _ in $(seq 200); do grep -q "listening on http" "$out" && break; sleep 0.05; done
url=$(grep -o 'http://[^ ]*' "$out")/
master=$(grep -o 'Master PID: [0-9]*' "$out" | cut -d' ' -f3)

echo "fastcluster --loop $loop --workers $workers, $(nproc) CPUs, $(python -c 'import platform; print(platform.python_version())')"
echo "== wrk -t1 -c100 -d10s, steady state"
wrk -t1 -c100 -d10s "$url" | grep -E "requests in|Socket errors|Non-2xx|Requests/sec"

echo "== wrk -t1 -c100 -d10s, kill -USR2 at 2, 5 and 8 s"
(sleep 2; kill -USR2 "$master"; sleep 3; kill -USR2 "$master"; sleep 3; kill -USR2 "$master") &
wrk -t1 -c100 -d10s "$url" | grep -E "requests in|Socket errors|Non-2xx|Requests/sec"
for _ in $(seq 200); do [ "$(grep -c 'rolling restart complete' "$err")" -ge 3 ] && break; sleep 0.1; done
sleep 1   # let the last old workers finish draining

before=$(ps -o pid= --ppid "$master" | tr -d ' ' | sort)
echo "== ab -c200 -t10, kill -USR2 at 3 s"
(sleep 3; kill -USR2 "$master") &
ab -q -c200 -t10 -n 10000000 "$url" 2>&1 | grep -E "Complete requests|Failed requests|Non-2xx|Requests per second"
sleep 1
after=$(ps -o pid= --ppid "$master" | tr -d ' ' | sort)
if [ -z "$(comm -12 <(echo "$before") <(echo "$after"))" ]; then
    echo "every worker pid replaced: yes ($(echo $before) -> $(echo $after))"
else
    echo "every worker pid replaced: NO ($(echo $before) -> $(echo $after))"
fi
grep -c "rolling restart complete" "$err" | sed 's/^/rollouts completed: /'
