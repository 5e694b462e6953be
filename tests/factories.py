"""factory_boy factories for catalogue rows."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from catalog.models import Listing


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"seller{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.django.Password("a-long-test-password")


class ListingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Listing

    seller = factory.SubFactory(UserFactory)
    title = factory.Sequence(lambda n: f"Item {n}")
    description = "Gently used."
    published_at = factory.LazyFunction(timezone.now)
