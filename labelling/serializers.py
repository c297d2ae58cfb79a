"""The API's serializers of suggested labels and of labelling images in bulk."""

from rest_framework import serializers

from datasets.services import MAX_LABEL_LENGTH


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
