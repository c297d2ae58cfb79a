"""gunicorn for deployments: `gunicorn -c gunicorn.conf.py kerasui.wsgi` (settings from the environment).

Workers and threads were chosen with bench/serving.py on a 2-core machine (see the README): each
worker process holds its own model cache (TensorFlow and the models take memory per worker), and
threads let one worker serve several requests while another waits on the network or the database.
"""

import multiprocessing
import os

bind = os.environ.get("KERASUI_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("KERASUI_WORKERS", min(2, multiprocessing.cpu_count())))
threads = int(os.environ.get("KERASUI_THREADS", 2))
worker_class = "gthread"
# A zip upload or a model download can take a while on a slow link.
timeout = int(os.environ.get("KERASUI_TIMEOUT", 120))
graceful_timeout = 30
keepalive = 5
# Each worker imports TensorFlow itself: forking after TensorFlow has started is not safe.
preload_app = False
accesslog = os.environ.get("KERASUI_ACCESS_LOG") or None
errorlog = "-"
loglevel = os.environ.get("KERASUI_LOG_LEVEL", "info").lower()
# Behind a proxy that sets X-Forwarded-* headers (nginx, a load balancer) on this machine.
forwarded_allow_ips = os.environ.get("KERASUI_FORWARDED_ALLOW_IPS", "127.0.0.1")
