"""The API's serializers of prediction (one image or a batch, with explanations), a model's metadata and
export jobs."""

from django.conf import settings
from django.urls import reverse
from rest_framework import serializers

from api.serializers import ImageField, StrictBooleanField
from serving.models import ExportJob


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
