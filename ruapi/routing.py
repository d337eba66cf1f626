"""WebSocket routes (Channels). The live usage feed and the playground attach here."""

websocket_urlpatterns: list = []
