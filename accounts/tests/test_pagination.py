import pytest
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from accounts.api.pagination import MAX_OFFSET, BoundedLimitOffsetPagination


@pytest.mark.parametrize(
    ("query", "limit", "offset"),
    [("", 50, 0), ("?limit=10&offset=5", 10, 5), ("?limit=99999999999999999999999", 500, 0),
     (f"?offset={10**40}", 50, MAX_OFFSET)],
)  # fmt: skip
def test_limits_and_offsets_are_bounded(query, limit, offset):
    request = Request(APIRequestFactory().get("/api/x/" + query))
    paginator = BoundedLimitOffsetPagination()
    assert (paginator.get_limit(request), paginator.get_offset(request)) == (limit, offset)
