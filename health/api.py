"""Dataset health through the API: start a check, poll it, read its report, act on its findings.

POST /api/dataset/{id}/health/ starts a check (202; 200 with the one already queued or running),
GET there reads the newest; GET /api/healthcheck/{id}/ polls one, POST .../cancel/ stops it.
Relabelling and deleting an image are the item endpoints' (PATCH or DELETE /api/datasetitem/{id}/);
keeping a finding and keeping one of a duplicate group are here.
"""

from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import TokenScopes, UseCasePermissions
from datasets.models import DataSet
from health import services as health
from health.models import HealthCheck, HealthDismissal
from management import permissions as rules
from management.errors import Conflict, NotFound


class HealthCheckSerializer(serializers.ModelSerializer):
    """A health check: its status and progress (0 to 1) and, once done, its report."""

    report = serializers.SerializerMethodField()
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = HealthCheck
        fields = [
            "id", "dataset", "status", "phase", "progress", "error", "created_by", "created_at", "started_at",
            "finished_at", "report",
        ]  # fmt: skip
        read_only_fields = fields

    def get_report(self, check) -> dict:
        """The findings still open: what was deleted, relabelled or kept since is left out."""
        return health.health_report_current(check=check)


ITEM_ID = {"min_value": 1, "max_value": 2**63 - 1}


class DismissSerializer(serializers.Serializer):
    items = serializers.ListField(child=serializers.IntegerField(**ITEM_ID), min_length=1, max_length=1000)
    kind = serializers.ChoiceField(choices=HealthDismissal.Kind.choices)


class KeepOneSerializer(serializers.Serializer):
    keep = serializers.IntegerField(help_text="The image to keep.", **ITEM_ID)
    items = serializers.ListField(
        child=serializers.IntegerField(**ITEM_ID),
        min_length=1,
        max_length=1000,
        help_text="The group: the others are deleted.",
    )


class HealthBase(APIView):
    permission_classes = [TokenScopes, UseCasePermissions]

    def dataset(self, pk) -> DataSet:
        return get_object_or_404(DataSet, pk=pk)


class DataSetHealthView(HealthBase):
    """A dataset's health: its newest check (GET), or a new one (POST)."""

    use_cases = {"GET": [rules.VIEW_HEALTH], "POST": [rules.CHECK_HEALTH]}

    @extend_schema(
        summary="The dataset's newest health check",
        responses={200: HealthCheckSerializer, 404: OpenApiResponse(description="Never checked.")},
    )
    def get(self, request, pk):
        check = health.health_check_latest(dataset=self.dataset(pk))
        if check is None:
            raise NotFound("this dataset has not been checked yet: POST here to check it", field="dataset")
        return Response(HealthCheckSerializer(check).data)

    @extend_schema(
        summary="Check the dataset's health in the background (label errors, duplicates, outliers, balance)",
        request=None,
        responses={
            202: HealthCheckSerializer,
            200: OpenApiResponse(HealthCheckSerializer, description="The check already queued or running."),
        },
    )
    def post(self, request, pk):
        check, created = health.health_check_start(dataset=self.dataset(pk), user=request.user)
        code = status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK
        return Response(HealthCheckSerializer(check).data, status=code)


class HealthCheckView(HealthBase):
    use_cases = {"GET": [rules.VIEW_HEALTH]}

    @extend_schema(summary="A health check: status, progress (0 to 1) and report", responses=HealthCheckSerializer)
    def get(self, request, pk):
        return Response(
            HealthCheckSerializer(
                get_object_or_404(HealthCheck.objects.filter(dataset__deleting=False).defer("label_quality"), pk=pk)
            ).data
        )


class HealthCheckCancelView(HealthBase):
    use_cases = {"POST": [rules.CHECK_HEALTH]}

    @extend_schema(summary="Cancel a queued or running health check", request=None, responses=HealthCheckSerializer)
    def post(self, request, pk):
        check = get_object_or_404(HealthCheck.objects.filter(dataset__deleting=False), pk=pk)
        if not health.health_check_cancel(check=check):
            raise Conflict(f"health check {check.pk} has already ended ({check.status})", field="check")
        return Response(HealthCheckSerializer(check).data)


class HealthDismissView(HealthBase):
    use_cases = {"POST": [rules.RELABEL]}

    @extend_schema(
        summary="Keep images as they are: this kind of finding about them is not listed again",
        request=DismissSerializer,
        responses={200: OpenApiResponse(description='{"kept": N}')},
    )
    def post(self, request, pk):
        dataset = self.dataset(pk)
        serializer = DismissSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        kept = health.health_dismiss(dataset=dataset, item_ids=data["items"], kind=data["kind"], user=request.user)
        return Response({"kept": kept})


class HealthKeepOneView(HealthBase):
    use_cases = {"POST": [rules.DELETE_IMAGES]}

    @extend_schema(
        summary="Of a group of duplicates, keep one image and delete the others",
        request=KeepOneSerializer,
        responses={200: OpenApiResponse(description='{"deleted": N}')},
    )
    def post(self, request, pk):
        dataset = self.dataset(pk)
        serializer = KeepOneSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        deleted = health.health_keep_one(dataset=dataset, keep=data["keep"], item_ids=data["items"])
        return Response({"deleted": deleted})
