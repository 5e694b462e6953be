"""API endpoints. Session or token authentication; every listing is looked up among the caller's
own, so another seller's listing or photo answers 404."""

from __future__ import annotations

import threading
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from drf_standardized_errors.openapi_serializers import ErrorResponse404Serializer, ErrorResponse429Serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ErrorDetail, NotFound, Throttled
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog.api.errors import Conflict
from catalog.api.serializers import (
    CategoryChoiceSerializer,
    ClassifyResultSerializer,
    ErrorResponse409Serializer,
    ListingSerializer,
    ListingSuggestionsSerializer,
    PhotoSerializer,
    PhotoUploadSerializer,
    listing_suggestions_data,
)
from catalog.models import CategorySource, ClassificationStatus, Listing, ListingImage
from catalog.selectors import catalogue as catalogue_selectors
from catalog.selectors import suggestions as suggestions_selectors
from catalog.services.decisions import listing_category_set
from catalog.services.images import (
    ListingRuleBroken,
    classify_probe_create,
    listing_image_delete,
    listing_photo_upload,
)
from catalog.services.listings import listing_create, listing_delete, listing_update
from catalog.services.retention import ProbeLimitReached
from catalog.uploads import UploadRejected

# How often POST /api/classify looks at the photo's row while it waits for the worker: every
# 50 ms at first (p95 upload to suggestion is ~165 ms, docs/BENCHMARKS.md), then less often.
CLASSIFY_POLL_INTERVAL_S = 0.05
CLASSIFY_POLL_INTERVAL_MAX_S = 0.25
CLASSIFY_TOP_K = 5


def _file_rejected(error: UploadRejected) -> serializers.ValidationError:
    """A refused photo as a validation error of the `file` field (code `invalid`, documented)."""
    return serializers.ValidationError({"file": [ErrorDetail(str(error), code="invalid")]})


class ListingViewSet(
    mixins.ListModelMixin,
    mixins.CreateModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """The caller's listings: list, create, read, update, delete; photos, suggestions, category."""

    serializer_class = ListingSerializer
    # Set per action (photo uploads: "uploads"); ScopedThrottle reads it.
    throttle_scope: str | None = None

    def get_queryset(self) -> Any:
        return catalogue_selectors.listings_of_seller(seller=self.request.user)

    def perform_create(self, serializer: ListingSerializer) -> None:
        data = serializer.validated_data
        with transaction.atomic():
            listing = listing_create(
                seller=self.request.user,
                title=data["title"],
                description=data.get("description", ""),
                price=data["price"],
            )
            self._seller_category_set(listing, data)
        serializer.instance = self.get_queryset().get(pk=listing.pk)

    def perform_update(self, serializer: ListingSerializer) -> None:
        listing: Listing = serializer.instance
        data = serializer.validated_data
        with transaction.atomic():
            listing_update(
                listing=listing,
                title=data.get("title", listing.title),
                description=data.get("description", listing.description),
                price=data.get("price", listing.price),
            )
            self._seller_category_set(listing, data)
        serializer.instance = self.get_queryset().get(pk=listing.pk)

    def _seller_category_set(self, listing: Listing, data: dict[str, Any]) -> None:
        """The category the seller sent, if any, as the seller's own choice."""
        if data.get("category"):
            listing_category_set(
                listing=listing,
                category=data["category"],
                source=CategorySource.SELLER,
                actor=self.request.user,
            )

    def perform_destroy(self, instance: Listing) -> None:
        listing_delete(listing=instance)

    @extend_schema(
        request=PhotoUploadSerializer,
        responses={201: PhotoSerializer},
        summary="Upload one photo to the listing (classified in the background)",
    )
    @action(
        detail=True,
        methods=["post"],
        url_path="photos",
        parser_classes=[MultiPartParser],
        throttle_scope="uploads",
    )
    def photos(self, request: Request, pk: str | None = None) -> Response:
        listing = self.get_object()
        upload = PhotoUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        try:
            image = listing_photo_upload(listing=listing, upload=file, filename=file.name or "photo")
        except UploadRejected as error:
            raise _file_rejected(error) from error
        return Response(
            PhotoSerializer(image, context={"request": request}).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=None,
        responses={
            204: None,
            409: OpenApiResponse(ErrorResponse409Serializer, description="the listing's only photo"),
        },
        summary="Remove one photo of the listing (not its last one)",
    )
    @action(detail=True, methods=["delete"], url_path=r"photos/(?P<photo_id>[0-9]+)")
    def photo_delete(self, request: Request, pk: str | None = None, photo_id: str | None = None) -> Response:
        listing = self.get_object()
        image = get_object_or_404(ListingImage, pk=photo_id, listing=listing)
        try:
            listing_image_delete(image=image)
        except ListingRuleBroken as error:
            raise Conflict(str(error)) from error
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        responses=ListingSuggestionsSerializer,
        summary="Top-5 suggested categories of the listing, averaged over its classified photos",
    )
    @action(detail=True, methods=["get"])
    def suggestions(self, request: Request, pk: str | None = None) -> Response:
        listing = self.get_object()
        panel = suggestions_selectors.listing_suggestions(listing=listing, top=CLASSIFY_TOP_K)
        return Response(listing_suggestions_data(panel))

    @extend_schema(
        request=CategoryChoiceSerializer,
        responses=ListingSerializer,
        summary="Set the listing's category (e.g. accept a suggestion); recorded as the seller's choice",
    )
    @action(detail=True, methods=["post"])
    def category(self, request: Request, pk: str | None = None) -> Response:
        listing = self.get_object()
        choice = CategoryChoiceSerializer(data=request.data)
        choice.is_valid(raise_exception=True)
        listing_category_set(
            listing=listing,
            category=choice.validated_data["category"],
            source=CategorySource.SELLER,
            actor=request.user,
        )
        return Response(
            ListingSerializer(self.get_queryset().get(pk=listing.pk), context={"request": request}).data
        )


def _classify_result(request: Request, image: ListingImage) -> dict[str, Any]:
    poll_url = request.build_absolute_uri(reverse("api:classify-result", kwargs={"image_id": image.pk}))
    data: dict[str, Any] = {
        "image_id": image.pk,
        "status": image.status,
        "categories": [],
        "failure_reason": image.failure_reason,
        "model_version": "",
        "poll_url": poll_url,
    }
    if image.status == ClassificationStatus.DONE:
        # The model's own top-k for one photo, as documented: not the seller's offer.
        panel = suggestions_selectors.listing_suggestions(listing=image.listing, top=CLASSIFY_TOP_K, raw=True)
        data["categories"] = listing_suggestions_data(panel)["categories"]
        data["model_version"] = panel.model_version
    return data


def _classify_response(request: Request, image: ListingImage) -> Response:
    data = _classify_result(request, image)
    if image.status in (ClassificationStatus.PENDING, ClassificationStatus.QUEUED):
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": data["poll_url"]})
    if image.status == ClassificationStatus.FAILED:
        return Response(data, status=status.HTTP_422_UNPROCESSABLE_ENTITY)
    return Response(data)


class ClassifyView(APIView):
    """POST one photo, get its top-5 categories, or a URL to poll for them.

    The photo is validated like a listing photo and queued for classification. The answer is
    usually 202 with `poll_url` (also in `Location`): GET it until it answers 200 with the top-5
    or 422 with the reason. Some servers wait a moment (CLASSIFY_API_WAIT_S) and answer 200 or
    422 at once. Results stay available for CLASSIFY_PROBE_RETENTION_S; a caller may have at most
    CLASSIFY_PROBES_PER_USER photos waiting.
    """

    # How it works: the photo is stored in a new hidden listing of the caller (`Listing.is_probe`,
    # never browsed or listed). Only a web process that serves requests on threads waits, and only
    # while one of its `_WaitingPlaces` is free, so callers can never park every web worker.

    # A file travels in multipart/form-data only.
    parser_classes = [MultiPartParser]
    throttle_scope = "classify"

    @extend_schema(
        request=PhotoUploadSerializer,
        responses={
            200: OpenApiResponse(ClassifyResultSerializer, description="classified within the short wait"),
            202: OpenApiResponse(
                ClassifyResultSerializer,
                description="queued: GET `poll_url` (also in `Location`) until it answers 200 or 422",
            ),
            422: OpenApiResponse(ClassifyResultSerializer, description="classification failed"),
            429: OpenApiResponse(
                ErrorResponse429Serializer,
                description="throttled, or too many of the caller's photos still waiting",
            ),
        },
        parameters=[
            OpenApiParameter(
                "Location",
                str,
                location=OpenApiParameter.HEADER,
                response=[202],
                description="the URL to poll (same as `poll_url`)",
            )
        ],
        summary="Classify one photo: top-5 categories with confidences, or 202 and a URL to poll",
    )
    def post(self, request: Request) -> Response:
        upload = PhotoUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        try:
            image = classify_probe_create(user=request.user, upload=file, filename=file.name or "photo")
        except UploadRejected as error:
            raise _file_rejected(error) from error
        except ProbeLimitReached as error:
            raise Throttled(detail=str(error)) from error
        if request.META.get("wsgi.multithread") and _waiting_places.take():
            try:
                image = _wait_for_worker(image, timeout_s=settings.CLASSIFY_API_WAIT_S)
            finally:
                _waiting_places.give_back()
        return _classify_response(request, image)


class ClassifyResultView(APIView):
    """The state of a photo sent to POST /api/classify (only the caller's own), until its probe
    is deleted (CLASSIFY_PROBE_RETENTION_S). Poll it every second or so after a 202."""

    @extend_schema(
        responses={
            200: OpenApiResponse(ClassifyResultSerializer, description="classified: the top-5"),
            202: OpenApiResponse(ClassifyResultSerializer, description="not classified yet: poll again"),
            404: OpenApiResponse(
                ErrorResponse404Serializer, description="not the caller's, or deleted after retention"
            ),
            422: OpenApiResponse(ClassifyResultSerializer, description="classification failed"),
        },
        summary="Poll the result of a POST /api/classify that answered 202",
    )
    def get(self, request: Request, image_id: int) -> Response:
        image = catalogue_selectors.probe_image_of_user(user=request.user, image_id=image_id)
        if image is None:
            raise NotFound
        return _classify_response(request, image)


class _WaitingPlaces:
    """At most settings.CLASSIFY_API_WAITERS requests of this process wait for the worker at once;
    the process's other threads stay free for every other page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._taken = 0

    def take(self) -> bool:
        """Take a place if one is free (never blocks); True when taken."""
        with self._lock:
            if self._taken >= settings.CLASSIFY_API_WAITERS or settings.CLASSIFY_API_WAIT_S <= 0:
                return False
            self._taken += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self._taken -= 1


_waiting_places = _WaitingPlaces()


def _wait_for_worker(image: ListingImage, *, timeout_s: float) -> ListingImage:
    """Re-read the photo's row until the worker has answered (DONE/FAILED) or `timeout_s` passed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    finished = {ClassificationStatus.DONE, ClassificationStatus.FAILED}
    interval = CLASSIFY_POLL_INTERVAL_S
    while True:
        image.refresh_from_db(fields=["status", "failure_reason"])
        if image.status in finished or time.monotonic() >= deadline:
            return image
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        interval = min(CLASSIFY_POLL_INTERVAL_MAX_S, interval * 1.5)
