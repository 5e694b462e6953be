"""Forms of the seller pages. They validate input only; views call services to write."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib.auth.forms import UserCreationForm

from catalog.services.images import LISTING_MAX_PHOTOS

# User-facing messages; tests reuse them.
PHOTOS_REQUIRED = "Add at least one photo."
TOO_MANY_PHOTOS = f"Add at most {LISTING_MAX_PHOTOS} photos."
# The photo picker's (photos.js): {count} reads "1 photo" or "2 photos", {name} is a file name.
PICKER_LEFT_OUT = f"{{count}} left out: a listing holds at most {LISTING_MAX_PHOTOS} photos."
PICKER_NOT_A_PHOTO = "{name} left out: it is not a photo. Choose JPEG, PNG or WebP photos."


class ListingForm(forms.Form):
    """Title, description and price of a listing (photos are handled separately)."""

    title = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"autocomplete": "off"}))
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 5}))
    price = forms.DecimalField(
        max_digits=12,
        decimal_places=2,
        min_value=Decimal("0"),
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal"}),
    )


class SignupForm(UserCreationForm):
    """Username, optional e-mail and password twice (Django's password validators apply)."""

    email = forms.EmailField(required=False, help_text="Optional; only used to reach you about a sale.")

    class Meta(UserCreationForm.Meta):
        fields = ("username", "email")
