from django.urls import path
from rest_framework.routers import DefaultRouter

from api import views

router = DefaultRouter()
router.register("dataset", views.DataSetViewSet, basename="dataset")
router.register("trainingrun", views.TrainingRunViewSet, basename="trainingrun")

urlpatterns = [
    path("test/", views.PredictView.as_view(), name="predict"),
    *router.urls,
]
