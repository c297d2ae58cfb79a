from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from api import views
from datasets import api as datasets
from health import api as health
from serving import api as serving
from training import api as training

router = DefaultRouter()
# No `.json` suffix routes: the viewsets' actions take no `format` argument (a suffix was a 500), and
# `?format=` or the Accept header already choose the answer's type.
router.include_format_suffixes = False
router.APIRootView = views.ApiRootView
router.register("users", views.UserViewSet, basename="user")
router.register("dataset", datasets.DataSetViewSet, basename="dataset")
router.register("datasetitem", datasets.DataSetItemViewSet, basename="datasetitem")
router.register("trainingrun", training.TrainingRunViewSet, basename="trainingrun")
router.register("exportjob", serving.ExportJobViewSet, basename="exportjob")
router.register("importjob", datasets.ImportJobViewSet, basename="importjob")

urlpatterns = [
    path("test/", serving.PredictView.as_view(), name="predict"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("starting-points/", training.StartingPointsView.as_view(), name="starting-points"),
    # Dataset health (health/api.py); /api/health/ above is the server's own liveness probe.
    path("dataset/<int:pk>/health/", health.DataSetHealthView.as_view(), name="dataset-health"),
    path("dataset/<int:pk>/health/keep/", health.HealthDismissView.as_view(), name="dataset-health-keep"),
    path("dataset/<int:pk>/health/keep_one/", health.HealthKeepOneView.as_view(), name="dataset-health-keep-one"),
    path("healthcheck/<int:pk>/", health.HealthCheckView.as_view(), name="healthcheck-detail"),
    path("healthcheck/<int:pk>/cancel/", health.HealthCheckCancelView.as_view(), name="healthcheck-cancel"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline script.
    path(
        "docs/",
        # GET only: its HTML renderer has no template for an OPTIONS answer (that was a 500).
        SpectacularSwaggerSplitView.as_view(
            url_name="schema", template_name="kerasui/swagger_ui.html", http_method_names=["get", "head"]
        ),
        name="docs",
    ),
    *router.urls,
]
