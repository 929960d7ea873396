"""Inventory endpoints: servers, applications, keys (issue and revoke)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from console import audit
from console.api import AuditedModelViewSet
from console.roles import Role
from streams import keys
from streams.api import serializers as s
from streams.models import Application, Server, StreamKey


class ServerFilter(django_filters.FilterSet):
    tag = django_filters.CharFilter(method="filter_tag")

    class Meta:
        model = Server
        fields = ["kind", "role", "enabled", "host"]

    def filter_tag(self, queryset: QuerySet[Server], name: str, value: str) -> QuerySet[Server]:
        # JSON containment is Postgres-only; a LIKE over the JSON text works on both backends.
        return queryset.filter(tags__icontains=f'"{value}"')


class ServerViewSet(AuditedModelViewSet):
    serializer_class = s.ServerSerializer
    filterset_class = ServerFilter
    ordering_fields = ["name", "kind", "role", "host", "created"]
    search_fields = ["name", "host", "notes"]

    def get_queryset(self) -> QuerySet[Server]:
        return Server.objects.visible_to(self.request.user).order_by("name")


class ApplicationViewSet(AuditedModelViewSet):
    serializer_class = s.ApplicationSerializer
    filterset_fields = ["server", "kind", "name"]
    ordering_fields = ["name", "server__name", "created"]
    search_fields = ["name", "server__name"]

    def get_queryset(self) -> QuerySet[Application]:
        return (
            Application.objects.visible_to(self.request.user).select_related("server").order_by("server__name", "name")
        )


class StreamKeyFilter(django_filters.FilterSet):
    server = django_filters.NumberFilter(field_name="application__server")
    state = django_filters.ChoiceFilter(choices=StreamKey.State.choices, method="filter_state")

    class Meta:
        model = StreamKey
        fields = ["application", "server", "state", "public_name"]

    def filter_state(self, queryset: QuerySet[StreamKey], name: str, value: str) -> QuerySet[StreamKey]:
        return queryset.with_state(value)  # type: ignore[attr-defined,no-any-return]


class StreamKeyViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Keys are issued and revoked, never edited: the secret cannot be changed in place."""

    filterset_class = StreamKeyFilter
    ordering_fields = ["public_name", "label", "created", "last_used_at", "expires_at"]
    search_fields = ["label", "public_name", "prefix"]
    action_roles = {"revoke": Role.ADMIN}

    def get_queryset(self) -> QuerySet[StreamKey]:
        return (
            StreamKey.objects.visible_to(self.request.user)
            .select_related("application__server", "created_by", "revoked_by")
            .order_by("application_id", "public_name")
        )

    def get_serializer_class(self) -> Any:
        return s.StreamKeyIssueSerializer if self.action == "create" else s.StreamKeySerializer

    @extend_schema(request=s.StreamKeyIssueSerializer, responses={201: s.IssuedKeySerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Issue a key. The answer carries the secret, OBS fields and publish URL: this once only."""
        data = s.StreamKeyIssueSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        issued = keys.issue_key(fields.pop("application"), actor=audit.Actor.from_request(request), **fields)
        body = s.IssuedKeySerializer(issued.key, context={"issued": issued}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @extend_schema(request=s.RevokeSerializer, responses={200: s.StreamKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke the key now. Revoking a revoked key is a no-op."""
        body = s.RevokeSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        result = keys.revoke_key(self.get_object(), audit.Actor.from_request(request), body.validated_data["reason"])
        return Response(s.StreamKeySerializer(result.key).data)
