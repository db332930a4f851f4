"""What the three apps share: TechEmpower's test rules and where the database is.

The benchmark (benchmarks/realapps.py) sets REALAPPS_DB_* for the servers it starts.
"""

import os
import random

DB = {
    "host": os.environ.get("REALAPPS_DB_HOST", "127.0.0.1"),   # an address, or a unix socket's folder
    "port": int(os.environ.get("REALAPPS_DB_PORT", "5432")),
    "dbname": os.environ.get("REALAPPS_DB_NAME", "hello_world"),
    "user": os.environ.get("REALAPPS_DB_USER", "benchmarkdbuser"),
}
POOL_SIZE = int(os.environ.get("REALAPPS_DB_POOL", "16"))      # FastAPI: asyncpg connections per worker

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
ADDED_FORTUNE = "Additional fortune added at request time."
HELLO = "Hello, World!"
WORLD_ROWS = 10000


def random_id():
    return random.randint(1, WORLD_ROWS)


def query_count(value):
    """The queries parameter: a number clamped to 1..500; missing or not a number is 1."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        return 1
    return min(max(count, 1), 500)


def sorted_fortunes(rows):
    """(id, message) rows plus the one added at request time, sorted by message."""
    rows = list(rows)
    rows.append((0, ADDED_FORTUNE))
    rows.sort(key=lambda row: row[1])
    return rows
