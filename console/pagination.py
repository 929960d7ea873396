"""API pagination (its own module: DRF imports it while loading its generic views)."""

from rest_framework import pagination


class Pagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
