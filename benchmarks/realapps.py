"""Real apps on a real database: fastcluster and its peers serving Flask, Django and FastAPI on PostgreSQL.

    python benchmarks/realapps.py [--quick] [--rounds N] [--only SERVER,..] [--apps flask,django,fastapi]
                                  [--tests db,queries,fortunes,updates,json,plaintext]

It starts a throwaway PostgreSQL cluster (Debian's `postgresql`, apt-installed when missing; initdb into a
temporary folder, `postgres` on a unix socket there and a free loopback port, as the `postgres` user when
run as root), creates TechEmpower's tables (World: 10,000 rows; Fortune: the 12 standard rows), and
serves the apps of benchmarks/realapps/ (Flask + psycopg 3, Django ORM + psycopg 3, FastAPI + asyncpg),
written to TechEmpower's test rules, with each server at 2 workers: fastcluster with its defaults,
gunicorn sync and gthread (WSGI apps), granian (WSGI and ASGI) and uvicorn (ASGI). Each server starts
fresh for each app; the servers take turns within a round. Every response is checked against the rules
once per server start, then each test runs `wrk -t1 -c64 --latency` (unpinned: two workers and a
database do not fit beside the load generator on 2 cores).

For each run: req/s, p99, errors (socket errors and non-2xx apart), the server's CPU per request
(user+sys of the server and all its processes, from /proc) and the database's (every process of the
cluster, with the postmaster's reaped children). Output: benchmarks/results/realapps.json, realapps.md
and realapps.png (--name NAME: NAME.json, .md and .png, so that a partial run keeps the full
one's). The cluster and every server are stopped and removed at the end, on failure and on
Ctrl-C. All traffic goes to 127.0.0.1; every run is bounded.
"""

from __future__ import annotations

import argparse
import atexit
import glob
import html
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import compare  # noqa: E402  (its installers, Running, run_wrk and chart style are reused)
from compare import PY, RESULTS, ROOT, VENV, Running, free_port, log, run_wrk  # noqa: E402

APPS_DIR = os.path.join(HERE, "realapps")
PIP = ["gunicorn", "uvicorn", "uvloop", "httptools", "granian", "matplotlib", "fastapi", "flask", "django",
       "psycopg[binary]", "asyncpg"]
# app: (interface, module:attribute)
APPS = {"flask": ("wsgi", "flask_app:app"), "django": ("wsgi", "django_app.wsgi:application"),
        "fastapi": ("asgi", "fastapi_app:app")}
SERVERS = {"wsgi": ["fastcluster", "gunicorn-sync", "gunicorn-gthread", "granian"],
           "asgi": ["fastcluster", "granian", "uvicorn"]}
ALL_SERVERS = ["fastcluster", "gunicorn-sync", "gunicorn-gthread", "granian", "uvicorn"]
TESTS = {"db": "/db", "queries": "/queries?queries={q}", "fortunes": "/fortunes", "updates": "/updates?queries={q}",
         "json": "/json", "plaintext": "/plaintext"}
WORKERS = 2
CONNECTIONS = 64
WRK_TIMEOUT = "8s"      # wrk's default (2 s) would drop the slow tail of queries=20 from the p99
DB_NAME, DB_USER = "hello_world", "benchmarkdbuser"
HELLO = "Hello, World!"
ADDED_FORTUNE = "Additional fortune added at request time."
FORTUNES = [
    "fortune: No such file or directory",
    "A computer scientist is someone who fixes things that aren't broken.",
    "After enough decimal places, nobody gives a damn.",
    "A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1",
    "A computer program does what you tell it to do, not what you want it to do.",
    "Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen",
    "Any program that runs right is obsolete.",
    "A list is only as strong as its weakest link. \u2014 Donald Knuth",
    "Feature: A bug with seniority.",
    "Computers make very fast, very accurate mistakes.",
    '<script>alert("This should not be displayed in a browser alert box.");</script>',
    "\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af",
]
# what the cluster runs with: a throwaway database, so durability is off (TechEmpower's config does the same)
PG_SETTINGS = {"max_connections": "300", "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
               "shared_buffers": "128MB", "log_min_messages": "warning"}


# --- the database ---------------------------------------------------------------------------------

def postgres_bin():
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.sub(r"\D", "", p.split("/")[4]) or 0))
    return os.path.dirname(found[-1]) if found else None


class Postgres(Running):
    """A throwaway cluster in a temporary folder; stop() removes it. Running gives it pids() and rss_mib()."""

    def __init__(self, bin_dir, via="tcp"):
        import pwd

        self.name, self.proc, self.bin, self.out, self.err = "postgres", None, bin_dir, None, None
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="fc-realapps-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.logfile = os.path.join(self.tmp, "postgres.log")
        self.host = self.tmp if via == "unix" else "127.0.0.1"   # where the apps connect
        self.user = None
        try:
            self._start(pwd)
        except BaseException:
            self.stop()             # nothing is left behind when it fails half-way (or on Ctrl-C)
            raise

    def _start(self, pwd):
        if os.geteuid() == 0:          # postgres will not run as root: its own user, which Debian's package makes
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user: install Debian's postgresql")
            os.chown(self.tmp, account.pw_uid, account.pw_gid)
            self.user = "postgres"
        env = dict(os.environ, LC_ALL="C", LANG="C")
        out = subprocess.run([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", DB_USER, "--auth=trust",
                              "-E", "UTF8", "--locale=C", "--no-sync"], cwd=self.tmp, env=env, user=self.user,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("initdb failed: %s" % (out.stderr or out.stdout)[-500:])
        settings = dict(PG_SETTINGS, port=str(self.port), listen_addresses="127.0.0.1",
                        unix_socket_directories=self.tmp)
        cmd = [os.path.join(self.bin, "postgres"), "-D", self.data]
        for key, value in settings.items():
            cmd += ["-c", "%s=%s" % (key, value)]
        self.out = self.err = open(self.logfile, "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.tmp, env=env, user=self.user, stdout=self.out, stderr=self.out,
                                     start_new_session=True)
        self._wait_accepting()
        self._create_schema()

    def log_tail(self, chars=600):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")[-chars:]
        except OSError:
            return ""

    def connect(self, dbname=DB_NAME):
        import psycopg

        return psycopg.connect(host=self.tmp, port=self.port, user=DB_USER, dbname=dbname, autocommit=True)

    def _wait_accepting(self, timeout=60.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("postgres exited with %s: %s" % (self.proc.returncode, self.log_tail()))
            ready = subprocess.run([os.path.join(self.bin, "pg_isready"), "-q", "-h", self.tmp, "-p", str(self.port)],
                                   timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise RuntimeError("postgres not ready after %g s: %s" % (timeout, self.log_tail()))

    def _create_schema(self):
        """TechEmpower's tables: world (id, randomnumber 1..10000) and fortune (the 12 rows)."""
        with self.connect("postgres") as conn:
            conn.execute("CREATE DATABASE %s" % DB_NAME)
        with self.connect() as conn:
            conn.execute("CREATE TABLE world (id integer NOT NULL PRIMARY KEY, randomnumber integer NOT NULL)")
            conn.execute("INSERT INTO world (id, randomnumber) "
                         "SELECT x, 1 + floor(random() * 10000)::integer FROM generate_series(1, 10000) AS x")
            conn.execute("CREATE TABLE fortune (id integer NOT NULL PRIMARY KEY, message varchar(2048) NOT NULL)")
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO fortune (id, message) VALUES (%s, %s)",
                                list(enumerate(FORTUNES, start=1)))
            conn.execute("ANALYZE")

    def connections(self):
        """How many connections the apps hold open to the database now."""
        with self.connect() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                                "pg_backend_pid()", (DB_NAME,)).fetchone()[0]

    def version(self):
        out = subprocess.run([os.path.join(self.bin, "postgres"), "--version"], capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()

    def cpu_seconds(self):
        """user+sys of every process of the cluster, and of the backends it has reaped (the
        postmaster's cutime and cstime): a connection that closed keeps its CPU in the count."""
        total = Running.cpu_seconds(self)
        try:
            with open("/proc/%d/stat" % self.proc.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            pass
        return total

    def stop(self):
        """A fast shutdown (SIGINT), then SIGKILL to the whole group; then the folder goes. Safe to call twice."""
        if self.proc is not None:
            for sig, wait in ((signal.SIGINT, 20), (signal.SIGKILL, 10)):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
                if not _group_alive(self.proc.pid):
                    break
            self.proc = None
        if self.out is not None:
            self.out.close()
            self.out = self.err = None
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None


def _group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


# --- servers --------------------------------------------------------------------------------------

def server_command(server, interface, app, port, gthreads):
    """The command that serves `app` with `server` at 2 workers, or None when the server does not serve
    that interface."""
    bin_ = os.path.join(VENV, "bin")
    host, workers = "127.0.0.1", str(WORKERS)
    if server not in SERVERS[interface]:
        return None
    if server == "fastcluster":          # its defaults: the interface is told from the app
        return [os.path.join(bin_, "fastcluster"), "serve", app, "--workers", workers, "--bind", "%s:%d" % (host, port)]
    if server in ("gunicorn-sync", "gunicorn-gthread"):
        kind = ["-k", "sync"] if server == "gunicorn-sync" else ["-k", "gthread", "--threads", str(gthreads)]
        return [os.path.join(bin_, "gunicorn"), "-w", workers, *kind, "--bind", "%s:%d" % (host, port),
                "--log-level", "warning", app]
    if server == "granian":
        return [os.path.join(bin_, "granian"), "--interface", interface, "--host", host, "--port", str(port),
                "--workers", workers, "--log-level", "warning", app]
    if server == "uvicorn":
        return [os.path.join(bin_, "uvicorn"), app, "--host", host, "--port", str(port), "--workers", workers,
                "--no-access-log", "--log-level", "warning"]
    raise KeyError(server)


def server_env(db):
    return {"PYTHONPATH": APPS_DIR, "DJANGO_SETTINGS_MODULE": "django_app.settings",
            "REALAPPS_DB_HOST": db.host, "REALAPPS_DB_PORT": str(db.port), "REALAPPS_DB_NAME": DB_NAME,
            "REALAPPS_DB_USER": DB_USER}


# --- checking the responses against the rules -----------------------------------------------------

def _get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=30) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def _worlds(body, count):
    worlds = json.loads(body)
    if not isinstance(worlds, list) or len(worlds) != count:
        raise AssertionError("expected a list of %d worlds, got %r" % (count, body[:80]))
    for world in worlds:
        _world(world)
    return worlds


def _world(world):
    if not (isinstance(world, dict) and set(world) == {"id", "randomNumber"}
            and all(isinstance(v, int) and 1 <= v <= 10000 for v in world.values())):
        raise AssertionError("not a World: %r" % (world,))
    return world


def check(test, port, queries, db):
    """None when the app answers `test` as TechEmpower's rules ask, else what is wrong."""
    def get(path, ctype):
        status, got_ctype, body = _get(port, path)
        if status != 200:
            raise AssertionError("%s: status %d: %r" % (path, status, body[:200]))
        if not got_ctype.startswith(ctype):
            raise AssertionError("%s: Content-Type %r, not %s" % (path, got_ctype, ctype))
        return body

    try:
        if test == "json":
            if json.loads(get("/json", "application/json")) != {"message": HELLO}:
                raise AssertionError("/json: wrong body")
        elif test == "plaintext":
            if get("/plaintext", "text/plain") != HELLO.encode():
                raise AssertionError("/plaintext: wrong body")
        elif test == "db":
            _world(json.loads(get("/db", "application/json")))
        elif test == "queries":
            for value, count in ((str(queries), queries), ("0", 1), ("foo", 1), ("", 1), ("501", 500)):
                _worlds(get("/queries?queries=" + value, "application/json"), count)
        elif test == "fortunes":
            body = get("/fortunes", "text/html").decode("utf-8")
            rows = re.findall(r"<tr><td>(\d+)</td><td>(.*?)</td></tr>", body)
            messages = [html.unescape(message) for _id, message in rows]
            if messages != sorted(FORTUNES + [ADDED_FORTUNE]):
                raise AssertionError("/fortunes: not the 13 fortunes in order: %r" % messages[:3])
            if "<script>" in body or "&lt;script&gt;" not in body:
                raise AssertionError("/fortunes: the messages are not escaped")
        elif test == "updates":
            for value, count in (("foo", 1), ("501", 500), (str(queries), queries)):
                worlds = _worlds(get("/updates?queries=" + value, "application/json"), count)
            with db.connect() as conn:                       # the last request's numbers are stored
                stored = dict(conn.execute("SELECT id, randomnumber FROM world WHERE id = ANY(%s)",
                                           ([w["id"] for w in worlds],)).fetchall())
            wrong = [w for w in worlds if stored.get(w["id"]) != w["randomNumber"]]
            if wrong:
                raise AssertionError("/updates: %d of %d rows not stored as answered" % (len(wrong), len(worlds)))
        return None
    except (AssertionError, ValueError, OSError) as exc:
        return "%s: %s" % (type(exc).__name__, str(exc)[:300])


# --- one server, one app: every test ------------------------------------------------------------

def measure(server_name, app_name, tests, db, args, seconds):
    """Start the server on the app, check each test's answers, run wrk on each; {test: result}."""
    interface, app = APPS[app_name]
    results = {}
    server = None
    try:
        server = Running(server_name, WORKERS, False,
                         command=lambda port, tmp: server_command(server_name, interface, app, port, args.gthreads),
                         env=server_env(db))
        for test in tests:
            path = TESTS[test].format(q=args.queries)
            result = {"invalid": check(test, server.port, args.queries, db)}
            try:
                if args.warmup:
                    run_wrk(server.port, args.warmup, False, ("--timeout", WRK_TIMEOUT), CONNECTIONS, path=path)
                server0, db0 = server.cpu_seconds(), db.cpu_seconds()
                result.update(run_wrk(server.port, seconds, False, ("--timeout", WRK_TIMEOUT), CONNECTIONS, path=path))
                server_cpu, db_cpu = server.cpu_seconds() - server0, db.cpu_seconds() - db0
                requests = max(result["requests"], 1)
                result["server_cpu_ms_per_request"] = round(server_cpu / requests * 1e3, 3)
                result["db_cpu_ms_per_request"] = round(db_cpu / requests * 1e3, 3)
                result["server_cpu_s"], result["db_cpu_s"] = round(server_cpu, 2), round(db_cpu, 2)
                result["db_connections"] = db.connections()
                if server.proc.poll() is not None:
                    result["error"] = "the server exited (%s) during the run" % server.proc.returncode
            except Exception as exc:      # one test failing must not stop the others
                result["error"] = "%s: %s" % (type(exc).__name__, str(exc)[:300])
            if result.get("errors") or result.get("invalid") or result.get("error"):
                result["stderr_tail"] = server.stderr()[-800:]
            results[test] = result
            log("    %-10s %s" % (test, summary(result)))
            if server.proc.poll() is not None:
                break
    except Exception as exc:        # it did not start: every test gets the reason
        for test in tests:
            results.setdefault(test, {"error": "%s: %s" % (type(exc).__name__, str(exc)[:300])})
        log("    failed: %s" % str(exc)[:300])
    finally:
        if server is not None:
            server.stop()
    return results


def summary(r):
    if "rps" not in r:
        return "failed: %s" % r.get("error", "?")[:200]
    text = "%9.0f req/s  p99 %8.1f ms  server %6.3f ms/req  db %6.3f ms/req" % (
        r["rps"], r["p99_ms"] or 0, r["server_cpu_ms_per_request"], r["db_cpu_ms_per_request"])
    if r["errors"]:
        text += "  errors %d (socket %d, non-2xx %d)" % (r["errors"], r["socket_errors"], r["non2xx"])
    if r.get("invalid"):
        text += "  INVALID: %s" % r["invalid"][:150]
    return text


# --- the report ---------------------------------------------------------------------------------

METRICS = ("rps", "p99_ms", "server_cpu_ms_per_request", "db_cpu_ms_per_request")


def medians(report):
    """{app: {server: {test: {metric: median over the rounds, errors: total, invalid: first}}}}"""
    out = {}
    for app, by_server in report["runs"].items():
        for server, by_test in by_server.items():
            for test, runs in by_test.items():
                good = [r for r in runs if "rps" in r]
                if not good:
                    continue
                row = {m: statistics.median(r[m] for r in good if r[m] is not None)
                       for m in METRICS if any(r[m] is not None for r in good)}
                row["errors"] = sum(r["errors"] for r in good)
                row["requests"] = sum(r["requests"] for r in good)
                row["invalid"] = next((r["invalid"] for r in runs if r.get("invalid")), None)
                out.setdefault(app, {}).setdefault(server, {})[test] = row
    return out


def _usable(row):
    """A run that counts as a peer's best: it answered by the rules and under 1% of its requests failed."""
    return row is not None and not row["invalid"] and row["errors"] <= 0.01 * max(row["requests"], 1)


def _cell(row):
    if row is None:
        return "failed"
    text = "%s · %s · %.2f · %.2f" % (format(round(row["rps"]), ","), _num(row.get("p99_ms")),
                                     row["server_cpu_ms_per_request"], row["db_cpu_ms_per_request"])
    if row["errors"]:
        text += " · **%d errors**" % row["errors"]
    if row["invalid"]:
        text += " · **invalid**"
    return text


def _num(value):
    if value is None:
        return "-"
    return "%.0f" % value if value >= 100 else "%.1f" % value


def comparisons(report):
    """Per app and test: fastcluster's numbers and the best peer's (highest req/s, lowest p99, lowest CPU)."""
    rows = []
    med = report["medians"]
    for app in report["apps"]:
        for test in report["tests"]:
            ours = med.get(app, {}).get("fastcluster", {}).get(test)
            peers = {s: med[app][s].get(test) for s in med.get(app, {}) if s != "fastcluster"}
            peers = {s: r for s, r in peers.items() if _usable(r)}
            if ours is None or not peers:
                continue

            def best(metric, pick):
                name = pick(peers, key=lambda s: peers[s][metric])
                return name, peers[name][metric]

            rows.append({"app": app, "test": test, "ours": ours, "rps": best("rps", max), "p99": best("p99_ms", min),
                         "server_cpu": best("server_cpu_ms_per_request", min),
                         "db_cpu": best("db_cpu_ms_per_request", min)})
    return rows


def markdown(report):
    lines = ["# Real apps on PostgreSQL: fastcluster and its peers", "",
             "Machine: %s. Run %s, `%s` (%d s): %d s per test after %d s of warm-up, %d round%s (medians), "
             "`wrk -t1 -c%d --timeout %s --latency`, queries=%d, %d workers per server, nothing pinned "
             "(two workers, the database and wrk share the 2 cores). PostgreSQL: %s, on %s, with %s. "
             "Versions: %s." % (
                 report["machine"], report["date"], report["command"], report.get("elapsed_s", 0), report["seconds"],
                 report["warmup"], report["rounds"], "" if report["rounds"] == 1 else "s", CONNECTIONS, WRK_TIMEOUT,
                 report["queries"], WORKERS, report["postgres"], report["db_via"],
                 ", ".join("%s=%s" % kv for kv in PG_SETTINGS.items()),
                 ", ".join("%s %s" % kv for kv in sorted(report["versions"].items()))), "",
             "Servers: fastcluster with its defaults (`fastcluster serve APP --workers 2`); gunicorn `-k sync` and "
             "`-k gthread --threads %d`; granian `--interface wsgi|asgi` with its defaults; uvicorn with its "
             "defaults (httptools and uvloop when installed), access log off. Each cell: **req/s · p99 ms · "
             "server CPU ms/request · database CPU ms/request** (CPU: user+sys from /proc over the run, divided "
             "by the requests served)." % report["gthreads"], ""]
    med = report["medians"]
    for app in report["apps"]:
        servers = [s for s in ALL_SERVERS if s in med.get(app, {}) or s in report["runs"].get(app, {})]
        if not servers:
            continue
        lines += ["## %s (%s)" % (app, APPS[app][0].upper()), "",
                  "| test | " + " | ".join(servers) + " |", "|---|" + "---|" * len(servers)]
        for test in report["tests"]:
            lines.append("| %s | %s |" % (test, " | ".join(_cell(med.get(app, {}).get(s, {}).get(test))
                                                           for s in servers)))
        held = [max((r.get("db_connections") or 0 for runs in report["runs"][app].get(s, {}).values() for r in runs),
                    default=0) for s in servers]
        lines += ["| database connections held (most after any test) | %s |" % " | ".join(map(str, held)), ""]
    rows = comparisons(report)
    if rows:
        lines += ["## fastcluster against the best peer in each row", "",
                  "The best peer per column: highest req/s, lowest p99, lowest CPU per request (a peer whose run "
                  "broke the rules or failed over 1% of its requests is left out).", "",
                  "| app / test | fastcluster req/s | best peer req/s (which) | req/s ratio | fastcluster p99 ms | "
                  "lowest peer p99 ms (which) | server CPU ms/req: fastcluster / lowest peer (which) | "
                  "db CPU ms/req: fastcluster / lowest peer |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ours = r["ours"]
            lines.append("| %s %s | %s | %s (%s) | %.2f | %s | %s (%s) | %.2f / %.2f (%s) | %.2f / %.2f |" % (
                r["app"], r["test"], format(round(ours["rps"]), ","), format(round(r["rps"][1]), ","), r["rps"][0],
                ours["rps"] / r["rps"][1], _num(ours.get("p99_ms")), _num(r["p99"][1]), r["p99"][0],
                ours["server_cpu_ms_per_request"], r["server_cpu"][1], r["server_cpu"][0],
                ours["db_cpu_ms_per_request"], r["db_cpu"][1]))
        lines.append("")
    problems = []
    for app, by_server in report["runs"].items():
        for server, by_test in by_server.items():
            for test, runs in by_test.items():
                for i, r in enumerate(runs):
                    for key in ("error", "invalid"):
                        if r.get(key):
                            problems.append("- %s on %s, %s, round %d: %s" % (server, app, test, i + 1,
                                                                             r[key].replace("\n", " ")[:300]))
                    if r.get("errors"):
                        problems.append("- %s on %s, %s, round %d: %d errors (socket %d, non-2xx %d) of %d "
                                        "requests" % (server, app, test, i + 1, r["errors"], r["socket_errors"],
                                                      r["non2xx"], r["requests"]))
    if problems:
        lines += ["## Errors and failed checks", ""] + problems + [""]
    if report["missing"]:
        lines += ["## Missing", ""] + ["- %s" % m for m in report["missing"]] + [""]
    return "\n".join(lines)


def chart(report, missing):
    """realapps.png: req/s (top) and server + database CPU per request (bottom), per app, log scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        missing.append("matplotlib: no chart")
        return None
    med = report["medians"]
    apps = [a for a in report["apps"] if a in med]
    if not apps:
        return None
    colors = {"fastcluster": "#d62728", "gunicorn-sync": "#7f7f7f", "gunicorn-gthread": "#bcbd22",
              "granian": "#1f77b4", "uvicorn": "#2ca02c"}
    fig, axes = plt.subplots(2, len(apps), figsize=(5.2 * len(apps), 7.5), squeeze=False)
    for col, app in enumerate(apps):
        servers = [s for s in ALL_SERVERS if s in med[app]]
        width = 0.8 / max(len(servers), 1)
        for row, (title, value) in enumerate((
                ("req/s (higher is better)", lambda r: r["rps"]),
                ("CPU ms per request, server + database (lower is better)",
                 lambda r: r["server_cpu_ms_per_request"] + r["db_cpu_ms_per_request"]))):
            ax = axes[row][col]
            for i, server in enumerate(servers):
                xs, ys = [], []
                for x, test in enumerate(report["tests"]):
                    r = med[app][server].get(test)
                    if r is not None and value(r) > 0:
                        xs.append(x + (i - (len(servers) - 1) / 2) * width)
                        ys.append(value(r))
                ax.bar(xs, ys, width, label=server, color=colors.get(server))
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: "%g" % v))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(range(len(report["tests"])))
            ax.set_xticklabels(report["tests"], fontsize=8)
            ax.set_title("%s: %s" % (app, title), fontsize=9)
            ax.tick_params(labelsize=8)
            if row == 0:
                ax.legend(fontsize=7)
    fig.suptitle("Real apps on PostgreSQL, %d workers each, wrk -c%d, queries=%d (%s, %s)" % (
        WORKERS, CONNECTIONS, report["queries"], report["machine"], report["date"]), fontsize=9)
    fig.tight_layout()
    path = os.path.join(RESULTS, report.get("name", "realapps") + ".png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# --- main ---------------------------------------------------------------------------------------

def _csv(value, allowed, what):
    names = [n for n in value.split(",") if n] if value else list(allowed)
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SystemExit("unknown %s: %s (choose from %s)" % (what, ", ".join(unknown), ", ".join(allowed)))
    return [n for n in allowed if n in names]


def estimate_s(apps, servers, tests, seconds, args):
    """A rough length of the run: each server start and stop about 3 s, each test its warm-up, its run and
    1 s of checks."""
    starts = sum(len([s for s in servers if s in SERVERS[APPS[a][0]]]) for a in apps)
    return args.rounds * starts * (3 + len(tests) * (seconds + args.warmup + 1)) + 10


def run(args, missing, started):
    apps = _csv(args.apps, list(APPS), "apps")
    tests = _csv(args.tests, list(TESTS), "tests")
    servers = _csv(args.only, ALL_SERVERS, "servers")
    seconds = 3 if args.quick else args.seconds
    log("about %d s: %d round(s) of %s on %s, tests %s, %d s each" % (
        estimate_s(apps, servers, tests, seconds, args), args.rounds, ",".join(servers), ",".join(apps),
        ",".join(tests), seconds))
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise SystemExit("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): apt-get install "
                         "postgresql")
    argv = [a for a in sys.argv[1:]]
    if "--installed" in argv:
        del argv[argv.index("--installed"):argv.index("--installed") + 2]
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python benchmarks/realapps.py"] + argv),
        "machine": "%d CPUs, %s, Linux %s, Python %s" % (os.cpu_count(), compare._cpu_name(), platform.release(),
                                                        platform.python_version()),
        "versions": {k: v for k, v in compare.versions(PIP).items() if k not in ("ab", "nginx", "node")},
        "missing": missing, "seconds": seconds, "warmup": args.warmup,
        "rounds": args.rounds, "queries": args.queries, "gthreads": args.gthreads, "db_via": args.db_via,
        "apps": apps, "tests": tests, "servers": servers, "runs": {}, "name": args.name,
    }
    db = None

    def cleanup():
        if db is not None:
            db.stop()

    atexit.register(cleanup)      # (also when something below raises past the finally's reach)
    try:
        log("starting a throwaway PostgreSQL cluster")
        db = Postgres(bin_dir, args.db_via)
        report["postgres"] = db.version()
        log("  %s, port %d, in %s" % (report["postgres"], db.port, db.tmp))
        for round_ in range(args.rounds):
            for app in apps:
                for server in servers:
                    if server not in SERVERS[APPS[app][0]]:
                        continue
                    log("round %d %-8s %s" % (round_ + 1, app, server))
                    results = measure(server, app, tests, db, args, seconds)
                    for test, result in results.items():
                        report["runs"].setdefault(app, {}).setdefault(server, {}).setdefault(test, []).append(result)
                    if db.proc.poll() is not None:
                        raise RuntimeError("postgres exited: %s" % db.log_tail())
    finally:
        cleanup()
    report["medians"] = medians(report)
    report["elapsed_s"] = round(time.monotonic() - started)
    os.makedirs(RESULTS, exist_ok=True)
    png = chart(report, missing)
    report["chart"] = os.path.relpath(png, HERE) if png else None
    stem = os.path.join(RESULTS, report["name"])
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    log("wrote %s (%d s)" % (os.path.relpath(stem + ".md", ROOT), report["elapsed_s"]))
    for m in missing:
        log("missing: %s" % m)


def render(name):
    stem = os.path.join(RESULTS, name)
    with open(stem + ".json") as f:
        report = json.load(f)
    report["name"] = name
    png = chart(report, [])
    report["chart"] = os.path.relpath(png, HERE) if png else report.get("chart")
    with open(stem + ".md", "w") as f:
        f.write(markdown(report))
    log("wrote %s from %s.json" % (os.path.relpath(stem + ".md", ROOT), name))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--quick", action="store_true", help="3 s per test instead of --seconds")
    ap.add_argument("--seconds", type=int, default=5, help="seconds of wrk per test (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each test, not counted (default 1)")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are reported (default 1)")
    ap.add_argument("--only", default="", help="comma-separated servers (default: all): " + ",".join(ALL_SERVERS))
    ap.add_argument("--apps", default="", help="comma-separated apps (default: all): " + ",".join(APPS))
    ap.add_argument("--tests", default="", help="comma-separated tests (default: all): " + ",".join(TESTS))
    ap.add_argument("--queries", type=int, default=20, help="queries= of the queries and updates tests (default 20)")
    ap.add_argument("--gthreads", type=int, default=4, help="gunicorn gthread's --threads (default 4)")
    ap.add_argument("--db-via", choices=("tcp", "unix"), default="tcp",
                    help="how the apps reach PostgreSQL: loopback TCP (default) or its unix socket")
    ap.add_argument("--name", default="realapps",
                    help="the results' file stem under benchmarks/results/ (default realapps: NAME.json, .md, .png)")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: write NAME.md and NAME.png again from results/NAME.json")
    ap.add_argument("--installed", default=None, help=argparse.SUPPRESS)   # set by the re-exec below
    args = ap.parse_args()
    for names, allowed, what in ((args.apps, APPS, "apps"), (args.tests, TESTS, "tests"),
                                 (args.only, ALL_SERVERS, "servers")):
        _csv(names, list(allowed), what)          # a typo fails before anything is installed
    if args.render and os.path.exists(PY) and os.path.realpath(sys.executable) != os.path.realpath(PY):
        os.execv(PY, [PY, os.path.abspath(__file__), *sys.argv[1:]])      # (the venv has matplotlib)
    if args.installed is None and not args.render:
        started = time.monotonic()
        missing = []
        compare.ensure_tools(missing, {"wrk": "wrk"}, libev=False,
                             extra=[] if postgres_bin() else ["postgresql"])
        compare.ensure_venv(missing, PIP)
        # the rest runs in the venv's Python: psycopg for the checks, matplotlib for the chart
        state = json.dumps({"missing": missing, "started": time.time() - (time.monotonic() - started)})
        os.execv(PY, [PY, os.path.abspath(__file__), *sys.argv[1:], "--installed", state])
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", args.name):
        ap.error("--name: letters, digits, '.', '_' and '-' only, not %r" % args.name)
    if args.render:
        return render(args.name)
    state = json.loads(args.installed)
    started = time.monotonic() - (time.time() - state["started"])
    # SIGTERM and SIGHUP end the run the way Ctrl-C does, through the finally that stops the cluster
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    try:
        run(args, state["missing"], started)
    except KeyboardInterrupt:
        raise SystemExit("interrupted: the servers and the database were stopped and removed; no results written")


if __name__ == "__main__":
    main()
