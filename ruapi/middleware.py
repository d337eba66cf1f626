"""Dashboard and management API middleware."""

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpResponse, JsonResponse


class RefuseNulInQuery:
    """A query string carrying a NUL byte (`%00`) is refused with a 400 before any view runs.

    Postgres text cannot hold NUL: a filter such as `?search=a%00b` otherwise reaches the database and
    fails as a 500. Forms and DRF serializers already refuse NUL in bodies (ProhibitNullCharactersValidator);
    query parameters are read directly by list views, so this guards them all in one place.
    """

    async_capable = True
    sync_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request):
        if iscoroutinefunction(self):
            return self.__acall__(request)
        return _refusal(request) if _has_nul(request) else self.get_response(request)

    async def __acall__(self, request):
        return _refusal(request) if _has_nul(request) else await self.get_response(request)


def _has_nul(request) -> bool:
    query = request.META.get("QUERY_STRING", "")
    return "%00" in query or "\x00" in query


def _refusal(request) -> HttpResponse:
    message = "Query parameters cannot contain NUL characters."
    if request.path.startswith("/api/"):  # the management API's one error body (accounts/api/errors.py)
        fields = {name: [message] for name, values in request.GET.lists() if any("\x00" in v for v in values)}
        return JsonResponse({"error": {"code": "invalid", "message": message, "fields": fields}}, status=400)
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
