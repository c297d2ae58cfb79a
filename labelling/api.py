"""The labelling API: a dataset's suggested labels, accepting them, and labelling images in bulk (actions of
/api/dataset/ID/, mixed into datasets/api.py's DataSetViewSet)."""

from drf_spectacular.utils import (
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from api.parsers import JSONParser
from labelling.serializers import (
    ItemsLabelSerializer,
    SuggestionAcceptSerializer,
    SuggestionQuerySerializer,
    SuggestionSerializer,
)
from labelling.services import (
    dataset_items_label,
    suggestions_accept,
    suggestions_list,
    suggestions_progress,
)

# What the bulk labelling actions answer (one component in the schema, shared by both).
LABELLED = inline_serializer("Labelled", {"labelled": serializers.IntegerField()})


class DataSetLabellingActions:
    """/api/dataset/ID/suggestions/, suggestions/accept/ and label/: the dataset viewset's labelling actions."""

    @extend_schema(
        summary="The current model's suggested labels for the unlabelled images, least sure first",
        description="Paged. Least sure first by margin (top-1 minus top-2 probability) unless `ordering` says "
        "otherwise; `label` keeps those predicting it. Suggestions are computed by a job when images "
        "arrive or the model changes; `progress` says how many images are labelled and unlabelled.",
        parameters=[SuggestionQuerySerializer],
        responses={200: SuggestionSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def suggestions(self, request, pk=None):
        dataset = self.get_object()
        query = SuggestionQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = suggestions_list(
            dataset=dataset, label=query.validated_data.get("label") or None, ordering=query.validated_data["ordering"]
        )
        page = self.paginate_queryset(rows)
        response = self.get_paginated_response(SuggestionSerializer(page, many=True, context={"request": request}).data)
        response.data["progress"] = suggestions_progress(dataset=dataset)
        return response

    @extend_schema(
        summary="Accept suggestions: label images with their suggested labels",
        description="`ids` (the items), or `min_confidence` (every suggestion at least that confident).",
        request=SuggestionAcceptSerializer,
        responses={200: LABELLED},
    )
    @action(detail=True, methods=["post"], url_path="suggestions/accept", parser_classes=[JSONParser])
    def suggestions_accept(self, request, pk=None):
        dataset = self.get_object()
        body = SuggestionAcceptSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        labelled = suggestions_accept(dataset=dataset, ids=data.get("ids"), min_confidence=data.get("min_confidence"))
        return Response({"labelled": labelled})

    @extend_schema(
        summary="Give a list of the dataset's images one label",
        request=ItemsLabelSerializer,
        responses={200: LABELLED},
    )
    @action(detail=True, methods=["post"], parser_classes=[JSONParser])
    def label(self, request, pk=None):
        dataset = self.get_object()
        body = ItemsLabelSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        labelled = dataset_items_label(dataset=dataset, ids=data["ids"], label=data["label"])
        return Response({"labelled": labelled})
