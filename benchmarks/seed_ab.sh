#!/usr/bin/env bash
# The seed's experiment as the seed runs it: the CPU-bound demo (5 ms of CPU a request), defaults
# otherwise, `ab -c200 -t10`, with 1 and then 2 workers; then its final act, 2 workers restarted one
# at a time by `kill -USR2 <master>` 3 s into the run. Prints ab's whole output for each.
#   bash benchmarks/seed_ab.sh > benchmarks/results/seed-ab.txt
set -euo pipefail
for run in 1 2 2-usr2; do
    workers=${run%%-*}
    log=$(mktemp)
    python -m fastcluster serve --workers "$workers" --bind 127.0.0.1:0 --demo-work-ms 5 >"$log" 2>&1 &
    pid=$!
    port=""
    for _ in $(seq 300); do
        port=$(grep -oP 'listening on http://127\.0\.0\.1:\K[0-9]+' "$log" | head -1 || true)
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { cat "$log"; kill "$pid"; exit 1; }
    what=""
    [ "$run" = 2-usr2 ] && what=", kill -USR2 <master> 3 s into ab's run"
    echo "== fastcluster serve --workers $workers --demo-work-ms 5$what ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(python -V 2>&1))"
    if [ "$run" = 2-usr2 ]; then
        (sleep 3; kill -USR2 "$pid") &
        killer=$!
    fi
    ab -c200 -t10 "http://127.0.0.1:$port/" 2>&1
    if [ "$run" = 2-usr2 ]; then
        wait "$killer" || true
        echo "-- the master's log of the restart:"
        grep -iE "rolling|replac|restart" "$log" || true
    fi
    kill -TERM "$pid"
    wait "$pid" || true
    rm -f "$log"
done
