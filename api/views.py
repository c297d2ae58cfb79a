"""API views: validate input, call one service, present the result."""

from django.db.models import Count
from django.http import FileResponse
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from api.permissions import CanPredict
from api.serializers import (
    DataSetSerializer,
    PredictSerializer,
    TrainingRunSerializer,
    ZipUploadSerializer,
)
from management.models import DataSet, TrainingRun
from management.services.datasets import dataset_delete, dataset_import_zip
from management.services.errors import ServiceError
from management.services.prediction import prediction_predict_one, prediction_run_for
from management.services.training import training_run_create


def exception_handler(error, context):
    """DRF's handler, plus services' errors as 4xx JSON naming the field at fault."""
    if isinstance(error, ServiceError):
        return Response(error.as_dict(), status=error.status)
    return drf_exception_handler(error, context)


def require_perm(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"you need the permission '{permission}'")


class DataSetViewSet(viewsets.ModelViewSet):
    """Datasets; `upload` imports a zip, `train` queues a run, `model` downloads the current model."""

    serializer_class = DataSetSerializer

    def get_queryset(self):
        return DataSet.objects.annotate(item_count=Count("items")).select_related("current_run").order_by("id")

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance)

    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request, pk=None):
        require_perm(request, "management.add_datasetitem")
        dataset = self.get_object()
        serializer = ZipUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = dataset_import_zip(
            dataset=dataset,
            file=serializer.validated_data["file"],
            label=serializer.validated_data.get("label") or None,
        )
        return Response(report.as_dict(), status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def train(self, request, pk=None):
        require_perm(request, "management.change_dataset")
        run = training_run_create(dataset=self.get_object(), user=request.user)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"])
    def model(self, request, pk=None):
        require_perm(request, "management.view_trainingrun")
        dataset = self.get_object()
        run = prediction_run_for(dataset=dataset)
        return FileResponse(run.model_file.open("rb"), as_attachment=True, filename=run.download_name)


class TrainingRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Training runs with their progress, history and metrics; filter with ?dataset=<id>."""

    serializer_class = TrainingRunSerializer

    def get_queryset(self):
        runs = TrainingRun.objects.order_by("-id")
        dataset = self.request.query_params.get("dataset")
        if dataset is not None:
            if not dataset.isdigit():
                raise ValidationError({"dataset": ["must be a dataset id (a whole number)"]})
            runs = runs.filter(dataset_id=int(dataset))
        return runs


class PredictView(APIView):
    """POST an image (base64 in JSON, or a multipart file) and a dataset id; get the label."""

    permission_classes = [permissions.IsAuthenticated, CanPredict]
    parser_classes = [JSONParser, MultiPartParser, FormParser]

    def post(self, request):
        serializer = PredictSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        name, data = serializer.validated_data["image"]
        prediction = prediction_predict_one(dataset=serializer.validated_data["dataset"], name=name, data=data)
        return Response(prediction.as_dict())
