# head-of-line and wait-20ms (benchmarks/waits.py) on fastcluster-cython from this venv, with an env per variant
import os, sys, json
sys.path.insert(0, "/work/wt-shortwaits/benchmarks")
import waits
from compare import Running
bin_ = os.path.dirname(sys.executable)
for variant, env in (("new", {}), ("wall", {"FASTCLUSTER_HANDOVER": "wall"})):
    for workload in ("head-of-line", "wait-20ms"):
        server = Running("fastcluster-cython", 2, False, command=lambda port, tmp: waits.commands("fastcluster-cython", port, bin_), env=env)
        try:
            r = waits.WORKLOADS[workload](server.port, 5)
            print(variant, workload, json.dumps({k: v for k, v in r.items() if k in ("rps", "p50_ms", "p99_ms", "errors")} if "rps" in r else {"fast": r["fast"], "errors": r["errors"]}), flush=True)
        finally:
            server.stop()
