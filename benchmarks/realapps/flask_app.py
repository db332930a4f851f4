"""Flask + psycopg 3 (sync): TechEmpower's six tests. A connection per thread, opened on first use,
kept for the thread's life, in autocommit (each statement its own transaction, as the rules allow)."""

import threading

import psycopg
from flask import Flask, Response, jsonify, render_template, request

from common import DB, HELLO, TEMPLATES, query_count, random_id, sorted_fortunes

app = Flask(__name__, template_folder=TEMPLATES)
_local = threading.local()

SELECT_WORLD = "SELECT id, randomnumber FROM world WHERE id = %s"
UPDATE_WORLDS = ("UPDATE world SET randomnumber = v.r FROM (SELECT unnest(%s::int[]) AS id, unnest(%s::int[]) AS r) v "
                 "WHERE world.id = v.id")


def cursor():
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed:
        conn = _local.conn = psycopg.connect(autocommit=True, **DB)
    return conn.cursor()


@app.route("/json")
def json_():
    return jsonify(message=HELLO)


@app.route("/plaintext")
def plaintext():
    return Response(HELLO, content_type="text/plain")


@app.route("/db")
def db():
    with cursor() as cur:
        id_, number = cur.execute(SELECT_WORLD, (random_id(),)).fetchone()
    return jsonify(id=id_, randomNumber=number)


@app.route("/queries")
def queries():
    with cursor() as cur:
        worlds = [cur.execute(SELECT_WORLD, (random_id(),)).fetchone()
                  for _ in range(query_count(request.args.get("queries")))]
    return jsonify([{"id": id_, "randomNumber": number} for id_, number in worlds])


@app.route("/fortunes")
def fortunes():
    with cursor() as cur:
        rows = cur.execute("SELECT id, message FROM fortune").fetchall()
    return render_template("fortunes.html", fortunes=sorted_fortunes(rows))


@app.route("/updates")
def updates():
    with cursor() as cur:
        worlds = []
        for _ in range(query_count(request.args.get("queries"))):
            id_, _old = cur.execute(SELECT_WORLD, (random_id(),)).fetchone()
            worlds.append((id_, random_id()))
        final = dict(worlds)                   # a row drawn twice keeps its last number
        changes = sorted(final.items())        # one change per row, in id order: no deadlocks between requests
        cur.execute(UPDATE_WORLDS, ([i for i, _ in changes], [n for _, n in changes]))
    return jsonify([{"id": id_, "randomNumber": final[id_]} for id_, _ in worlds])
