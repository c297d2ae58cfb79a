"""The API's serializers of datasets, their items (base64 or multipart images) and their zip imports."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_extra_fields.fields import Base64ImageField
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from rest_framework import serializers

from api.serializers import NOT_BASE64, decode_base64_image
from datasets.models import DataSet, DataSetItem, ImportJob
from datasets.services import MAX_LABEL_LENGTH
from management import options
from management.options import PRETRAINED_ARCHITECTURES
from ml.backbones import DEFAULT_IMAGE_SIZE as DEFAULT_PRETRAINED_SIZE
from ml.backbones import MIN_IMAGE_SIZE as MIN_PRETRAINED_SIZE
from ml.backbones import check_image_size


class DataSetSerializer(serializers.ModelSerializer):
    item_count = serializers.IntegerField(read_only=True)
    status = serializers.SerializerMethodField(help_text="Status of the latest run, null if never trained.")
    progress = serializers.SerializerMethodField(help_text="Progress of the latest run, 0 to 100.")
    model_labels = serializers.SerializerMethodField(help_text="Labels of the current model, in output order.")

    class Meta:
        model = DataSet
        fields = [
            "id",
            "name",
            *options.DATASET_FIELDS,
            "item_count",
            "status",
            "progress",
            "model_labels",
            "current_run",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["current_run", "created_at", "updated_at"]
        extra_kwargs = {
            # A dataset read back and sent whole (GET, edit, PUT) carries null when it has no weights.
            "weights_file": {"allow_null": True},
            "process": {
                "trim_whitespace": False,
                "help_text": (
                    "Python that adds layers to `model` (a keras.Sequential); runs on the server, so setting "
                    "it needs the permission management.change_model_code. Others get the default code."
                ),
            },
        }

    def validate(self, attrs):
        instance = self.instance
        validation = attrs.get("validation_split", instance.validation_split if instance else 0.2)
        test = attrs.get("test_split", instance.test_split if instance else 0.0)
        default = DataSet._meta.get_field("architecture").default
        architecture = attrs.get("architecture", instance.architecture if instance else default)
        weights = attrs.get("weights_file", instance.weights_file if instance else None)
        if weights and architecture not in {"mobilenet_v3_small", "efficientnet_b0"}:
            raise serializers.ValidationError(
                {"weights_file": ["starting weights are for mobilenet_v3_small and efficientnet_b0 only"]}
            )
        if validation + test > 0.9:
            raise serializers.ValidationError(
                {"test_split": ["validation_split and test_split together may hold out at most 0.9 of the images"]}
            )
        self._pretrained_image_size(attrs, architecture)
        return attrs

    def _pretrained_image_size(self, attrs, architecture) -> None:
        """Pretrained starting points: 224 px unless a size is given; at least 96 px."""
        if architecture not in PRETRAINED_ARCHITECTURES:
            return
        instance = self.instance
        if "image_size" not in attrs and (instance is None or instance.image_size < MIN_PRETRAINED_SIZE):
            attrs["image_size"] = DEFAULT_PRETRAINED_SIZE
        try:
            check_image_size(attrs.get("image_size", instance.image_size if instance else DEFAULT_PRETRAINED_SIZE))
        except ValueError as error:
            raise serializers.ValidationError({"image_size": [str(error)]}) from None

    def get_status(self, obj) -> str | None:
        run = obj.latest_run
        return run.status if run else None

    def get_progress(self, obj) -> float:
        run = obj.latest_run
        return run.percent if run else 0

    def get_model_labels(self, obj) -> list[str]:
        return obj.current_run.labels if obj.current_run else []


class ItemImageField(Base64ImageField):
    """An image as base64 text (a data: URI prefix allowed) in JSON, or as a multipart file.

    drf-extra-fields recognises the type of base64 text; the dataset service then verifies the
    image once (size, pixel limit, a full decode) and names the stored file from the format it
    found, whatever name a multipart file came with. Read back, it is the URL of the (private) image.
    """

    ALLOWED_TYPES = ("jpeg", "jpg", "png", "gif", "webp", "bmp", "tif", "tiff")
    INVALID_FILE_MESSAGE = NOT_BASE64
    INVALID_TYPE_MESSAGE = "not an image of a known type (JPEG, PNG, GIF, WebP, BMP or TIFF)"

    def to_internal_value(self, data):
        if isinstance(data, UploadedFile):
            return data
        if not isinstance(data, str):
            raise serializers.ValidationError("expected base64 text or an uploaded file")
        decoded = decode_base64_image(data)
        name = self.get_file_name(decoded)
        try:
            extension = self.get_file_extension(name, decoded)
        except DjangoValidationError:
            extension = None
        if extension not in self.ALLOWED_TYPES:
            raise serializers.ValidationError(self.INVALID_TYPE_MESSAGE)
        return ContentFile(decoded)  # base64 text has no file name to keep


class ItemImageFieldSchema(OpenApiSerializerFieldExtension):
    """In the schema: base64 text going in (a file in the multipart form), a URL coming out."""

    target_class = ItemImageField

    def map_serializer_field(self, auto_schema, direction):
        if direction == "request":
            return build_basic_type(OpenApiTypes.BYTE)
        return build_basic_type(OpenApiTypes.URI)


class DataSetItemSerializer(serializers.ModelSerializer):
    dataset = serializers.PrimaryKeyRelatedField(queryset=DataSet.objects.all())
    label = serializers.CharField(
        max_length=MAX_LABEL_LENGTH,
        required=False,
        allow_blank=True,
        help_text="The image's label; left out or empty: unlabelled (not trained on; the model suggests one).",
    )
    image = ItemImageField(
        help_text="The image: base64 text in JSON (a data: URI is fine) or a file in multipart; read back as its URL."
    )
    thumbnail = serializers.SerializerMethodField(
        help_text="The URL of a small WebP of the image (at most 256 px on its longest side), for lists."
    )

    class Meta:
        model = DataSetItem
        fields = ["id", "dataset", "label", "image", "thumbnail", "original_name", "created_at"]
        read_only_fields = ["original_name", "created_at"]

    def get_thumbnail(self, obj) -> str | None:
        if not obj.image.name:
            return None
        request = self.context.get("request")
        return request.build_absolute_uri(obj.thumbnail_url) if request else obj.thumbnail_url


class DataSetItemMultipartSerializer(serializers.Serializer):
    """The multipart form of /api/datasetitem/ (documentation of the upload)."""

    dataset = serializers.IntegerField()
    label = serializers.CharField(max_length=MAX_LABEL_LENGTH, required=False, allow_blank=True)
    image = serializers.ImageField(help_text="The image file.")


class ZipUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A zip of images.")
    label = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=MAX_LABEL_LENGTH,
        help_text="Label for every image; empty to label each image by its top-level folder.",
    )
    unlabelled = serializers.BooleanField(
        required=False, default=False, help_text="true: import every image without a label (folders ignored)."
    )


class ImportReportSerializer(serializers.Serializer):
    added = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Images added per label.")
    skipped = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="Entries not imported: {name, reason}.",
    )


class ImportJobSerializer(serializers.ModelSerializer):
    """A zip being imported (a job): follow `url` until it has ended; `report` is what became of each file."""

    url = serializers.SerializerMethodField(help_text="This job: its status, phase, progress (0 to 1) and report.")
    report = serializers.JSONField(
        read_only=True,
        help_text="Once succeeded: added (a number), counts (images per label) and skipped (each entry's name "
        "and why).",
    )

    class Meta:
        model = ImportJob
        fields = [
            "id",
            "dataset",
            "original_name",
            "label",
            "unlabelled",
            "status",
            "phase",
            "progress",
            "report",
            "error",
            "url",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_url(self, obj) -> str:
        request = self.context.get("request")
        path = reverse("importjob-detail", args=[obj.pk])
        return request.build_absolute_uri(path) if request is not None else path
