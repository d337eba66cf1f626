"""Small display filters for the dashboard and the public pages (`{% load ui %}`)."""

from django import template

register = template.Library()


@register.filter
def count(value) -> str:
    """An integer with thousands separators: 200000 -> "200,000"; None/"" -> ""."""
    if value in (None, ""):
        return ""
    return f"{int(value):,}"
