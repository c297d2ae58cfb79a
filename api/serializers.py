"""Serializers: translate between JSON and the models; no business logic."""

import base64
import binascii
import re

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.urls import reverse
from drf_extra_fields.fields import Base64ImageField
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_basic_type
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from datasets.models import DataSet, DataSetItem, ImportJob
from datasets.services import MAX_LABEL_LENGTH
from management import options
from management.options import PRETRAINED_ARCHITECTURES, Architecture, ColorMode
from ml.backbones import DEFAULT_IMAGE_SIZE as DEFAULT_PRETRAINED_SIZE
from ml.backbones import MIN_IMAGE_SIZE as MIN_PRETRAINED_SIZE
from ml.backbones import check_image_size
from serving.models import ExportJob
from training.models import TrainingRun

DATA_URI_PREFIX = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)
NOT_BASE64 = "not valid base64: send the image's bytes encoded as base64, or upload a file"


def decode_base64_image(text: str) -> bytes:
    """Base64 text (a data: URI prefix, whitespace and missing padding allowed) to bytes, or a 400."""
    text = "".join(DATA_URI_PREFIX.sub("", text.strip(), count=1).split())
    if not text:
        raise serializers.ValidationError("the image is empty")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise serializers.ValidationError(NOT_BASE64) from None


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


class TrainingRunSerializer(serializers.ModelSerializer):
    progress = serializers.FloatField(source="percent", read_only=True, help_text="0 to 100.")
    accuracy = serializers.FloatField(read_only=True, allow_null=True)
    is_current = serializers.BooleanField(
        read_only=True, help_text="This version is the one its dataset predicts with (POST …/promote/ to change)."
    )
    resumable = serializers.BooleanField(read_only=True, help_text="Cancelled or interrupted: POST …/resume/.")

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "dataset",
            "status",
            "phase",
            "progress",
            "epoch",
            *options.RUN_FIELDS,
            "augmentation",
            "labels",
            "split_counts",
            "unlabelled_count",
            "history",
            "metrics",
            "accuracy",
            "is_current",
            "promotion",
            "imported",
            "exports",
            "serving_engine",
            "serving_note",
            "error",
            "interrupted",
            "resumable",
            "worker",
            "heartbeat_at",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class TrainingRunDetailSerializer(TrainingRunSerializer):
    """A run with its evaluation and the item ids of each of its splits (a list leaves them out)."""

    class Meta(TrainingRunSerializer.Meta):
        fields = [*TrainingRunSerializer.Meta.fields, "evaluation", "splits"]
        read_only_fields = fields


class ConfusionCellQuerySerializer(serializers.Serializer):
    """Which cell of a run's confusion matrix: the split and the two labels."""

    split = serializers.CharField(help_text="validation, test, or training (when nothing was held out).")
    true = serializers.CharField(help_text="The images' true label (the matrix's row).")
    predicted = serializers.CharField(help_text="The label the model gave them (the matrix's column).")


class CellImageSerializer(serializers.Serializer):
    item = serializers.IntegerField(source="item_id", help_text="The dataset item's id.")
    image = serializers.SerializerMethodField(help_text="The image's URL; null once the item is deleted.")
    label = serializers.SerializerMethodField(help_text="The item's label now (it may have been fixed since).")
    confidence = serializers.FloatField(help_text="The model's probability of the predicted label.")

    def get_image(self, cell_image) -> str | None:
        if cell_image.item is None:
            return None
        request = self.context.get("request")
        url = cell_image.item.image.url
        return request.build_absolute_uri(url) if request else url

    def get_label(self, cell_image) -> str | None:
        return cell_image.item.label if cell_image.item is not None else None


class ConfusionCellSerializer(serializers.Serializer):
    split = serializers.CharField()
    true = serializers.CharField(source="true_label")
    predicted = serializers.CharField(source="predicted_label")
    count = serializers.IntegerField(help_text="The cell's number in the confusion matrix.")
    images = CellImageSerializer(many=True, help_text="The images behind it, the most confident first.")


class ModelImportSerializer(serializers.Serializer):
    """A trained .keras model and its labels, as a new version of a dataset."""

    file = serializers.FileField(help_text="The model, saved with model.save('name.keras'); loaded in safe mode.")
    labels = serializers.CharField(
        help_text='The labels in the model\'s output order: a JSON list (["cat", "dog"]) or "cat,dog".'
    )


class ValidateModelSerializer(serializers.Serializer):
    """Options to validate instead of the saved ones; leave out to validate the dataset as saved."""

    process = serializers.CharField(required=False, trim_whitespace=False, allow_blank=True)
    architecture = serializers.ChoiceField(choices=Architecture.choices, required=False)
    image_size = serializers.IntegerField(required=False, min_value=8, max_value=1024)
    color_mode = serializers.ChoiceField(choices=ColorMode.choices, required=False)


class ValidationReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    summary = serializers.CharField(help_text="Keras' model summary.")
    layers = serializers.ListField(child=serializers.DictField(), help_text="name, type, output_shape, params")
    total_params = serializers.IntegerField()
    trainable_params = serializers.IntegerField()
    error = serializers.CharField(help_text="Why the model could not be built, empty when ok.")
    line = serializers.IntegerField(allow_null=True, help_text="The model code line that caused the error.")
    seconds = serializers.FloatField()


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


class ModelMetadataSerializer(serializers.Serializer):
    dataset = serializers.IntegerField()
    run = serializers.IntegerField(help_text="The training run that made the model.")
    labels = serializers.ListField(child=serializers.CharField(), help_text="Labels in the model's output order.")
    image_size = serializers.IntegerField(help_text="Images are resized to this many pixels square.")
    color_mode = serializers.CharField(help_text="grayscale or rgb.")
    input_shape = serializers.ListField(child=serializers.IntegerField(), help_text="height, width, channels")
    input_dtype = serializers.CharField()
    metrics = serializers.DictField(help_text="The run's final metrics.")
    accuracy = serializers.FloatField(allow_null=True)
    trained_at = serializers.DateTimeField(allow_null=True)
    engine = serializers.CharField(
        help_text="What serves it: onnxruntime (its ONNX export, proven against Keras) or keras (the fallback)."
    )
    engine_note = serializers.CharField(help_text="Why that engine: the export's proof, or why it was refused.")


class ImportReportSerializer(serializers.Serializer):
    added = serializers.IntegerField()
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Images added per label.")
    skipped = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField()),
        help_text="Entries not imported: {name, reason}.",
    )


@extend_schema_field(OpenApiTypes.BYTE)
class ImageField(serializers.Field):
    """An image as a multipart file or as base64 text (a data: URI prefix allowed); gives (name, bytes).

    Prediction keeps the bytes in memory and decodes them once, in the shared preprocessing.
    """

    default_error_messages = {"invalid_type": "expected a base64 string or an uploaded file"}

    def to_internal_value(self, data):
        if isinstance(data, UploadedFile):
            return data.name or "image", data.read()
        if not isinstance(data, str):
            self.fail("invalid_type")
        return "image", decode_base64_image(data)

    def to_representation(self, value):
        return None


class StrictBooleanField(serializers.BooleanField):
    """A JSON boolean, nothing else: "yes", 1 or "true" in JSON are refused (a form's text is turned
    into a boolean before, by the view that reads the form)."""

    default_error_messages = {"invalid": "must be true or false (a JSON boolean), not {input!r}"}

    def to_internal_value(self, data):
        if isinstance(data, bool):
            return data
        self.fail("invalid", input=data)


class PredictSerializer(serializers.Serializer):
    """One image (`image`) or a batch (`images`), and the dataset whose model answers."""

    dataset = serializers.IntegerField(
        min_value=1, required=False, help_text="The dataset whose current model answers (or give `run`)."
    )
    run = serializers.IntegerField(
        min_value=1, required=False, help_text="Predict with this version (a succeeded run) instead of the current."
    )
    image = ImageField(required=False, help_text="One image: base64 in JSON, or a file in multipart.")
    images = serializers.ListField(
        child=ImageField(),
        required=False,
        min_length=1,
        help_text="A batch of images, answered as {results: [...]} in the same order.",
    )
    explain = StrictBooleanField(
        required=False,
        default=False,
        help_text="true: add `explanation`, a heatmap (PNG, base64) of what the model looked at (one `image` only; "
        "65 forward passes, counted against the explain rate too). JSON: true or false only; a multipart "
        "form: true, false, 1 or 0.",
    )

    def validate_images(self, images):
        limit = settings.KERASUI_MAX_BATCH_IMAGES
        if len(images) > limit:
            raise serializers.ValidationError(f"{len(images)} images sent; at most {limit} per request")
        return images

    def validate(self, attrs):
        if "dataset" not in attrs and "run" not in attrs:
            raise serializers.ValidationError({"dataset": ["give the dataset (its current model answers) or a run"]})
        if ("image" in attrs) == ("images" in attrs):
            raise serializers.ValidationError({"image": ["send either 'image' (one image) or 'images' (a list)"]})
        if attrs.get("explain") and "images" in attrs:
            raise serializers.ValidationError({"explain": ["explain one image: send 'image', not 'images'"]})
        return attrs


class PredictMultipartSerializer(serializers.Serializer):
    """The multipart form of /api/test/ (documentation of the upload; parsed by PredictSerializer)."""

    dataset = serializers.IntegerField(required=False)
    run = serializers.IntegerField(required=False, help_text="Predict with this version instead of the current.")
    image = serializers.FileField(required=False, help_text="One image file.")
    images = serializers.ListField(
        child=serializers.FileField(), required=False, help_text="Several image files: the field repeated."
    )
    explain = serializers.BooleanField(required=False, help_text="true: add a heatmap of what the model looked at.")


class PredictionSerializer(serializers.Serializer):
    result = serializers.CharField(
        help_text='The most probable label, or "unknown" when its confidence is below the dataset\'s unknown_below.'
    )
    label = serializers.CharField(help_text="The most probable label, even when the answer is unknown.")
    confidence = serializers.FloatField(help_text="Its (calibrated) probability, 0 to 1.")
    unknown = serializers.BooleanField(help_text="Whether the confidence is below the dataset's unknown_below.")
    unknown_below = serializers.FloatField(help_text="The dataset's threshold (0: always answer).")
    top = serializers.ListField(child=serializers.DictField(), help_text="The three most probable labels.")
    probabilities = serializers.DictField(child=serializers.FloatField(), help_text="Every label's probability.")
    run = serializers.IntegerField(help_text="The training run whose model answered.")


class ExplanationSerializer(serializers.Serializer):
    png_base64 = serializers.CharField(help_text="The image with a heatmap over it, a PNG in base64.")
    method = serializers.CharField(help_text="occlusion: the drop of the label's probability when a part is hidden.")
    label = serializers.CharField(help_text="The label explained (the predicted one).")


class ExplainedPredictionSerializer(PredictionSerializer):
    explanation = ExplanationSerializer(help_text="With `explain: true`: what the model looked at.")


class BatchPredictionItemSerializer(PredictionSerializer):
    name = serializers.CharField(help_text="The file name, or images[i] for base64.")


class BatchPredictionSerializer(serializers.Serializer):
    results = BatchPredictionItemSerializer(many=True)


class UserSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True, required=False, style={"input_type": "password"}, help_text="Set a new password."
    )
    groups = serializers.SlugRelatedField(slug_field="name", many=True, queryset=Group.objects.all(), required=False)

    class Meta:
        model = get_user_model()
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "is_staff",
            "is_superuser",
            "groups",
            "password",
            "last_login",
            "date_joined",
        ]
        read_only_fields = ["last_login", "date_joined"]

    def validate_password(self, value):
        password_validation.validate_password(value, self.instance)
        return value

    def create(self, validated_data):
        password = validated_data.pop("password", None)
        groups = validated_data.pop("groups", [])
        user = get_user_model()(**validated_data)
        if password:
            user.set_password(password)
        else:
            user.set_unusable_password()
        user.save()
        user.groups.set(groups)
        return user

    def update(self, instance, validated_data):
        password = validated_data.pop("password", None)
        user = super().update(instance, validated_data)
        if password:
            user.set_password(password)
            user.save(update_fields=["password"])
        return user


class ExportJobSerializer(serializers.ModelSerializer):
    """An export being made (a job): follow `url` until it succeeds, then GET `download` for the file."""

    url = serializers.SerializerMethodField(help_text="This job: its status, phase and progress (0 to 1).")
    download = serializers.SerializerMethodField(help_text="Where the file is answered (200) once it is made.")

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "run",
            "format",
            "precision",
            "bundle",
            "status",
            "phase",
            "progress",
            "error",
            "url",
            "download",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def _absolute(self, path: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request is not None else path

    def get_url(self, obj) -> str:
        return self._absolute(reverse("exportjob-detail", args=[obj.pk]))

    def get_download(self, obj) -> str:
        query = f"?format={obj.format}&precision={obj.precision}" + ("&bundle=1" if obj.bundle else "")
        return self._absolute(reverse("trainingrun-model-file", args=[obj.run_id]) + query)


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


class SuggestionSerializer(serializers.Serializer):
    """The current model's suggestion for one unlabelled image."""

    id = serializers.IntegerField(source="item_id", help_text="The item (image) id.")
    label = serializers.CharField(help_text="The predicted label.")
    confidence = serializers.FloatField(help_text="The predicted label's probability.")
    margin = serializers.FloatField(help_text="Top-1 minus top-2 probability: the smaller, the less sure.")
    top = serializers.ListField(
        child=serializers.ListField(), help_text="The most probable labels, most probable first: [[label, p], …]."
    )
    run = serializers.IntegerField(source="run_id", help_text="The version that predicted it.")
    image = serializers.SerializerMethodField(help_text="The image's URL.")
    thumbnail = serializers.SerializerMethodField(help_text="Its thumbnail's URL.")

    def _url(self, url: str) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request else url

    def get_image(self, obj) -> str:
        return self._url(obj.item.image.url)

    def get_thumbnail(self, obj) -> str:
        return self._url(obj.item.thumbnail_url)


class SuggestionQuerySerializer(serializers.Serializer):
    label = serializers.CharField(required=False, allow_blank=True, help_text="Only those predicting this label.")
    ordering = serializers.ChoiceField(
        choices=["margin", "-margin", "confidence", "-confidence"],
        required=False,
        default="margin",
        help_text="margin (default): least sure first; -confidence: most confident first.",
    )


class SuggestionAcceptSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(), required=False, max_length=1000, help_text="The items to accept."
    )
    min_confidence = serializers.FloatField(
        required=False, min_value=0.0, max_value=1.0, help_text="Or: every suggestion at least this confident."
    )

    def validate(self, data):
        if ("ids" in data) == ("min_confidence" in data):
            raise serializers.ValidationError({"ids": "give either ids or min_confidence"})
        return data


class ItemsLabelSerializer(serializers.Serializer):
    ids = serializers.ListField(
        child=serializers.IntegerField(), min_length=1, max_length=1000, help_text="The items to label."
    )
    label = serializers.CharField(max_length=MAX_LABEL_LENGTH, help_text="Their label.")
