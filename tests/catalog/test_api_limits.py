"""Abuse limits of the API and the login: expiring and revocable tokens, throttles per user and
per address, login lockout, and the probe listings of POST /api/classify. (The request body cap:
test_middleware.py.)"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from knox.models import AuthToken
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from catalog.api import views as api_views
from catalog.api.tokens import TOO_MANY_TOKENS
from catalog.models import ClassificationStatus, Listing, ListingImage
from catalog.services.images import image_add
from catalog.services.retention import (
    TOO_MANY_PROBES_WAITING,
    api_tokens_delete_expired,
    classify_probes_delete_expired,
)
from catalog.views.accounts import LOGIN_LOCKED_OUT
from tests import photo_bytes as pb
from tests.api_errors import api_error
from tests.conftest import stored_name
from tests.factories import ListingFactory, UserFactory

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"


def photo() -> SimpleUploadedFile:
    return SimpleUploadedFile("a.jpg", pb.jpeg_bytes(), content_type="image/jpeg")


def token_client(user: User) -> APIClient:
    client = APIClient()
    _, token = AuthToken.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def rates(settings: Settings) -> Callable[..., None]:
    """Set some throttle rates for one test: rates(classify="2/minute")."""

    def set_rates(**scopes: str) -> None:
        framework = dict(settings.REST_FRAMEWORK)
        framework["DEFAULT_THROTTLE_RATES"] = {**framework["DEFAULT_THROTTLE_RATES"], **scopes}
        settings.REST_FRAMEWORK = framework

    return set_rates


# --- tokens ---------------------------------------------------------------------------------------


def test_a_token_works_until_it_is_revoked_or_expires() -> None:
    # given a token obtained with a username and password
    user = UserFactory.create(username="tok")
    obtained = APIClient().post("/api/token", {"username": "tok", "password": PASSWORD}).json()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {obtained['token']}")

    # then it works, and expires API_TOKEN_TTL_S (a day) after it was issued
    assert client.get("/api/listings/").status_code == 200
    expiry = AuthToken.objects.get(user=user).expiry
    assert timedelta(hours=23, minutes=59) < expiry - timezone.now() <= timedelta(hours=24)

    # when it is revoked, it no longer works
    assert client.post("/api/token/revoke").status_code == 204
    assert client.get("/api/listings/").status_code == 401

    # given another token past its expiry, it does not work either
    other = token_client(user)
    AuthToken.objects.filter(user=user).update(expiry=timezone.now() - timedelta(seconds=1))
    assert other.get("/api/listings/").status_code == 401


def test_revoke_all_ends_every_token_of_the_caller_only() -> None:
    # given two tokens of one user and one of another
    user, stranger = UserFactory.create(), UserFactory.create()
    first, second, theirs = token_client(user), token_client(user), token_client(stranger)

    # when one of the user's tokens revokes them all
    assert first.post("/api/token/revoke-all").status_code == 204

    # then both of the user's stop working, and the stranger's still works
    assert [c.get("/api/listings/").status_code for c in (first, second, theirs)] == [401, 401, 200]


def test_a_user_holds_a_bounded_number_of_tokens(settings: Settings) -> None:
    # given at most two unexpired tokens per user, and a user holding two and an expired one
    settings.API_TOKENS_PER_USER = 2
    user = UserFactory.create(username="many")
    token_client(user), token_client(user)
    expired, _ = AuthToken.objects.create(user=user, expiry=timedelta(seconds=-1))

    # when they ask for a third
    response = APIClient().post("/api/token", {"username": "many", "password": PASSWORD})

    # then it is refused with the reason, until one is revoked
    assert (response.status_code, response.json()) == (
        403,
        api_error("permission_denied", TOO_MANY_TOKENS.format(limit=2)),
    )
    assert AuthToken.objects.filter(user=user).count() == 3
    # and the sweep deletes only the expired one
    assert api_tokens_delete_expired() == 1
    assert not AuthToken.objects.filter(pk=expired.pk).exists()
    assert AuthToken.objects.filter(user=user).count() == 2


# --- throttles ------------------------------------------------------------------------------------


def test_the_token_endpoint_is_throttled_per_address(rates: Callable[..., None]) -> None:
    # given three token requests a minute per address
    rates(token="3/minute")
    UserFactory.create(username="tok")
    client = APIClient()
    wrong = {"username": "tok", "password": "guess"}

    # when one address sends four, and another address one
    statuses = [client.post("/api/token", wrong).status_code for _ in range(4)]
    throttled = client.post("/api/token", {"username": "tok", "password": PASSWORD})
    elsewhere = client.post("/api/token", {"username": "tok", "password": PASSWORD}, REMOTE_ADDR="10.0.0.9")

    # then the fourth and later are refused with a time to wait, and the other address is not
    assert statuses == [400, 400, 400, 429]
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert elsewhere.status_code == 200


def test_classify_is_throttled_per_user(rates: Callable[..., None], settings: Settings) -> None:
    # given two classifications a minute per user
    rates(classify="2/minute")
    first, second = token_client(UserFactory.create()), token_client(UserFactory.create())

    # when one user sends three photos and another one
    statuses = [
        first.post("/api/classify", {"file": photo()}, format="multipart").status_code for _ in range(3)
    ]
    other = second.post("/api/classify", {"file": photo()}, format="multipart")

    # then the third is refused and stored nothing; the other user is not affected
    assert statuses == [202, 202, 429]
    assert other.status_code == 202
    assert ListingImage.objects.count() == 3


def test_photo_uploads_are_throttled_and_other_endpoints_are_not(rates: Callable[..., None]) -> None:
    # given one photo upload a minute per user
    rates(uploads="1/minute")
    user = UserFactory.create()
    client = token_client(user)
    listing = ListingFactory.create(seller=user)
    url = f"/api/listings/{listing.pk}/photos/"

    # when they upload twice, then read their listing
    uploads = [client.post(url, {"file": photo()}, format="multipart").status_code for _ in range(2)]
    read = client.get(f"/api/listings/{listing.pk}/")

    # then the second upload is refused, and reading is not
    assert uploads == [201, 429]
    assert read.status_code == 200
    assert listing.images.count() == 1


def test_every_endpoint_has_a_per_user_and_an_anonymous_rate(rates: Callable[..., None]) -> None:
    # given three requests a minute per user and two per anonymous address
    rates(user="3/minute", anon="2/minute")
    client = token_client(UserFactory.create())
    anonymous = APIClient()

    # when each sends one more than that (anonymous callers reach only the open endpoints)
    user_statuses = [client.get("/api/listings/").status_code for _ in range(4)]
    anonymous_statuses = [anonymous.get("/api/token").status_code for _ in range(3)]

    # then the last of each is refused
    assert user_statuses == [200, 200, 200, 429]
    assert anonymous_statuses == [405, 405, 429]


def test_a_forged_forwarded_for_header_does_not_escape_the_throttle(
    rates: Callable[..., None], settings: Settings
) -> None:
    # given two anonymous requests a minute per address, and no proxy in front (the default)
    rates(anon="2/minute")
    client = APIClient()

    # when a client names a new address in X-Forwarded-For each time
    direct = [client.get("/api/token", HTTP_X_FORWARDED_FOR=f"10.1.0.{n}").status_code for n in range(3)]

    # then the header is ignored: the third is refused
    assert direct == [405, 405, 429]

    # given one trusted proxy, the address it appended is the client
    framework = dict(settings.REST_FRAMEWORK)
    settings.REST_FRAMEWORK = {**framework, "NUM_PROXIES": 1}
    behind_proxy = [
        client.get("/api/token", HTTP_X_FORWARDED_FOR=f"forged, 10.2.0.{n}").status_code for n in range(3)
    ]
    assert behind_proxy == [405, 405, 405]


def test_throttles_fail_open_when_the_cache_is_down(rates: Callable[..., None], settings: Settings) -> None:
    # given a cache nobody listens on (Redis down) and tight rates
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:9/0"},
    }
    rates(user="1/minute", uploads="1/minute")
    user = UserFactory.create()
    client = token_client(user)
    listing = ListingFactory.create(seller=user)

    # when the user reads and uploads twice
    reads = [client.get("/api/listings/").status_code for _ in range(2)]
    uploads = [
        client.post(f"/api/listings/{listing.pk}/photos/", {"file": photo()}, format="multipart").status_code
        for _ in range(2)
    ]

    # then everything goes through: an upload never fails for want of a counter
    assert (reads, uploads) == ([200, 200], [201, 201])


# --- login lockout (django-axes) -------------------------------------------------------------------


def _cooloff_minutes(settings: Settings) -> int:
    return max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))


def test_repeated_wrong_passwords_lock_that_username_from_that_address(
    client: Client, settings: Settings
) -> None:
    # given a seller, and five wrong passwords for them from one address
    UserFactory.create(username="sam")
    UserFactory.create(username="kim")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": "sam", "password": "guess"})

    # when the right password is sent from there, and from elsewhere, and another user logs in
    locked = client.post("/accounts/login/", {"username": "sam", "password": PASSWORD})
    elsewhere = Client(REMOTE_ADDR="10.0.0.7").post(
        "/accounts/login/", {"username": "sam", "password": PASSWORD}
    )
    other_user = Client().post("/accounts/login/", {"username": "kim", "password": PASSWORD})

    # then only that username from that address is refused, with the wait
    assert locked.status_code == 429
    assert LOGIN_LOCKED_OUT.format(minutes=_cooloff_minutes(settings)) in locked.content.decode()
    assert "_auth_user_id" not in client.session
    assert (elsewhere.status_code, other_user.status_code) == (302, 302)


def test_the_token_endpoint_shares_the_login_lockout(settings: Settings) -> None:
    # given five wrong passwords sent to POST /api/token
    UserFactory.create(username="tok")
    client = APIClient()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/api/token", {"username": "tok", "password": "guess"})

    # when the right one follows
    response = client.post("/api/token", {"username": "tok", "password": PASSWORD})

    # then no token is issued: 429 with the reason, as JSON
    assert (response.status_code, response.json()) == (
        429,
        api_error("throttled", LOGIN_LOCKED_OUT.format(minutes=_cooloff_minutes(settings))),
    )
    assert not AuthToken.objects.exists()


# --- POST /api/classify: waiting, probe cap and retention ------------------------------------------


def test_classify_waits_only_on_a_threaded_server_with_a_free_place(
    monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    # given a wait of 2 s and one waiting place per process
    settings.CLASSIFY_API_WAIT_S = 2.0
    settings.CLASSIFY_API_WAITERS = 1
    waits: list[float] = []

    def wait(image: ListingImage, *, timeout_s: float) -> ListingImage:
        waits.append(timeout_s)
        return image

    monkeypatch.setattr(api_views, "_wait_for_worker", wait)
    client = token_client(UserFactory.create())

    # when posted to a single-threaded worker, to a threaded one, and with the place taken
    single = client.post("/api/classify", {"file": photo()}, format="multipart")
    threaded = client.post(
        "/api/classify", {"file": photo()}, format="multipart", **{"wsgi.multithread": True}
    )
    assert api_views._waiting_places.take()
    try:
        full = client.post(
            "/api/classify", {"file": photo()}, format="multipart", **{"wsgi.multithread": True}
        )
    finally:
        api_views._waiting_places.give_back()

    # then only the threaded request with a free place waited; every one answered 202 to poll
    assert waits == [2.0]
    assert [r.status_code for r in (single, threaded, full)] == [202, 202, 202]


def test_probes_are_capped_per_user_and_finished_ones_make_room(
    settings: Settings, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    # given at most two probes per user, and a user with two photos waiting
    settings.CLASSIFY_PROBES_PER_USER = 2
    user = UserFactory.create()
    client = token_client(user)
    first, second = (
        client.post("/api/classify", {"file": photo()}, format="multipart").json() for _ in range(2)
    )

    # when they send a third, it is refused and nothing is stored
    refused = client.post("/api/classify", {"file": photo()}, format="multipart")
    assert (refused.status_code, refused.json()) == (
        429,
        api_error("throttled", TOO_MANY_PROBES_WAITING.format(limit=2)),
    )
    assert Listing.objects.filter(is_probe=True).count() == 2

    # when the first is classified, a third is accepted and the first probe is deleted, file too
    oldest = ListingImage.objects.get(pk=first["image_id"])
    stored = stored_name(oldest)
    ListingImage.objects.filter(pk=oldest.pk).update(status=ClassificationStatus.DONE)
    with django_capture_on_commit_callbacks(execute=True):
        third = client.post("/api/classify", {"file": photo()}, format="multipart")
    assert third.status_code == 202
    remaining = set(ListingImage.objects.filter(listing__is_probe=True).values_list("pk", flat=True))
    assert remaining == {second["image_id"], third.json()["image_id"]}
    assert not oldest.file.storage.exists(stored)
    assert client.get(first["poll_url"]).status_code == 404


def test_probes_past_retention_are_deleted_with_their_files(
    settings: Settings, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    # given an old probe, a recent probe and an old ordinary listing
    client = token_client(UserFactory.create())
    old, recent = (
        client.post("/api/classify", {"file": photo()}, format="multipart").json() for _ in range(2)
    )
    old_image = ListingImage.objects.get(pk=old["image_id"])
    listing = ListingFactory.create()
    image_add(listing=listing, upload=pb.jpeg_bytes(), filename="a.jpg")
    past = timezone.now() - timedelta(seconds=settings.CLASSIFY_PROBE_RETENTION_S + 60)
    Listing.objects.filter(pk__in=[old_image.listing_id, listing.pk]).update(created_at=past)

    # when the periodic sweep runs
    with django_capture_on_commit_callbacks(execute=True):
        deleted = classify_probes_delete_expired()

    # then only the old probe went, with its stored file
    assert deleted == 1
    assert not Listing.objects.filter(pk=old_image.listing_id).exists()
    assert not old_image.file.storage.exists(stored_name(old_image))
    assert ListingImage.objects.filter(pk=recent["image_id"]).exists()
    assert Listing.objects.filter(pk=listing.pk).exists()


def test_the_sweeps_run_periodically_on_the_maintenance_queue() -> None:
    from catalog.tasks_contract import Queue
    from config.celery import app

    for task in ("classify_probes_delete_expired_task", "api_tokens_delete_expired_task"):
        name = f"workers.tasks.{task}"
        assert app.conf.task_routes[name] == {"queue": Queue.MAINTENANCE.value}
        assert any(entry["task"] == name for entry in app.conf.beat_schedule.values())
