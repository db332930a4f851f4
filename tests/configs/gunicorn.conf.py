# A gunicorn.conf.py as projects have them: fastcluster starts from it unchanged.
import multiprocessing
import os

bind = ["127.0.0.1:0"]
workers = 2
worker_class = "sync"
timeout = 30
graceful_timeout = 10
keepalive = 5
max_requests = 1000
max_requests_jitter = 50
preload_app = True
accesslog = os.environ["FC_ACCESS_LOG"]
errorlog = "-"
loglevel = "info"
wsgi_app = "apps.suite:app"


def post_fork(server, worker):
    # where a --preload app's database connections would be reset
    with open(os.environ["FC_HOOK_LOG"], "a") as f:
        f.write("post_fork %d %d\n" % (worker.pid, worker.slot))


def pre_request(worker, req):
    pass


def _cpus():
    return multiprocessing.cpu_count()
