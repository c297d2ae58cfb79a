"""API views: validate input, call one service, present the result."""

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.db.models import Count
from django.http import Http404, HttpResponse, JsonResponse
from django.views import defaults
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import APISettings
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from api.permissions import PREDICT, CanPredict, CanReadMetrics, IsSuperuser, TokenScopes
from api.serializers import (
    BatchPredictionSerializer,
    DataSetItemMultipartSerializer,
    DataSetItemSerializer,
    DataSetSerializer,
    ImportReportSerializer,
    ModelImportSerializer,
    ModelMetadataSerializer,
    PredictionSerializer,
    PredictMultipartSerializer,
    PredictSerializer,
    TrainingRunDetailSerializer,
    TrainingRunSerializer,
    UserSerializer,
    ValidateModelSerializer,
    ValidationReportSerializer,
    ZipUploadSerializer,
)
from management import metrics
from management.files import media_response
from management.ml.models import DEFAULT_PROCESS
from management.models import MODEL_CODE_PERMISSION, DataSet, DataSetItem, TrainingRun
from management.services.datasets import (
    dataset_delete,
    dataset_import_zip,
    dataset_item_create,
    dataset_item_update,
    dataset_items_delete,
)
from management.services.errors import Conflict, NotFound, ServiceError
from management.services.exports import training_run_export, training_run_export_bundle
from management.services.prediction import (
    model_cache,
    prediction_current_run,
    prediction_metadata,
    prediction_predict,
    prediction_run_for,
    prediction_version_run,
)
from management.services.training import (
    dataset_model_validate,
    training_run_cancel,
    training_run_create,
    training_run_delete,
    training_run_resume,
)
from management.services.versions import training_run_import, training_run_promote

API_PREFIXES = ("/api/", "/o/")
FILE_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")
EXPORT_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        enum=["keras", "h5", "savedmodel", "tflite", "onnx"],
        description="keras (default), h5, savedmodel (a zip), tflite or onnx. Made and checked against the Keras "
        "model on the first request (this can take a minute), then kept; 422 when the check refused it.",
    ),
    OpenApiParameter("precision", str, enum=["float32", "float16"], description="float16 for tflite only."),
    OpenApiParameter(
        "bundle", bool, description="1: a zip of the model, labels.json and README.txt with a usage example."
    ),
]
EXPORT_RESPONSES = {
    200: FILE_RESPONSE,
    409: OpenApiResponse(description="The run has no model."),
    422: OpenApiResponse(description="The export failed its check against the Keras model; it is never served."),
}
MODEL_CODE_AND_CHANGE = "management.change_dataset and management.change_model_code"


def exception_handler(error, context):
    """DRF's handler, plus services' errors as 4xx JSON naming the field at fault."""
    if isinstance(error, ServiceError):
        return Response(error.as_dict(), status=error.status)
    return drf_exception_handler(error, context)


def _is_api(request) -> bool:
    return request.path.startswith(API_PREFIXES)


# Django's own error pages, as JSON under /api/ and /o/ (unknown routes, oversize bodies, crashes).
def bad_request(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": f"bad request: {exception or 'the request cannot be read'}"}, status=400)
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": str(exception) or "permission denied"}, status=403)
    return defaults.permission_denied(request, exception)


def not_found(request, exception):
    if _is_api(request):
        return JsonResponse({"detail": f"not found: no route or object at {request.path}"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"detail": "server error: the failure is logged for the operator"}, status=500)
    return defaults.server_error(request)


def require_perm(request, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"you need the permission '{permission}'")


def check_model_code(request, serializer, instance=None) -> None:
    """Setting model code is running code on the server: it needs its own permission."""
    code = serializer.validated_data.get("process")
    current = instance.process if instance is not None else DEFAULT_PROCESS
    if code is None or code.replace("\r\n", "\n").strip() == current.replace("\r\n", "\n").strip():
        return
    if not request.user.has_perm(MODEL_CODE_PERMISSION):
        raise PermissionDenied(
            {
                "process": [
                    f"setting the model code needs the permission '{MODEL_CODE_PERMISSION}': "
                    "the code runs on the server; leave 'process' out to keep the current code"
                ]
            }
        )


def file_download(field, filename: str | None = None, content_type: str | None = None):
    if not field:
        raise NotFound("there is no such file", field="file")
    try:
        return media_response(field.name, filename=filename, content_type=content_type)
    except Http404:
        raise NotFound("the file is missing from storage", field="file") from None


class ModelFileNegotiation(DefaultContentNegotiation):
    """On model downloads `?format=` names the model's file format, not DRF's response renderer."""

    settings = APISettings({"URL_FORMAT_OVERRIDE": None})


def model_download(request, run):
    """The run's model in the format the query asks for (?format=, ?precision=, ?bundle=1)."""
    params = request.query_params
    options = {"format": params.get("format") or "keras", "precision": params.get("precision") or "float32"}
    bundle = params.get("bundle", "").lower() in {"1", "true", "yes"}
    export = training_run_export_bundle(run=run, **options) if bundle else training_run_export(run=run, **options)
    try:
        return media_response(export.name, filename=export.filename)
    except Http404:
        raise NotFound("the file is missing from storage", field="file") from None


@extend_schema_view(
    list=extend_schema(summary="List datasets"),
    create=extend_schema(summary="Create a dataset"),
)
class DataSetViewSet(viewsets.ModelViewSet):
    """Datasets; `upload` imports a zip, `train` queues a run, `model` downloads the current model."""

    serializer_class = DataSetSerializer
    filterset_fields = {"name": ["exact", "icontains"]}

    def get_queryset(self):
        return DataSet.objects.annotate(item_count=Count("items")).select_related("current_run").order_by("id")

    def perform_create(self, serializer):
        check_model_code(self.request, serializer)
        serializer.save()
        serializer.instance.item_count = 0

    def perform_update(self, serializer):
        check_model_code(self.request, serializer, serializer.instance)
        serializer.save()

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance)

    @extend_schema(
        summary="Import a zip of images",
        request={"multipart/form-data": ZipUploadSerializer},
        responses={201: ImportReportSerializer},
    )
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

    @extend_schema(summary="Queue a training run", request=None, responses={202: TrainingRunSerializer})
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def train(self, request, pk=None):
        require_perm(request, "management.change_dataset")
        run = training_run_create(dataset=self.get_object(), user=request.user)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Build the model without training it: its layers, or the error and its line",
        request=ValidateModelSerializer,
        responses={200: ValidationReportSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        parser_classes=[JSONParser, MultiPartParser, FormParser],
        permission_classes=[TokenScopes, permissions.IsAuthenticated],
    )
    def validate(self, request, pk=None):
        # Validating is a step of editing a dataset, not of creating one.
        require_perm(request, "management.view_dataset")
        require_perm(request, "management.change_dataset")
        dataset = self.get_object()
        serializer = ValidateModelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check_model_code(request, serializer, dataset)
        report = dataset_model_validate(dataset=dataset, **serializer.validated_data)
        return Response(report.as_dict())

    @extend_schema(
        summary="Download the current model (.keras, or ?format=h5|savedmodel|tflite|onnx)",
        parameters=EXPORT_PARAMETERS,
        responses=EXPORT_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=ModelFileNegotiation)
    def model(self, request, pk=None):
        require_perm(request, "management.view_trainingrun")
        return model_download(request, prediction_run_for(dataset=self.get_object()))

    @extend_schema(
        summary="Import a trained .keras model and its labels as a new, current version",
        description=f"Needs {MODEL_CODE_AND_CHANGE}: a model file is close to code. Loaded with Keras' safe mode "
        "(Lambda layers refused) in a separate process; it must take the dataset's image size and colour mode "
        "and give one output per label.",
        request={"multipart/form-data": ModelImportSerializer},
        responses={201: TrainingRunSerializer},
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="import_model",
        parser_classes=[MultiPartParser, FormParser],
        permission_classes=[TokenScopes, permissions.IsAuthenticated],
    )
    def import_model(self, request, pk=None):
        require_perm(request, "management.view_dataset")
        require_perm(request, "management.change_dataset")
        require_perm(request, MODEL_CODE_PERMISSION)
        dataset = self.get_object()
        serializer = ModelImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_import(dataset=dataset, user=request.user, **serializer.validated_data)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="What the current model takes and answers", responses={200: ModelMetadataSerializer})
    @action(detail=True, methods=["get"], url_path="model/metadata")
    def model_metadata(self, request, pk=None):
        require_perm(request, "management.view_trainingrun")
        return Response(prediction_metadata(dataset=self.get_object()).as_dict())


@extend_schema_view(
    create=extend_schema(
        summary="Add an image",
        request={"application/json": DataSetItemSerializer, "multipart/form-data": DataSetItemMultipartSerializer},
    ),
    update=extend_schema(
        request={"application/json": DataSetItemSerializer, "multipart/form-data": DataSetItemMultipartSerializer}
    ),
    partial_update=extend_schema(
        request={"application/json": DataSetItemSerializer, "multipart/form-data": DataSetItemMultipartSerializer}
    ),
)
class DataSetItemViewSet(viewsets.ModelViewSet):
    """Labelled images; filter with ?dataset=<id> and ?label=<label>."""

    serializer_class = DataSetItemSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    filterset_fields = ["dataset", "label"]

    def get_queryset(self):
        return DataSetItem.objects.order_by("id")

    def perform_create(self, serializer):
        data = serializer.validated_data
        image = data["image"]
        serializer.instance = dataset_item_create(
            dataset=data["dataset"], label=data["label"], file=image, name=getattr(image, "name", "")
        )

    def perform_update(self, serializer):
        data = serializer.validated_data
        serializer.instance = dataset_item_update(
            item=serializer.instance, label=data.get("label"), dataset=data.get("dataset"), file=data.get("image")
        )

    def perform_destroy(self, instance):
        dataset_items_delete(items=[instance])


class TrainingRunViewSet(mixins.DestroyModelMixin, viewsets.ReadOnlyModelViewSet):
    """Training runs with their progress, history and metrics; filter with ?dataset=<id> and ?status=."""

    serializer_class = TrainingRunSerializer
    filterset_fields = ["dataset", "status"]

    def get_queryset(self):
        return TrainingRun.objects.select_related("dataset").order_by("-id")

    def get_serializer_class(self):
        return TrainingRunDetailSerializer if self.action == "retrieve" else TrainingRunSerializer

    def perform_destroy(self, instance):
        training_run_delete(run=instance)

    @extend_schema(summary="Cancel a queued or running run", request=None, responses={200: TrainingRunSerializer})
    @action(detail=True, methods=["post"], permission_classes=[TokenScopes, permissions.IsAuthenticated])
    def cancel(self, request, pk=None):
        # Cancelling changes what happens to a dataset, as the admin's Cancel button does.
        require_perm(request, "management.view_trainingrun")
        require_perm(request, "management.change_dataset")
        run = self.get_object()
        if not training_run_cancel(run=run):
            raise Conflict(f"run {run.pk} has already ended ({run.status})", field="run")
        return Response(TrainingRunSerializer(run).data)

    @extend_schema(
        summary="Resume a cancelled or interrupted run from its last completed epoch",
        request=None,
        responses={202: TrainingRunSerializer},
    )
    @action(detail=True, methods=["post"], permission_classes=[TokenScopes, permissions.IsAuthenticated])
    def resume(self, request, pk=None):
        require_perm(request, "management.view_trainingrun")
        require_perm(request, "management.change_dataset")
        run = training_run_resume(run=self.get_object())
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Make this version its dataset's current model (a rollback when it is older)",
        request=None,
        responses={200: TrainingRunSerializer},
    )
    @action(detail=True, methods=["post"], permission_classes=[TokenScopes, permissions.IsAuthenticated])
    def promote(self, request, pk=None):
        require_perm(request, "management.view_trainingrun")
        require_perm(request, "management.change_dataset")
        run = training_run_promote(run=self.get_object())
        return Response(TrainingRunSerializer(run).data)

    @extend_schema(
        summary="Download this version's model (.keras, or ?format=h5|savedmodel|tflite|onnx)",
        parameters=EXPORT_PARAMETERS,
        responses=EXPORT_RESPONSES,
    )
    @action(detail=True, methods=["get"], url_path="model", content_negotiation_class=ModelFileNegotiation)
    def model_file(self, request, pk=None):
        return model_download(request, self.get_object())

    @extend_schema(summary="This run's training log (text)", responses={200: OpenApiResponse(OpenApiTypes.STR)})
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        run = self.get_object()
        return file_download(run.log_file, content_type="text/plain; charset=utf-8")


class UserViewSet(viewsets.ModelViewSet):
    """Accounts, for administrators (superusers) only."""

    serializer_class = UserSerializer
    permission_classes = [TokenScopes, permissions.IsAuthenticated, IsSuperuser]
    filterset_fields = ["username", "is_active", "is_staff", "is_superuser"]

    def get_queryset(self):
        return get_user_model().objects.prefetch_related("groups").order_by("id")

    def perform_update(self, serializer):
        if serializer.instance == self.request.user:
            data = serializer.validated_data
            if data.get("is_superuser") is False or data.get("is_active") is False:
                raise Conflict("you cannot remove your own administrator rights or deactivate yourself", field="user")
        serializer.save()

    def perform_destroy(self, instance):
        if instance == self.request.user:
            raise Conflict("you cannot delete your own account", field="user")
        instance.delete()


def _predict_payload(request) -> tuple[dict, bool]:
    """The request's fields for PredictSerializer, and whether it asks for a batch."""
    data = request.data
    if not hasattr(data, "getlist"):
        return data, isinstance(data, dict) and "images" in data
    payload = {key: data.get(key) for key in ("dataset", "run") if key in data}
    images = data.getlist("images")
    single = data.getlist("image")
    if len(single) > 1:
        images = single + images
    elif single:
        payload["image"] = single[0]
    if images:
        payload["images"] = images
    return payload, bool(images)


@extend_schema(
    summary="Predict the label of one image or a batch",
    request={"application/json": PredictSerializer, "multipart/form-data": PredictMultipartSerializer},
    responses={
        200: PolymorphicProxySerializer(
            component_name="PredictResult",
            serializers=[PredictionSerializer, BatchPredictionSerializer],
            resource_type_field_name=None,
        )
    },
)
class PredictView(APIView):
    """POST an image (base64 in JSON, or a multipart file) or a batch of them, and a dataset id.

    `run` (a version of the dataset, see /api/trainingrun/?dataset=) predicts with that version
    instead of the dataset's current one.

    One `image` is answered with its prediction; `images` (a JSON list, or several multipart
    files) with `{"results": [...]}` in the order sent. Needs the `predict` scope with a token.
    """

    permission_classes = [permissions.IsAuthenticated, TokenScopes, CanPredict]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    required_scope = PREDICT

    def post(self, request):
        payload, batch = _predict_payload(request)
        serializer = PredictSerializer(data=payload)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # A version asked for by id is loaded beside the current model, not instead of it.
        current = "run" not in data
        if not current:
            run = prediction_version_run(run_id=data["run"], dataset_id=data.get("dataset"))
        else:
            run = prediction_current_run(dataset_id=data["dataset"])
        if not batch:
            name, data = serializer.validated_data["image"]
            return Response(prediction_predict(run=run, images=[(name, data)], current=current)[0].as_dict())
        images = [
            (f"images[{index}]" if name == "image" else name, data)
            for index, (name, data) in enumerate(serializer.validated_data["images"])
        ]
        predictions = prediction_predict(run=run, images=images, field_name="images", current=current)
        results = [{"name": name, **p.as_dict()} for (name, _), p in zip(images, predictions, strict=True)]
        return Response({"results": results})


@extend_schema(
    summary="Liveness and readiness",
    responses={
        200: inline_serializer("Health", {"status": serializers.CharField(), "database": serializers.CharField()}),
        503: OpenApiResponse(description="The database cannot be reached."),
    },
)
class HealthView(APIView):
    """Unauthenticated: 200 when the app runs and its database answers, else 503."""

    authentication_classes = []
    permission_classes = [permissions.AllowAny]

    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return Response({"status": "unavailable", "database": "unreachable"}, status=503)
        return Response({"status": "ok", "database": "ok"})


class FirstRenderer(BaseContentNegotiation):
    """Whatever the client accepts: the metrics are text, and an error is JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None


@extend_schema(exclude=True)
class MetricsView(APIView):
    """Prometheus metrics of all web workers (text format), for staff or a token with the `metrics` scope."""

    permission_classes = [CanReadMetrics]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRenderer

    def get(self, request):
        metrics.record_process(cached_models=len(model_cache))
        body, content_type = metrics.exposition()
        return HttpResponse(body, content_type=content_type)
