"""Small template helpers for the marketplace pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from catalog import forms

register = template.Library()


@register.filter
def get_item(mapping: dict[Any, Any] | None, key: Any) -> Any:
    """`{{ paths|get_item:listing.category_id }}`: a dict lookup with a variable key."""
    return (mapping or {}).get(key)


@register.filter
def status_label(status: str) -> str:
    """A seller-facing word for a photo's classification status."""
    return {"pending": "Waiting", "queued": "Analysing", "done": "Analysed", "failed": "Failed"}.get(
        status, status
    )


@register.simple_tag
def photo_picker_messages() -> SafeString:
    """The photo picker's messages as data attributes of its drop zone (photos.js shows them)."""
    return format_html(
        'data-msg-left-out="{}" data-msg-unreadable="{}"', forms.PICKER_LEFT_OUT, forms.PICKER_NOT_A_PHOTO
    )
