from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from api import views

router = DefaultRouter()
router.APIRootView = views.ApiRootView
router.register("users", views.UserViewSet, basename="user")
router.register("dataset", views.DataSetViewSet, basename="dataset")
router.register("datasetitem", views.DataSetItemViewSet, basename="datasetitem")
router.register("trainingrun", views.TrainingRunViewSet, basename="trainingrun")

urlpatterns = [
    path("test/", views.PredictView.as_view(), name="predict"),
    path("health/", views.HealthView.as_view(), name="health"),
    path("starting-points/", views.StartingPointsView.as_view(), name="starting-points"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: the CSP allows no inline script.
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="kerasui/swagger_ui.html"),
        name="docs",
    ),
    *router.urls,
]
