"""WebSocket routes (Channels). The live usage feed and the playground attach here."""

from django.urls import path

from usage.consumers import PlaygroundConsumer, UsageFeedConsumer

websocket_urlpatterns: list = [
    path("ws/orgs/<int:org_id>/usage/live/", UsageFeedConsumer.as_asgi()),
    path("ws/orgs/<int:org_id>/playground/", PlaygroundConsumer.as_asgi()),
]
