"""GET /api/starting-points/: every starting point a dataset can pick, and for the pretrained ones
whether their weights are on this machine (so a client can tell before training)."""

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from api.permissions import TokenScopes
from management.ml.backbones import DEFAULT_IMAGE_SIZE
from management.ml.models import MIN_IMAGE_SIZE
from management.models import Architecture
from management.services.pretrained import backbone_statuses


class StartingPointSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The value of a dataset's `architecture`.")
    label = serializers.CharField()
    pretrained = serializers.BooleanField(help_text="Starts from ImageNet weights and trains a new head.")
    weights_present = serializers.BooleanField(
        allow_null=True,
        help_text="Pretrained only: whether its weights are on this machine (else `python manage.py weights`).",
    )
    min_image_size = serializers.IntegerField()
    default_image_size = serializers.IntegerField(allow_null=True, help_text="What a pretrained network expects.")


@extend_schema(
    summary="The starting points a dataset can train from", responses={200: StartingPointSerializer(many=True)}
)
class StartingPointsView(APIView):
    """The choices of a dataset's `architecture`, with the pretrained ones' weights status."""

    permission_classes = [permissions.IsAuthenticated, TokenScopes]

    def get(self, request):
        present = {status.name: status.cached for status in backbone_statuses()}
        rows = [
            {
                "name": value,
                "label": label,
                "pretrained": value in present,
                "weights_present": present.get(value),
                "min_image_size": MIN_IMAGE_SIZE[value],
                "default_image_size": DEFAULT_IMAGE_SIZE if value in present else None,
            }
            for value, label in Architecture.choices
        ]
        return Response(StartingPointSerializer(rows, many=True).data)
