"""ASGI entry point: `ruapi.asgi:application` (HTTP and WebSocket).

HTTP under /v1/ goes to a Django handler built with settings.API_MIDDLEWARE only: the dashboard's
middleware is sync-style and would cost every proxied request several thread hops.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ruapi.settings")

from django.core.asgi import get_asgi_application

dashboard_app = get_asgi_application()  # sets Django up; import models only after this

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.test.utils import override_settings  # noqa: E402

from ruapi.routing import websocket_urlpatterns  # noqa: E402


class PublicAPIHandler(ASGIHandler):
    """Django's ASGI handler with the lean API middleware stack."""

    def load_middleware(self, is_async=False):
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


api_app = PublicAPIHandler()


async def http_app(scope, receive, send):
    app = api_app if scope["path"].startswith("/v1/") else dashboard_app
    await app(scope, receive, send)


async def lifespan_app(scope, receive, send):
    """Accept the server's lifespan protocol (Django itself rejects it), closing upstream pools on exit."""
    from proxy.upstreams.http import close_sessions

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "lifespan": lifespan_app,
    }
)
