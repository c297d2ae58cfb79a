"""Serializers every part of the API shares: base64 images, strict booleans, accounts. Each domain's are in
its own package (datasets/, training/, serving/, labelling/serializers.py); none holds business logic."""

import base64
import binascii
import re

from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

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
