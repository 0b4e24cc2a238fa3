"""gunicorn settings, read from the same environment as the service (see README)."""

import os
import shutil
import tempfile

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
if worker_class == "sync":
    threads = 1  # gunicorn would otherwise quietly run gthread for a sync worker with threads > 1
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
graceful_timeout = 20
keepalive = 5
# gthread workers each listen on a socket of their own (SO_REUSEPORT; gunicorn >= 23 binds one per
# worker), and the kernel spreads new connections over them by a hash of their addresses. With one
# shared socket the workers race for each connection, and a client that opens its connections at once
# (wrk, a proxy's keep-alive pool) can leave one worker with all of them and the other idle
# (docs/performance.md). A gthread worker takes every connection it is offered either way; a sync
# worker serves one request at a time, and a connection hashed to a busy one would wait while another
# worker idles, so sync workers keep the shared socket, which only an idle worker accepts from.
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", str(worker_class == "gthread")).lower() in ("1", "true", "yes")
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()

# Prometheus multiprocess mode: every worker writes its metrics to files in this directory, and a
# scrape of any worker reads them all. A fresh directory per server start, removed at exit.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="deploy-service-metrics-")
    _owned_metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
else:
    _owned_metrics_dir = ""


def child_exit(server, worker):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):  # noqa: ANN001, ANN201
    if _owned_metrics_dir:
        shutil.rmtree(_owned_metrics_dir, ignore_errors=True)
