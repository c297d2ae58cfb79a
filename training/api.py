"""The training API: runs (cancel, resume, promote, compare, explain, confusion cells, log, model) and the
pretrained starting points."""

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    extend_schema,
)
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import (
    CanViewDatasets,
    TokenScopes,
)
from api.views import file_download
from management import permissions as rules
from management.errors import Conflict, NotFound
from management.files import media_response
from serving.api import EXPORT_PARAMETERS, EXPORT_RESPONSES, ModelFileNegotiation, model_download
from serving.explanations import explanation_run_item
from training.compare import compare_ids_parse, runs_compare, runs_for_comparison
from training.evaluations import evaluation_confusion_cell_by_label
from training.models import TrainingRun
from training.pretrained import starting_points
from training.serializers import (
    ConfusionCellQuerySerializer,
    ConfusionCellSerializer,
    StartingPointSerializer,
    TrainingRunDetailSerializer,
    TrainingRunSerializer,
)
from training.services import (
    training_run_cancel,
    training_run_delete,
    training_run_resume,
)
from training.versions import training_run_promote


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
        runs = TrainingRun.objects.filter(dataset__deleting=False).select_related("dataset").order_by("-id")
        # A list shows counts; the per-image data is read by one run's own answer only.
        if self.action == "retrieve":
            return runs.select_related("per_image")
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


@extend_schema(
    summary="The starting points a dataset can train from", responses={200: StartingPointSerializer(many=True)}
)
class StartingPointsView(APIView):
    """The choices of a dataset's `architecture`, and whether the pretrained ones' weights are on this machine
    (so a client can tell before training)."""

    permission_classes = [permissions.IsAuthenticated, TokenScopes, CanViewDatasets]

    def get(self, request):
        return Response(StartingPointSerializer(starting_points(), many=True).data)
