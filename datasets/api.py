"""The datasets API: datasets (zip upload, training, model code validation, the current model), their items
and their zip import jobs."""

from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import (
    extend_schema,
    extend_schema_view,
)
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.filters import OrderingFilter
from rest_framework.response import Response

from api.filters import DataSetItemFilter
from api.parsers import FormParser, JSONParser, MultiPartParser
from api.permissions import (
    CanSetModelCode,
    TokenScopes,
    UseCasePermissions,
)
from api.views import JobViewSet
from datasets.models import DataSet, DataSetItem
from datasets.serializers import (
    DataSetItemMultipartSerializer,
    DataSetItemSerializer,
    DataSetSerializer,
    ImportJobSerializer,
    ZipUploadSerializer,
)
from datasets.services import (
    dataset_delete,
    dataset_import_request,
    dataset_item_create,
    dataset_item_update,
    dataset_items_delete,
    datasets_with_counts,
)
from labelling.api import DataSetLabellingActions
from management import permissions as rules
from serving.api import EXPORT_PARAMETERS, EXPORT_RESPONSES, ModelFileNegotiation, model_download
from serving.prediction import (
    prediction_metadata,
    prediction_run_for,
)
from serving.serializers import (
    ModelMetadataSerializer,
)
from training.serializers import (
    ModelImportSerializer,
    TrainingRunSerializer,
    ValidateModelSerializer,
    ValidationReportSerializer,
)
from training.services import (
    dataset_model_validate,
    training_run_create,
)
from training.versions import training_run_import

MODEL_CODE_AND_CHANGE = "management.change_dataset and management.change_model_code"


@extend_schema_view(
    list=extend_schema(summary="List datasets"),
    create=extend_schema(summary="Create a dataset"),
)
class DataSetViewSet(DataSetLabellingActions, viewsets.ModelViewSet):
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
        return datasets_with_counts(DataSet.objects.order_by("id"), label_counts=False)

    def perform_create(self, serializer):
        serializer.save()
        serializer.instance.item_count = 0

    @extend_schema(
        summary="Delete a dataset (204: gone at once; its images and files are deleted by a job)",
        description="Constant work whatever its size: from this answer on the dataset is gone from every "
        'list and answer and its name can be used again; a job of kind "deletion" deletes its images, '
        "runs and files in the background. 409 while one of its runs is queued or training.",
        responses={204: None},
    )
    def destroy(self, request, *args, **kwargs):
        return super().destroy(request, *args, **kwargs)

    def perform_destroy(self, instance):
        dataset_delete(dataset=instance, user=self.request.user)

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
        return DataSetItem.objects.filter(dataset__deleting=False).order_by("id")

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


class ImportJobViewSet(JobViewSet):
    """Zip imports being made or made (jobs): status, progress (0 to 1) and the per-file report."""

    serializer_class = ImportJobSerializer
    filterset_fields = ["dataset", "status"]
    use_cases = {"list": [rules.ADD_IMAGES], "retrieve": [rules.ADD_IMAGES], "cancel": [rules.ADD_IMAGES]}
