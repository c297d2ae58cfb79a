"""API views: validate input, call one service, present the result."""

import contextlib
import os
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import SuspiciousFileOperation
from django.core.files.storage import default_storage
from django.db import DatabaseError, connection
from django.http import Http404, HttpResponse, JsonResponse
from django.utils._os import safe_join
from django.views import defaults
from django_filters.rest_framework import DjangoFilterBackend
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
from rest_framework.exceptions import NotAcceptable, NotAuthenticated
from rest_framework.filters import OrderingFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.routers import DefaultRouter
from rest_framework.settings import APISettings
from rest_framework.utils.formatting import markup_description
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from api.filters import DataSetItemFilter
from api.parsers import FormParser, JSONParser, MultiPartParser
from api.permissions import (
    PREDICT,
    CanPredict,
    CanReadMetrics,
    CanSetModelCode,
    CanViewDatasets,
    IsSuperuser,
    TokenScopes,
    UseCasePermissions,
)
from api.serializers import (
    BatchPredictionSerializer,
    ConfusionCellQuerySerializer,
    ConfusionCellSerializer,
    DataSetItemMultipartSerializer,
    DataSetItemSerializer,
    DataSetSerializer,
    ExplainedPredictionSerializer,
    ExportJobSerializer,
    ImportJobSerializer,
    ItemsLabelSerializer,
    ModelImportSerializer,
    ModelMetadataSerializer,
    PredictionSerializer,
    PredictMultipartSerializer,
    PredictSerializer,
    StartingPointSerializer,
    SuggestionAcceptSerializer,
    SuggestionQuerySerializer,
    SuggestionSerializer,
    TrainingRunDetailSerializer,
    TrainingRunSerializer,
    UserSerializer,
    ValidateModelSerializer,
    ValidationReportSerializer,
    ZipUploadSerializer,
)
from datasets.models import DataSet, DataSetItem
from datasets.services import (
    dataset_delete,
    dataset_import_request,
    dataset_item_create,
    dataset_item_thumbnail_make,
    dataset_item_update,
    dataset_items_delete,
    datasets_with_counts,
)
from jobs import lifecycle
from labelling.services import (
    dataset_items_label,
    suggestions_accept,
    suggestions_list,
    suggestions_progress,
)
from management import metrics
from management import permissions as rules
from management.errors import Conflict, NotFound, ServiceError
from management.files import media_response
from management.permissions import media_permissions
from serving.explanations import explanation_budget, explanation_for_image, explanation_run_item
from serving.exports import ExportFile, export_job_request
from serving.prediction import (
    model_cache,
    prediction_current_run,
    prediction_metadata,
    prediction_predict,
    prediction_run_for,
    prediction_version_run,
)
from training.compare import compare_ids_parse, runs_compare, runs_for_comparison
from training.evaluations import evaluation_confusion_cell_by_label
from training.models import TrainingRun
from training.pretrained import starting_points
from training.services import (
    dataset_model_validate,
    training_run_cancel,
    training_run_create,
    training_run_delete,
    training_run_resume,
)
from training.versions import training_run_import, training_run_promote

API_PREFIXES = ("/api/", "/o/")
FILE_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")
EXPORT_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        enum=["keras", "h5", "savedmodel", "tflite", "onnx"],
        description="keras (default), h5, savedmodel (a zip), tflite or onnx. Made and checked against the Keras "
        "model by a job the first request starts (202 with the job to follow), then kept and answered at once; "
        "422 when the check refused it.",
    ),
    OpenApiParameter("precision", str, enum=["float32", "float16"], description="float16 for tflite only."),
    OpenApiParameter(
        "bundle", bool, description="1: a zip of the model, labels.json and README.txt with a usage example."
    ),
]
EXPORT_RESPONSES = {
    200: FILE_RESPONSE,
    202: OpenApiResponse(
        response=ExportJobSerializer,
        description="Not made yet: the export job making it (Location: the job). Follow its `url` until it has "
        "succeeded, then ask again (`download`) for the file.",
    ),
    409: OpenApiResponse(description="The run has no model."),
    422: OpenApiResponse(description="The export failed its check against the Keras model; it is never served."),
}
MODEL_CODE_AND_CHANGE = "management.change_dataset and management.change_model_code"


def exception_handler(error, context):
    """DRF's handler, plus services' errors as 4xx JSON naming the field at fault."""
    if isinstance(error, ServiceError):
        retry_after = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after else None
        return Response(error.as_dict(), status=error.status, headers=headers)
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


def file_download(field, filename: str | None = None):
    if not field:
        raise NotFound("there is no such file", field="file")
    try:
        return media_response(field.name, filename=filename)
    except Http404:
        raise NotFound("the file is missing from storage", field="file") from None


# What the bulk labelling actions answer (one component in the schema, shared by both).
LABELLED = inline_serializer("Labelled", {"labelled": serializers.IntegerField()})


class ModelFileNegotiation(DefaultContentNegotiation):
    """On model downloads `?format=` names the model's file format, not DRF's response renderer."""

    settings = APISettings({"URL_FORMAT_OVERRIDE": None})


def model_download(request, run):
    """The run's model in the format the query asks for (?format=, ?precision=, ?bundle=1): the file when
    it is made, else 202 with the export job that makes it."""
    params = request.query_params
    result = export_job_request(
        run=run,
        format=params.get("format") or "keras",
        precision=params.get("precision") or "float32",
        bundle=params.get("bundle", "").lower() in {"1", "true", "yes"},
        user=request.user,
    )
    if not isinstance(result, ExportFile):
        body = ExportJobSerializer(result, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
    try:
        return media_response(result.name, filename=result.filename)
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
    permission_classes = [TokenScopes, UseCasePermissions, CanSetModelCode]
    # The use cases of the actions beyond create, read, update and delete (management/permissions.py).
    use_cases = {
        "upload": [rules.ADD_IMAGES],
        "train": [rules.TRAIN],
        "validate": [rules.EDIT_DATASET],
        "import_model": [rules.IMPORT],
        "model": [rules.VIEW_DATASETS, rules.EXPORT],
        "model_metadata": [rules.VIEW_DATASETS, rules.EXPORT],
        "suggestions": [rules.VIEW_IMAGES],
        "suggestions_accept": [rules.VIEW_IMAGES, rules.LABEL_IMAGES],
        "label": [rules.VIEW_IMAGES, rules.LABEL_IMAGES],
    }
    sends_model_code = {"create", "update", "partial_update", "validate"}

    def get_queryset(self):
        return datasets_with_counts(DataSet.objects.order_by("id"))

    def perform_create(self, serializer):
        serializer.save()
        serializer.instance.item_count = 0

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance)

    @extend_schema(
        summary="Import a zip of images (a job: 202 with the job to follow)",
        description="The zip is stored and imported by a job in its own process; follow the answer's `url` "
        "until its status is succeeded (its `report`: images added per label, entries skipped and why) or "
        "failed (its `error`). One import of a dataset at a time (409 while one is under way).",
        request={"multipart/form-data": ZipUploadSerializer},
        responses={202: ImportJobSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[MultiPartParser, FormParser])
    def upload(self, request, pk=None):
        dataset = self.get_object()
        serializer = ZipUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        job = dataset_import_request(
            dataset=dataset,
            file=serializer.validated_data["file"],
            label=serializer.validated_data.get("label") or None,
            unlabelled=serializer.validated_data["unlabelled"],
            user=request.user,
        )
        body = ImportJobSerializer(job, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})

    @extend_schema(
        summary="The current model's suggested labels for the unlabelled images, least sure first",
        description="Paged. Least sure first by margin (top-1 minus top-2 probability) unless `ordering` says "
        "otherwise; `label` keeps those predicting it. Suggestions are computed by a job when images "
        "arrive or the model changes; `progress` says how many images are labelled and unlabelled.",
        parameters=[SuggestionQuerySerializer],
        responses={200: SuggestionSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def suggestions(self, request, pk=None):
        dataset = self.get_object()
        query = SuggestionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = suggestions_list(
            dataset=dataset, label=query.validated_data.get("label") or None, ordering=query.validated_data["ordering"]
        )
        page = self.paginate_queryset(rows)
        response = self.get_paginated_response(SuggestionSerializer(page, many=True, context={"request": request}).data)
        response.data["progress"] = suggestions_progress(dataset=dataset)
        return response

    @extend_schema(
        summary="Accept suggestions: label images with their suggested labels",
        description="`ids` (the items), or `min_confidence` (every suggestion at least that confident).",
        request=SuggestionAcceptSerializer,
        responses={200: LABELLED},
    )
    @action(detail=True, methods=["post"], url_path="suggestions/accept", parser_classes=[JSONParser])
    def suggestions_accept(self, request, pk=None):
        dataset = self.get_object()
        body = SuggestionAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        labelled = suggestions_accept(dataset=dataset, ids=data.get("ids"), min_confidence=data.get("min_confidence"))
        return Response({"labelled": labelled})

    @extend_schema(
        summary="Give a list of the dataset's images one label",
        request=ItemsLabelSerializer,
        responses={200: LABELLED},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def label(self, request, pk=None):
        dataset = self.get_object()
        body = ItemsLabelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        labelled = dataset_items_label(dataset=dataset, ids=data["ids"], label=data["label"])
        return Response({"labelled": labelled})

    @extend_schema(summary="Queue a training run", request=None, responses={202: TrainingRunSerializer})
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def train(self, request, pk=None):
        run = training_run_create(dataset=self.get_object(), user=request.user)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Build the model without training it: its layers, or the error and its line",
        request=ValidateModelSerializer,
        responses={200: ValidationReportSerializer},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser, MultiPartParser, FormParser])
    def validate(self, request, pk=None):
        dataset = self.get_object()
        serializer = ValidateModelSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        report = dataset_model_validate(dataset=dataset, **serializer.validated_data)
        return Response(report.as_dict())

    @extend_schema(
        summary="Download the current model (.keras, or ?format=h5|savedmodel|tflite|onnx)",
        parameters=EXPORT_PARAMETERS,
        responses=EXPORT_RESPONSES,
    )
    @action(detail=True, methods=["get"], content_negotiation_class=ModelFileNegotiation)
    def model(self, request, pk=None):
        return model_download(request, prediction_run_for(dataset=self.get_object()))

    @extend_schema(
        summary="Import a trained .keras model and its labels as a new, current version",
        description=f"Needs {MODEL_CODE_AND_CHANGE}: a model file is close to code. Loaded with Keras' safe mode "
        "(Lambda layers refused) in a separate process; it must take the dataset's image size and colour mode "
        "and give one output per label.",
        request={"multipart/form-data": ModelImportSerializer},
        responses={201: TrainingRunSerializer},
    )
    @action(detail=True, methods=["post"], url_path="import_model", parser_classes=[MultiPartParser, FormParser])
    def import_model(self, request, pk=None):
        dataset = self.get_object()
        serializer = ModelImportSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = training_run_import(dataset=dataset, user=request.user, **serializer.validated_data)
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="What the current model takes and answers", responses={200: ModelMetadataSerializer})
    @action(detail=True, methods=["get"], url_path="model/metadata")
    def model_metadata(self, request, pk=None):
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
    """Images, labelled or not; filter with ?dataset=<id>, ?label=<label> and ?labelled=false (the unlabelled
    ones), sort with ?ordering=-id (newest first)."""

    serializer_class = DataSetItemSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    filter_backends = [DjangoFilterBackend, OrderingFilter]
    filterset_class = DataSetItemFilter
    ordering_fields = ["id", "label", "created_at"]

    def get_queryset(self):
        return DataSetItem.objects.order_by("id")

    def perform_create(self, serializer):
        data = serializer.validated_data
        image = data["image"]
        serializer.instance = dataset_item_create(
            dataset=data["dataset"],
            label=data.get("label", ""),
            file=image,
            name=getattr(image, "name", None) or "",
            user_id=self.request.user.pk,
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
    use_cases = {
        "cancel": [rules.TRAIN],
        "resume": [rules.TRAIN],
        "promote": [rules.PROMOTE],
        "compare": [rules.COMPARE],
        "explain": [rules.INSPECT_RUN],
        "confusion": [rules.INSPECT_RUN],
    }

    def get_queryset(self):
        runs = TrainingRun.objects.select_related("dataset").order_by("-id")
        # A list shows counts; the per-image data is read by one run's own answer only.
        return runs if self.action != "list" else runs.defer(*TrainingRun.HEAVY_FIELDS)

    def get_serializer_class(self):
        return TrainingRunDetailSerializer if self.action == "retrieve" else TrainingRunSerializer

    def perform_destroy(self, instance):
        training_run_delete(run=instance)

    @extend_schema(summary="Cancel a queued or running run", request=None, responses={200: TrainingRunSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = self.get_object()
        if not training_run_cancel(run=run):
            raise Conflict(f"run {run.pk} has already ended ({run.status})", field="run")
        return Response(TrainingRunSerializer(run).data)

    @extend_schema(
        summary="Resume a cancelled or interrupted run from its last completed epoch",
        request=None,
        responses={202: TrainingRunSerializer},
    )
    @action(detail=True, methods=["post"])
    def resume(self, request, pk=None):
        run = training_run_resume(run=self.get_object())
        return Response(TrainingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        summary="Make this version its dataset's current model (a rollback when it is older)",
        request=None,
        responses={200: TrainingRunSerializer},
    )
    @action(detail=True, methods=["post"])
    def promote(self, request, pk=None):
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

    @extend_schema(
        summary="Compare two or more runs of one dataset: options, code diff, curves, evaluation, flipped images",
        parameters=[
            OpenApiParameter(
                "ids",
                str,
                required=True,
                description="Run ids separated by commas; the first is "
                "the baseline every difference is measured from, e.g. 3,5.",
            ),
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    @action(detail=False, methods=["get"])
    def compare(self, request):
        ids = compare_ids_parse(values=request.query_params.getlist("ids"))
        show = rules.VIEW_DATASETS.allows(request.user)
        return Response(runs_compare(runs=runs_for_comparison(ids=ids), show_dataset=show))

    @extend_schema(
        summary="What the run's model looked at in one of its images: a heatmap PNG (made once, then kept)",
        responses={200: OpenApiResponse(OpenApiTypes.BINARY, description="The image with the heatmap over it.")},
    )
    @action(
        detail=True,
        methods=["get"],
        url_path=r"explain/(?P<item_id>[0-9]+)",
        content_negotiation_class=ModelFileNegotiation,
    )
    def explain(self, request, pk=None, item_id=None):
        relative = explanation_run_item(run=self.get_object(), item_id=int(item_id), user_id=request.user.pk)
        try:
            return media_response(relative)
        except Http404:
            raise NotFound("the heatmap is missing from storage", field="item") from None

    @extend_schema(
        summary="The images behind a cell of the run's confusion matrix, with the model's confidence",
        parameters=[ConfusionCellQuerySerializer],
        responses={200: ConfusionCellSerializer},
    )
    @action(detail=True, methods=["get"])
    def confusion(self, request, pk=None):
        query = ConfusionCellQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        cell = evaluation_confusion_cell_by_label(
            run=self.get_object(),
            split=query.validated_data["split"],
            true_label=query.validated_data["true"],
            predicted_label=query.validated_data["predicted"],
        )
        return Response(ConfusionCellSerializer(cell, context={"request": request}).data)

    @extend_schema(summary="This run's training log (text)", responses={200: OpenApiResponse(OpenApiTypes.STR)})
    @action(detail=True, methods=["get"])
    def log(self, request, pk=None):
        run = self.get_object()
        return file_download(run.log_file)


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    """A kind of job through the API: read it (status, phase, progress 0 to 1, error, result) and cancel it."""

    def get_queryset(self):
        return self.get_serializer_class().Meta.model.objects.order_by("-id")

    @extend_schema(summary="Cancel it: a queued job never starts; a running one stops and keeps nothing", request=None)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        lifecycle.job_cancel(kind=job.KIND, job_id=job.pk)
        job.refresh_from_db()
        return Response(self.get_serializer(job).data)


class ExportJobViewSet(JobViewSet):
    """Exports being made or made (jobs): status, phase, progress (0 to 1) and, when refused, why."""

    serializer_class = ExportJobSerializer
    filterset_fields = ["run", "status"]
    use_cases = {"list": [rules.EXPORT], "retrieve": [rules.EXPORT], "cancel": [rules.EXPORT]}


class ImportJobViewSet(JobViewSet):
    """Zip imports being made or made (jobs): status, progress (0 to 1) and the per-file report."""

    serializer_class = ImportJobSerializer
    filterset_fields = ["dataset", "status"]
    use_cases = {"list": [rules.ADD_IMAGES], "retrieve": [rules.ADD_IMAGES], "cancel": [rules.ADD_IMAGES]}


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


FORM_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _predict_payload(request) -> tuple[dict, bool]:
    """The request's fields for PredictSerializer, and whether it asks for a batch."""
    data = request.data
    if not hasattr(data, "getlist"):
        return data, isinstance(data, dict) and "images" in data
    payload = {key: data.get(key) for key in ("dataset", "run", "explain") if key in data}
    if "explain" in payload:  # a form's text; anything else stays text and is refused as not a boolean
        payload["explain"] = FORM_BOOLEANS.get(str(payload["explain"]).strip().lower(), payload["explain"])
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
            serializers=[PredictionSerializer, ExplainedPredictionSerializer, BatchPredictionSerializer],
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

    `"explain": true` (one image) adds `explanation`: a heatmap of what the model looked at, by
    occlusion (65 forward passes), counted against the explain rate as well as the predict rate.
    """

    permission_classes = [permissions.IsAuthenticated, TokenScopes, CanPredict]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    required_scope = PREDICT
    throttle_scope = "predict"

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
            name, image = serializer.validated_data["image"]
            # An explanation spends the explain rate and holds one of its slots from here to its end.
            budget = explanation_budget(user_id=request.user.pk) if data["explain"] else contextlib.nullcontext()
            with budget:
                prediction = prediction_predict(
                    run=run, images=[(name, image)], current=current, user_id=request.user.pk
                )[0]
                answer = prediction.as_dict()
                if data["explain"]:
                    explanation = explanation_for_image(
                        run=run, name=name, data=image, label=prediction.label, current=current
                    )
                    answer["explanation"] = explanation.as_dict()
            return Response(answer)
        images = [
            (f"images[{index}]" if name == "image" else name, data)
            for index, (name, data) in enumerate(serializer.validated_data["images"])
        ]
        predictions = prediction_predict(
            run=run, images=images, field_name="images", current=current, user_id=request.user.pk
        )
        results = [{"name": name, **p.as_dict()} for (name, _), p in zip(images, predictions, strict=True)]
        return Response({"results": results})


@extend_schema(
    summary="The starting points a dataset can train from", responses={200: StartingPointSerializer(many=True)}
)
class StartingPointsView(APIView):
    """The choices of a dataset's `architecture`, and whether the pretrained ones' weights are on this machine
    (so a client can tell before training)."""

    permission_classes = [permissions.IsAuthenticated, TokenScopes, CanViewDatasets]

    def get(self, request):
        return Response(StartingPointSerializer(starting_points(), many=True).data)


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
    throttle_classes = []  # load balancers and monitors probe it often

    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError:
            return Response({"status": "unavailable", "database": "unreachable"}, status=503)
        return Response({"status": "ok", "database": "ok"})


class MediaNegotiation(DefaultContentNegotiation):
    """A file answers in its own type whatever the client accepts; only errors are rendered (JSON)."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            return renderers[0], renderers[0].media_type


class CanViewMedia(permissions.BasePermission):
    """A media file needs the view permission of what its folder holds: the same rule as the admin's."""

    message = "you may not see this file"

    def has_permission(self, request, view):
        needed = media_permissions(PurePosixPath(view.kwargs.get("path", "")).as_posix())
        return needed is not None and request.user.has_perms(needed)


@extend_schema(exclude=True)
class MediaView(APIView):
    """Private media (the `image` URLs of items, models, logs) for a session, a bearer token with the
    `read` scope or Basic authentication; a browser with none of them is sent to the login page."""

    permission_classes = [TokenScopes, permissions.IsAuthenticated, CanViewMedia]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = MediaNegotiation
    # Not counted against the API's request rate: an admin page shows dozens of thumbnails at once.
    throttle_classes = []

    def get(self, request, path):
        try:
            full_path = Path(safe_join(settings.MEDIA_ROOT, path))
        except SuspiciousFileOperation:  # ../ and absolute names
            raise Http404 from None
        relative = Path(os.path.relpath(full_path, os.path.abspath(settings.MEDIA_ROOT))).as_posix()
        if not default_storage.exists(relative):
            # A thumbnail is made on its first request when its image came before thumbnails did.
            dataset_item_thumbnail_make(name=relative)
        return media_response(relative)

    def handle_exception(self, exc):
        request = self.request
        browser = "text/html" in request.META.get("HTTP_ACCEPT", "")
        if isinstance(exc, NotAuthenticated) and browser and "HTTP_AUTHORIZATION" not in request.META:
            return redirect_to_login(request.get_full_path())
        return super().handle_exception(exc)


@extend_schema(exclude=True)
class MetricsView(APIView):
    """Prometheus metrics of all web workers (text format), for staff or a token with the `metrics` scope."""

    permission_classes = [CanReadMetrics]
    renderer_classes = [JSONRenderer]
    # Text whatever the client accepts (Prometheus asks for OpenMetrics first); an error is JSON.
    content_negotiation_class = MediaNegotiation
    # Counted apart from the API's requests (KERASUI_THROTTLE_METRICS): a scraper sharing an account
    # with a busy API client is not refused for the client's requests.
    throttle_scope = "metrics"

    def get(self, request):
        metrics.record_process(cached_models=len(model_cache))
        body, content_type = metrics.exposition()
        return HttpResponse(body, content_type=content_type)


class ApiRootView(DefaultRouter.APIRootView):
    """Datasets of labelled images, their training runs and predictions: the links below list each resource.

    The API docs (/api/docs/) describe every endpoint and let you try it from the browser. Authenticate
    with an OAuth2 token from /o/token/ (scopes read, write, predict), a session, or Basic authentication.
    """

    name = "KerasUI API"
    # Besides the router's viewsets: the API's other top-level resources, by URL name (api/urls.py). A
    # dataset's and a run's own actions (predict, model, model/metadata, health, export…) are in the docs.
    more = {
        "test": "predict",
        "starting-points": "starting-points",
        "health": "health",
        "schema": "schema",
        "docs": "docs",
    }

    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        for key, url_name in self.more.items():
            response.data[key] = reverse(url_name, request=request, format=kwargs.get("format"))
        return response

    def get_view_description(self, html=False):
        # The docstring's paragraphs, each on one line (its line breaks are the source's, not the reader's).
        text = "\n\n".join(" ".join(part.split()) for part in (self.__doc__ or "").split("\n\n"))
        return markup_description(text) if html else text
