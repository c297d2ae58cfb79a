"""gunicorn for deployments: `gunicorn -c gunicorn.conf.py kerasui.wsgi` (settings from the environment).

Workers and threads were chosen with bench/serving.py on a 2-core machine (see the README): each
worker process holds its own model cache (ONNX Runtime sessions; TensorFlow only for a model served
by the Keras fallback), and threads let one worker serve several requests while another waits on
the network or the database. Each worker loads the current models before it accepts its first
request and follows newly current runs in a thread (kerasui/wsgi.py, serving/warm.py).
"""

import multiprocessing
import os
import tempfile
from pathlib import Path

bind = os.environ.get("KERASUI_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("KERASUI_WORKERS", min(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("KERASUI_THREADS", 2))
worker_class = "gthread"
# A zip upload or a model download can take a while on a slow link. With gthread workers this timeout
# only notices a worker whose main loop stops answering (a worker process hung as a whole), not one
# busy request thread: requests are bounded by KERASUI_REQUEST_TIME_LIMIT (database work, see
# kerasui/deadlines.py) and by the pixel budgets and explanation slots (CPU work) instead.
timeout = int(os.environ.get("KERASUI_TIMEOUT", 120))
# Each worker is replaced, gracefully, after this many requests (plus up to the jitter, so that the
# workers do not restart together): memory a worker grew (a large decode, a fallback model) goes back.
max_requests = int(os.environ.get("KERASUI_MAX_REQUESTS", 2000))
max_requests_jitter = int(os.environ.get("KERASUI_MAX_REQUESTS_JITTER", 200))
graceful_timeout = 30
keepalive = 5
# Each worker loads its models and starts its threads (training runner, serving watcher) itself:
# threads do not survive a fork, and forking after TensorFlow (the fallback) has started is not safe.
preload_app = False
accesslog = os.environ.get("KERASUI_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("KERASUI_LOG_LEVEL", "info").lower()
# Behind a proxy that sets X-Forwarded-* headers (nginx, a load balancer) on this machine.
forwarded_allow_ips = os.environ.get("KERASUI_FORWARDED_ALLOW_IPS", "127.0.0.1")

# Prometheus (/metrics): each worker writes its metrics to files in this folder and a scrape adds them
# up. Set PROMETHEUS_MULTIPROC_DIR to a folder of its own to choose where; it is emptied at start.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="kerasui-metrics-")


def on_starting(server):
    # A wrong setting stops gunicorn here, in the master, with one line (a worker would fail to boot in a loop).
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kerasui.settings")
    from kerasui.config import stop_on_bad_settings

    stop_on_bad_settings()
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    # The worker's gauges (models loaded, TensorFlow imported) leave the metrics with it.
    multiprocess.mark_process_dead(worker.pid)
