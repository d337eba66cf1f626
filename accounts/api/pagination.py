"""Pagination for the management API: limit/offset, bounded so no query parameter overflows SQL."""

from rest_framework.pagination import LimitOffsetPagination

MAX_OFFSET = 2**31 - 1


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_offset(self, request) -> int:
        # DRF passes any non-negative integer on to OFFSET; one beyond 64 bits overflows the database.
        return min(super().get_offset(request), MAX_OFFSET)
