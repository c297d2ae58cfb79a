"""Serializers: translate between JSON and the models; no business logic."""

import base64
import binascii
import re

from django.core.files.uploadedfile import UploadedFile
from rest_framework import serializers

from management.models import DataSet, TrainingRun

DATA_URI_PREFIX = re.compile(r"^data:[^,]*?;base64,", re.IGNORECASE)


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
            "process",
            "epochs",
            "batch_size",
            "image_size",
            "color_mode",
            "validation_split",
            "verbose",
            "item_count",
            "status",
            "progress",
            "model_labels",
            "current_run",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["current_run", "created_at", "updated_at"]

    def get_status(self, obj):
        run = obj.latest_run
        return run.status if run else None

    def get_progress(self, obj):
        run = obj.latest_run
        return run.progress if run else 0

    def get_model_labels(self, obj):
        return obj.current_run.labels if obj.current_run else []


class TrainingRunSerializer(serializers.ModelSerializer):
    accuracy = serializers.FloatField(read_only=True)

    class Meta:
        model = TrainingRun
        fields = [
            "id",
            "dataset",
            "status",
            "progress",
            "epoch",
            "epochs",
            "batch_size",
            "image_size",
            "color_mode",
            "validation_split",
            "labels",
            "seed",
            "history",
            "metrics",
            "accuracy",
            "error",
            "worker",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class ZipUploadSerializer(serializers.Serializer):
    file = serializers.FileField(help_text="A zip of images.")
    label = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        help_text="Label for every image; empty to label each image by its top-level folder.",
    )


class ImageField(serializers.Field):
    """An image as a multipart file or as base64 text (a data: URI prefix allowed); gives (name, bytes)."""

    default_error_messages = {
        "invalid_base64": "not valid base64: send the image's bytes encoded as base64, or upload a file",
        "invalid_type": "expected a base64 string or an uploaded file",
        "empty": "the image is empty",
    }

    def to_internal_value(self, data):
        if isinstance(data, UploadedFile):
            return data.name or "image", data.read()
        if not isinstance(data, str):
            self.fail("invalid_type")
        text = DATA_URI_PREFIX.sub("", data.strip(), count=1)
        text = "".join(text.split())
        if not text:
            self.fail("empty")
        try:
            return "image", base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            self.fail("invalid_base64")

    def to_representation(self, value):
        return None


class PredictSerializer(serializers.Serializer):
    dataset = serializers.PrimaryKeyRelatedField(queryset=DataSet.objects.select_related("current_run"))
    image = ImageField()
