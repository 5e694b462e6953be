"""API endpoints. Session or token authentication; every listing is looked up among the caller's
own, so another seller's listing or photo answers 404."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from catalog import selectors, services
from catalog.api.serializers import (
    CategoryChoiceSerializer,
    ClassifyResultSerializer,
    ErrorSerializer,
    ListingSerializer,
    ListingSuggestionsSerializer,
    PhotoSerializer,
    PhotoUploadSerializer,
    listing_suggestions_data,
)
from catalog.models import CategorySource, ClassificationStatus, Listing, ListingImage

# How often POST /api/classify looks at the photo's row while it waits for the worker.
CLASSIFY_POLL_INTERVAL_S = 0.05
CLASSIFY_TOP_K = 5


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

    def get_queryset(self) -> Any:
        return selectors.listings_of_seller(seller=self.request.user)

    def perform_create(self, serializer: ListingSerializer) -> None:
        data = serializer.validated_data
        with transaction.atomic():
            listing = services.listing_create(
                seller=self.request.user,
                title=data["title"],
                description=data.get("description", ""),
                price=data["price"],
            )
            if data.get("category"):
                services.listing_category_set(
                    listing=listing,
                    category=data["category"],
                    source=CategorySource.SELLER,
                    actor=self.request.user,
                )
        serializer.instance = self.get_queryset().get(pk=listing.pk)

    def perform_update(self, serializer: ListingSerializer) -> None:
        listing: Listing = serializer.instance
        data = serializer.validated_data
        with transaction.atomic():
            services.listing_update(
                listing=listing,
                title=data.get("title", listing.title),
                description=data.get("description", listing.description),
                price=data.get("price", listing.price),
            )
            if data.get("category"):
                services.listing_category_set(
                    listing=listing,
                    category=data["category"],
                    source=CategorySource.SELLER,
                    actor=self.request.user,
                )
        serializer.instance = self.get_queryset().get(pk=listing.pk)

    def perform_destroy(self, instance: Listing) -> None:
        services.listing_delete(listing=instance)

    @extend_schema(
        request={"multipart/form-data": PhotoUploadSerializer},
        responses={201: PhotoSerializer, 400: ErrorSerializer},
        summary="Upload one photo to the listing (classified in the background)",
    )
    @action(detail=True, methods=["post"], url_path="photos", parser_classes=[MultiPartParser, FormParser])
    def photos(self, request: Request, pk: str | None = None) -> Response:
        listing = self.get_object()
        upload = PhotoUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        try:
            image = services.listing_photo_upload(listing=listing, upload=file, filename=file.name or "photo")
        except services.UploadRejected as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(
            PhotoSerializer(image, context={"request": request}).data, status=status.HTTP_201_CREATED
        )

    @extend_schema(
        request=None,
        responses={204: None, 400: ErrorSerializer, 404: ErrorSerializer},
        summary="Remove one photo of the listing (not its last one)",
    )
    @action(detail=True, methods=["delete"], url_path=r"photos/(?P<photo_id>[0-9]+)")
    def photo_delete(self, request: Request, pk: str | None = None, photo_id: str | None = None) -> Response:
        listing = self.get_object()
        image = get_object_or_404(ListingImage, pk=photo_id, listing=listing)
        try:
            services.listing_image_delete(image=image)
        except services.ListingRuleBroken as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        responses=ListingSuggestionsSerializer,
        summary="Top-5 suggested categories of the listing, averaged over its classified photos",
    )
    @action(detail=True, methods=["get"])
    def suggestions(self, request: Request, pk: str | None = None) -> Response:
        listing = self.get_object()
        panel = selectors.listing_suggestions(listing=listing, top=CLASSIFY_TOP_K)
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
        services.listing_category_set(
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
        panel = selectors.listing_suggestions(listing=image.listing, top=CLASSIFY_TOP_K, raw=True)
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
    """POST one photo, get its top-5 categories.

    The photo is validated like a listing photo, stored in a new hidden listing of the caller
    (`Listing.is_probe`; never browsed or listed) and queued for the worker. The request then
    waits up to `CLASSIFY_API_WAIT_S` seconds: 200 with the top-5 when the worker answered in time,
    422 when classification failed, else 202 with `poll_url` (also in `Location`).
    """

    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        request={"multipart/form-data": PhotoUploadSerializer},
        responses={
            200: ClassifyResultSerializer,
            202: OpenApiResponse(ClassifyResultSerializer, description="not classified yet: poll `poll_url`"),
            400: ErrorSerializer,
            422: OpenApiResponse(ClassifyResultSerializer, description="classification failed"),
        },
        summary="Classify one photo: top-5 categories with confidences",
    )
    def post(self, request: Request) -> Response:
        upload = PhotoUploadSerializer(data=request.data)
        upload.is_valid(raise_exception=True)
        file = upload.validated_data["file"]
        try:
            image = services.classify_probe_create(
                user=request.user, upload=file, filename=file.name or "photo"
            )
        except services.UploadRejected as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        image = _wait_for_worker(image, timeout_s=settings.CLASSIFY_API_WAIT_S)
        return _classify_response(request, image)


class ClassifyResultView(APIView):
    """The state of a photo sent to POST /api/classify (only the caller's own)."""

    @extend_schema(
        responses={
            200: ClassifyResultSerializer,
            202: OpenApiResponse(ClassifyResultSerializer, description="not classified yet"),
            404: ErrorSerializer,
            422: OpenApiResponse(ClassifyResultSerializer, description="classification failed"),
        },
        summary="Result of a POST /api/classify that answered 202",
    )
    def get(self, request: Request, image_id: int) -> Response:
        image = selectors.probe_image_of_user(user=request.user, image_id=image_id)
        if image is None:
            return Response({"detail": "Not found."}, status=status.HTTP_404_NOT_FOUND)
        return _classify_response(request, image)


def _wait_for_worker(image: ListingImage, *, timeout_s: float) -> ListingImage:
    """Re-read the photo's row until the worker has answered (DONE/FAILED) or `timeout_s` passed."""
    deadline = time.monotonic() + max(0.0, timeout_s)
    finished = {ClassificationStatus.DONE, ClassificationStatus.FAILED}
    while True:
        image.refresh_from_db(fields=["status", "failure_reason"])
        if image.status in finished or time.monotonic() >= deadline:
            return image
        time.sleep(CLASSIFY_POLL_INTERVAL_S)
