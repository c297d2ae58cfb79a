"""The serving API: prediction (/api/test/), model downloads in any export format (the file, or 202 with the
export job that makes it) and the export jobs."""

import contextlib

from django.http import Http404
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    OpenApiTypes,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import permissions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response
from rest_framework.settings import APISettings
from rest_framework.views import APIView

from api.parsers import FormParser, JSONParser, MultiPartParser
from api.permissions import (
    PREDICT,
    CanPredict,
    TokenScopes,
)
from api.views import JobViewSet
from management import permissions as rules
from management.errors import NotFound
from management.files import media_response
from serving.explanations import explanation_budget, explanation_for_image
from serving.exports import ExportFile, export_job_request
from serving.prediction import (
    prediction_current_run,
    prediction_predict,
    prediction_version_run,
)
from serving.serializers import (
    BatchPredictionSerializer,
    ExplainedPredictionSerializer,
    ExportJobSerializer,
    PredictionSerializer,
    PredictMultipartSerializer,
    PredictSerializer,
)

FILE_RESPONSE = OpenApiResponse(OpenApiTypes.BINARY, description="The file, as an attachment.")
EXPORT_PARAMETERS = [
    OpenApiParameter(
        "format",
        str,
        enum=["keras", "h5", "savedmodel", "tflite", "onnx"],
        description="keras (default), h5, savedmodel (a zip), tflite or onnx. Made and checked against the Keras "
        "model by a job the first request starts (202 with the job to follow), then kept and answered at once; "
        "422 when the check refused it.",
    ),
    OpenApiParameter("precision", str, enum=["float32", "float16"], description="float16 for tflite only."),
    OpenApiParameter(
        "bundle", bool, description="1: a zip of the model, labels.json and README.txt with a usage example."
    ),
]


EXPORT_RESPONSES = {
    200: FILE_RESPONSE,
    202: OpenApiResponse(
        response=ExportJobSerializer,
        description="Not made yet: the export job making it (Location: the job). Follow its `url` until it has "
        "succeeded, then ask again (`download`) for the file.",
    ),
    409: OpenApiResponse(description="The run has no model."),
    422: OpenApiResponse(description="The export failed its check against the Keras model; it is never served."),
}


class ModelFileNegotiation(DefaultContentNegotiation):
    """On model downloads `?format=` names the model's file format, not DRF's response renderer."""

    settings = APISettings({"URL_FORMAT_OVERRIDE": None})


def model_download(request, run):
    """The run's model in the format the query asks for (?format=, ?precision=, ?bundle=1): the file when
    it is made, else 202 with the export job that makes it."""
    params = request.query_params
    result = export_job_request(
        run=run,
        format=params.get("format") or "keras",
        precision=params.get("precision") or "float32",
        bundle=params.get("bundle", "").lower() in {"1", "true", "yes"},
        user=request.user,
    )
    if not isinstance(result, ExportFile):
        body = ExportJobSerializer(result, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})
    try:
        return media_response(result.name, filename=result.filename)
    except Http404:
        raise NotFound("the file is missing from storage", field="file") from None


class ExportJobViewSet(JobViewSet):
    """Exports being made or made (jobs): status, phase, progress (0 to 1) and, when refused, why."""

    serializer_class = ExportJobSerializer
    filterset_fields = ["run", "status"]
    use_cases = {"list": [rules.EXPORT], "retrieve": [rules.EXPORT], "cancel": [rules.EXPORT]}


FORM_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


def _predict_payload(request) -> tuple[dict, bool]:
    """The request's fields for PredictSerializer, and whether it asks for a batch."""
    data = request.data
    if not hasattr(data, "getlist"):
        return data, isinstance(data, dict) and "images" in data
    payload = {key: data.get(key) for key in ("dataset", "run", "explain") if key in data}
    if "explain" in payload:  # a form's text; anything else stays text and is refused as not a boolean
        payload["explain"] = FORM_BOOLEANS.get(str(payload["explain"]).strip().lower(), payload["explain"])
    images = data.getlist("images")
    single = data.getlist("image")
    if len(single) > 1:
        images = single + images
    elif single:
        payload["image"] = single[0]
    if images:
        payload["images"] = images
    return payload, bool(images)


@extend_schema(
    summary="Predict the label of one image or a batch",
    request={"application/json": PredictSerializer, "multipart/form-data": PredictMultipartSerializer},
    responses={
        200: PolymorphicProxySerializer(
            component_name="PredictResult",
            serializers=[PredictionSerializer, ExplainedPredictionSerializer, BatchPredictionSerializer],
            resource_type_field_name=None,
        )
    },
)
class PredictView(APIView):
    """POST an image (base64 in JSON, or a multipart file) or a batch of them, and a dataset id.

    `run` (a version of the dataset, see /api/trainingrun/?dataset=) predicts with that version
    instead of the dataset's current one.

    One `image` is answered with its prediction; `images` (a JSON list, or several multipart
    files) with `{"results": [...]}` in the order sent. Needs the `predict` scope with a token.

    `"explain": true` (one image) adds `explanation`: a heatmap of what the model looked at, by
    occlusion (65 forward passes), counted against the explain rate as well as the predict rate.
    """

    permission_classes = [permissions.IsAuthenticated, TokenScopes, CanPredict]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    required_scope = PREDICT
    throttle_scope = "predict"

    def post(self, request):
        payload, batch = _predict_payload(request)
        serializer = PredictSerializer(data=payload)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # A version asked for by id is loaded beside the current model, not instead of it.
        current = "run" not in data
        if not current:
            run = prediction_version_run(run_id=data["run"], dataset_id=data.get("dataset"))
        else:
            run = prediction_current_run(dataset_id=data["dataset"])
        if not batch:
            name, image = serializer.validated_data["image"]
            # An explanation spends the explain rate and holds one of its slots from here to its end.
            budget = explanation_budget(user_id=request.user.pk) if data["explain"] else contextlib.nullcontext()
            with budget:
                prediction = prediction_predict(
                    run=run, images=[(name, image)], current=current, user_id=request.user.pk
                )[0]
                answer = prediction.as_dict()
                if data["explain"]:
                    explanation = explanation_for_image(
                        run=run, name=name, data=image, label=prediction.label, current=current
                    )
                    answer["explanation"] = explanation.as_dict()
            return Response(answer)
        images = [
            (f"images[{index}]" if name == "image" else name, data)
            for index, (name, data) in enumerate(serializer.validated_data["images"])
        ]
        predictions = prediction_predict(
            run=run, images=images, field_name="images", current=current, user_id=request.user.pk
        )
        results = [{"name": name, **p.as_dict()} for (name, _), p in zip(images, predictions, strict=True)]
        return Response({"results": results})
