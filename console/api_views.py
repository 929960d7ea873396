"""API endpoints of the console app: API tokens and the audit log (admins only)."""

from __future__ import annotations

from typing import Any

import django_filters
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from console import audit, tokens
from console.api import StrictSerializerMixin
from console.models import ApiToken, AuditEntry
from console.roles import ROLE_CHOICES, Role

User = get_user_model()


class ApiTokenSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    owner = serializers.CharField(source="owner.username", read_only=True)
    state = serializers.SerializerMethodField()

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "name",
            "owner",
            "prefix",
            "role_ceiling",
            "state",
            "created",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields

    def get_state(self, obj: ApiToken) -> str:
        return obj.state()


class ApiTokenCreateSerializer(StrictSerializerMixin, serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField(max_length=100)
    owner = serializers.SlugRelatedField(
        slug_field="username", queryset=User.objects.filter(is_active=True), required=False
    )
    role_ceiling = serializers.ChoiceField(choices=ROLE_CHOICES, default="viewer")
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_expires_at(self, value: Any) -> Any:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


class IssuedTokenSerializer(ApiTokenSerializer):
    token = serializers.SerializerMethodField()

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, obj: ApiToken) -> str:
        return self.context["secret"]  # type: ignore[no-any-return]


class ApiTokenViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """API tokens. Only admins list, issue and revoke them; the secret is returned once."""

    action_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN, "create": Role.ADMIN, "revoke": Role.ADMIN}
    serializer_class = ApiTokenSerializer
    filterset_fields = ["role_ceiling"]
    ordering_fields = ["created", "name", "last_used_at"]

    def get_queryset(self) -> QuerySet[ApiToken]:
        return ApiToken.objects.select_related("owner").order_by("-created")

    @extend_schema(request=ApiTokenCreateSerializer, responses={201: IssuedTokenSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        data = ApiTokenCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        issued = tokens.issue_token(
            owner=fields.get("owner") or request.user,
            name=fields["name"],
            role_ceiling=fields["role_ceiling"],
            actor=audit.Actor.from_request(request),
            expires_at=fields.get("expires_at"),
        )
        body = IssuedTokenSerializer(issued.token, context={"secret": issued.secret}).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"})

    @extend_schema(request=None, responses={200: ApiTokenSerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        token = tokens.revoke_token(self.get_object(), audit.Actor.from_request(request))
        return Response(ApiTokenSerializer(token).data)


class AuditEntrySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    class Meta:
        model = AuditEntry
        fields = [
            "id", "created", "actor_name", "token_name", "ip", "action", "object_type", "object_id",
            "object_repr", "before", "after", "message",
        ]  # fmt: skip
        read_only_fields = fields


class AuditEntryFilter(django_filters.FilterSet):
    since = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt")
    actor = django_filters.CharFilter(field_name="actor_name")

    class Meta:
        model = AuditEntry
        fields = ["action", "object_type", "object_id", "actor", "since", "until"]


class AuditEntryViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """The audit log, newest first. Admins only."""

    action_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN}
    serializer_class = AuditEntrySerializer
    filterset_class = AuditEntryFilter
    ordering_fields = ["created"]
    search_fields = ["object_repr", "message", "actor_name"]

    def get_queryset(self) -> QuerySet[AuditEntry]:
        return AuditEntry.objects.order_by("-created", "-id")


router = SimpleRouter()
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("audit-log", AuditEntryViewSet, basename="audit-entry")
urlpatterns = router.urls
