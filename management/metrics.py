"""Prometheus metrics of the web processes: requests per endpoint, predictions and model loads per
engine, loaded models, and the training queue (read from the database when scraped).

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it) makes every worker write its
values to files in that folder, and a scrape answered by any worker adds up all of them. Without
it (runserver, tests) the values are this process's own.
"""

from __future__ import annotations

import os
import sys
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # The metrics' files are made as soon as the metrics are defined, below.
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MODEL_BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LOAD_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}

REQUESTS = Counter(
    "kerasui_http_requests",
    "HTTP requests answered, by endpoint (the route's name), method and status code.",
    ["endpoint", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "kerasui_http_request_duration_seconds",
    "Time Django took to answer a request, by endpoint and method.",
    ["endpoint", "method"],
    buckets=REQUEST_BUCKETS,
)
PREDICTION_SECONDS = Histogram(
    "kerasui_prediction_duration_seconds",
    "Time in the model for one request's images (one batch), by engine: onnxruntime or keras.",
    ["engine"],
    buckets=MODEL_BUCKETS,
)
PREDICTED_IMAGES = Counter("kerasui_predicted_images", "Images predicted, by engine.", ["engine"])
MODEL_LOADS = Counter(
    "kerasui_model_loads",
    "Models loaded by a web process, by engine and trigger: start (a worker starting), watch (a newly "
    "current run, loaded by the worker's watcher) or request (a request waited for the load).",
    ["engine", "trigger"],
)
MODEL_LOAD_SECONDS = Histogram(
    "kerasui_model_load_duration_seconds",
    "Time to load a model (and, the first time, to make and prove its ONNX export), by engine.",
    ["engine"],
    buckets=LOAD_BUCKETS,
)
CACHED_MODELS = Gauge(
    "kerasui_cached_models", "Models loaded in the web process (its model cache).", multiprocess_mode="liveall"
)
TENSORFLOW_IMPORTED = Gauge(
    "kerasui_tensorflow_imported",
    "1 once the web process has imported TensorFlow (only a model served by the Keras fallback does).",
    multiprocess_mode="liveall",
)


def engine_label(predictor) -> str:
    """onnxruntime, or keras for the Keras predictor (whether it calls a tf.function or the model)."""
    return "onnxruntime" if getattr(predictor, "engine", "") == "onnxruntime" else "keras"


def record_process(*, cached_models: int) -> None:
    """This process's gauges: how many models it holds, and whether TensorFlow is in it."""
    CACHED_MODELS.set(cached_models)
    TENSORFLOW_IMPORTED.set(1 if "tensorflow" in sys.modules else 0)


class TrainingCollector:
    """Training runs queued and running, counted in the database when scraped."""

    def collect(self):
        from django.db.models import Count

        from training.models import TrainingRun

        counts = dict(
            TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE)
            .values_list("status")
            .annotate(count=Count("id"))
            .values_list("status", "count")
        )
        family = GaugeMetricFamily(
            "kerasui_training_runs",
            "Training runs by status: queued (the queue's length) and running.",
            labels=["status"],
        )
        for status in TrainingRun.ACTIVE:
            family.add_metric([str(status)], counts.get(status, 0))
        yield family


def _endpoint(request) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None:
        return match.view_name or "unnamed"
    from django.conf import settings

    return "static" if request.path.startswith(f"/{settings.STATIC_URL.lstrip('/')}") else "unmatched"


class MetricsMiddleware:
    """Counts and times every request by endpoint (the route's name, so the label set stays small)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        endpoint = _endpoint(request)
        method = request.method if request.method in METHODS else "other"
        REQUEST_SECONDS.labels(endpoint, method).observe(time.perf_counter() - started)
        REQUESTS.labels(endpoint, method, str(response.status_code)).inc()
        return response


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, of every worker when in multiprocess mode."""
    training = CollectorRegistry()
    training.register(TrainingCollector())
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry) + generate_latest(training), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY) + generate_latest(training), CONTENT_TYPE_LATEST
