"""Inventory endpoints: servers, applications, keys (issue and revoke)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from console import audit
from console.api import AuditedModelViewSet
from console.roles import Role
from streams import deploys, inventory, jobs, keys, rendering, sessions
from streams.api import serializers as s
from streams.models import (
    Application,
    ConfigRevision,
    DeployJob,
    ProxyMember,
    PublishReject,
    PublishSession,
    PublishSessionQuerySet,
    Server,
    StreamKey,
)
from streams.ratelimit import publish_failures


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
    action_roles = {"rotate_hook_secret": Role.ADMIN, "origin_config": Role.ADMIN, "deploy": Role.ADMIN,
                    "rollback": Role.ADMIN, "config_revisions": Role.ADMIN}  # fmt: skip
    filterset_class = ServerFilter
    ordering_fields = ["name", "kind", "role", "host", "created"]
    search_fields = ["name", "host", "notes"]

    def get_queryset(self) -> QuerySet[Server]:
        return Server.objects.visible_to(self.request.user).order_by("name")

    @extend_schema(request=None, responses={200: dict})
    @action(detail=True, methods=["post"], url_path="rotate-hook-secret")
    def rotate_hook_secret(self, request: Request, pk: str | None = None) -> Response:
        """New callback secret; the old one keeps working for 24 h, until the new config is deployed."""
        server = inventory.rotate_hook_secret(self.get_object(), audit.Actor.from_request(request))
        return Response({"rotated_at": server.hook_secret_rotated_at, "previous_valid_for_s": 86400})

    @extend_schema(responses={(200, "text/plain"): str})
    @action(detail=True, methods=["get"], url_path="origin-config")
    def origin_config(self, request: Request, pk: str | None = None) -> HttpResponse:
        """The nginx.conf Tally renders for this nginx-rtmp origin or edge (carries the callback secret)."""
        server = self.get_object()
        try:
            text = rendering.render_origin_config(
                server, server.applications.all(), callback_base_url=settings.CALLBACK_BASE_URL, prefix_paths=False
            )
        except ValueError as exc:
            return HttpResponse(f"cannot render: {exc}\n", status=400, content_type="text/plain")
        return HttpResponse(text, content_type="text/plain; charset=utf-8")

    @extend_schema(request=s.DeployRequestSerializer, responses={200: dict})
    @action(detail=True, methods=["post"])
    def deploy(self, request: Request, pk: str | None = None) -> Response:
        """Render, diff against the live config, validate on the host (``nginx -t``) and, unless
        ``dry_run``, apply with a reload (``mode``: graceful or reconnect; default the server's)."""
        server = self.get_object()
        body = s.DeployRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            result = deploys.deploy(server, audit.Actor.from_request(request), dry_run=body.validated_data["dry_run"],
                                    mode=body.validated_data.get("mode"))  # fmt: skip
        except ValueError as exc:
            return Response({"detail": f"Cannot render this server's config: {exc}"}, status=400)
        except deploys.AgentError as exc:
            return Response({"detail": str(exc)}, status=502)
        data = {"dry_run": body.validated_data["dry_run"], "status": result.status, "sha256": result.sha256,
                "live_sha256": result.live_sha256, "changed": result.changed, "diff": result.diff,
                "validation": {"ok": result.valid, "output": result.validation_output}}  # fmt: skip
        if result.revision is None:
            data["text"] = result.text
        else:
            data["revision"] = s.ConfigRevisionSerializer(result.revision).data
        # A dry run answers 200 with its validation; a deploy 200 (applied), 422 (refused by nginx -t) or
        # 502 (the reload left nginx unhealthy and the agent rolled it back, or the agent failed).
        codes: dict[str, int] = {ConfigRevision.Status.INVALID: 422, ConfigRevision.Status.ROLLED_BACK: 502,
                                 ConfigRevision.Status.FAILED: 502}  # fmt: skip
        return Response(data, status=codes.get(result.revision.status, 200) if result.revision else 200)

    @extend_schema(request=None, responses={200: s.ConfigRevisionSerializer})
    @action(detail=True, methods=["post"])
    def rollback(self, request: Request, pk: str | None = None) -> Response:
        """Put back the config that was live before the last deploy (a new revision). nginx only: a Wowza
        server follows the database (409)."""
        try:
            revision = deploys.rollback(self.get_object(), audit.Actor.from_request(request))
        except deploys.RollbackUnavailable as exc:
            return Response({"detail": str(exc)}, status=409)
        except deploys.AgentError as exc:
            return Response({"detail": str(exc)}, status=502)
        data = s.ConfigRevisionSerializer(revision).data
        return Response(data, status=200 if revision.status == "rollback" else 409)

    @extend_schema(responses={200: s.ConfigRevisionSerializer(many=True)})
    @action(detail=True, methods=["get"], url_path="config-revisions")
    def config_revisions(self, request: Request, pk: str | None = None) -> Response:
        """Every deploy attempt of this server, newest first, with its diff and outcome."""
        revisions = self.get_object().config_revisions.order_by("-number")
        page = self.paginate_queryset(revisions)
        return self.get_paginated_response(s.ConfigRevisionSerializer(page, many=True).data)


class ProxyMemberViewSet(AuditedModelViewSet):
    """Origins behind a TCP proxy, with their balancing options (admins write)."""

    serializer_class = s.ProxyMemberSerializer
    filterset_fields = ["proxy", "origin"]

    def get_queryset(self) -> QuerySet[ProxyMember]:
        return ProxyMember.objects.select_related("proxy", "origin").order_by("proxy__name", "origin__name")


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
            .with_last_used()
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

    @extend_schema(request=s.RevokeSerializer, responses={200: s.RevokedKeySerializer})
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, pk: str | None = None) -> Response:
        """Revoke the key now and drop its live publishers; ``kicks`` tells what each drop did."""
        body = s.RevokeSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        result = keys.revoke_key(self.get_object(), audit.Actor.from_request(request), body.validated_data["reason"])
        context = {"kicks": result.kicks, "wowza": result.wowza.text if result.wowza else ""}
        return Response(s.RevokedKeySerializer(result.key, context=context).data)

    @extend_schema(request=s.RotateSerializer, responses={200: s.IssuedKeySerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request: Request, pk: str | None = None) -> Response:
        """A new secret for the same public name; the old one works ``grace_s`` more seconds (default 1 h)."""
        body = s.RotateSerializer(data=request.data or {})
        body.is_valid(raise_exception=True)
        grace = timedelta(seconds=body.validated_data["grace_s"])
        issued = keys.rotate_key(self.get_object(), audit.Actor.from_request(request), grace)
        data = s.IssuedKeySerializer(issued.key, context={"issued": issued}).data
        return Response(data, headers={"Cache-Control": "no-store"})


class PublishSessionFilter(django_filters.FilterSet):
    live = django_filters.BooleanFilter(method="filter_live")
    since = django_filters.IsoDateTimeFilter(field_name="started", lookup_expr="gte")

    class Meta:
        model = PublishSession
        fields = ["server", "application", "key", "public_name", "live", "since", "end_reason"]

    def filter_live(self, queryset: PublishSessionQuerySet, name: str, value: bool) -> PublishSessionQuerySet:
        return queryset.open() if value else queryset.filter(ended__isnull=False)


class PublishSessionViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Publish sessions (live and past): the per-key publish history. Operators may kick a live one."""

    serializer_class = s.PublishSessionSerializer
    filterset_class = PublishSessionFilter
    ordering_fields = ["started", "ended", "public_name"]
    action_roles = {"kick": Role.OPERATOR}

    def get_queryset(self) -> QuerySet[PublishSession]:
        return PublishSession.objects.visible_to(self.request.user).select_related("server").order_by("-started")

    @extend_schema(request=None, responses={200: s.KickResultSerializer})
    @action(detail=True, methods=["post"])
    def kick(self, request: Request, pk: str | None = None) -> Response:
        """Drop this live publisher without revoking its key (the encoder may reconnect)."""
        session = self.get_object()
        if not session.is_live:
            return Response({"detail": "This session has already ended."}, status=status.HTTP_409_CONFLICT)
        result = sessions.kick_session(session, audit.Actor.from_request(request), PublishSession.EndReason.KICKED)
        return Response(s.KickResultSerializer(result).data)


class PublishRejectViewSet(viewsets.ReadOnlyModelViewSet):  # type: ignore[type-arg]
    """Refused publishes (reason, address, key prefix) for admins."""

    serializer_class = s.PublishRejectSerializer
    filterset_fields = ["server", "reason", "addr", "key"]
    ordering_fields = ["created"]
    action_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN}

    def get_queryset(self) -> QuerySet[PublishReject]:
        return PublishReject.objects.select_related("server").order_by("-created", "-id")


class PublishBlockViewSet(viewsets.ViewSet):
    """Addresses blocked right now by the publish brute-force limit (this process's view)."""

    action_roles = {"list": Role.ADMIN, "unblock": Role.ADMIN}

    @extend_schema(responses={200: dict})
    def list(self, request: Request) -> Response:
        rows = [vars(b) for b in publish_failures.blocked()]
        return Response({"limit": publish_failures.limit, "window_s": publish_failures.window_s,
                         "block_s": publish_failures.block_s, "blocked": rows})  # fmt: skip

    @extend_schema(request=s.UnblockSerializer, responses={200: dict})
    @action(detail=False, methods=["post"])
    def unblock(self, request: Request) -> Response:
        body = s.UnblockSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        addr = body.validated_data["addr"]
        was_blocked = publish_failures.unblock(addr)
        audit.record(audit.Actor.from_request(request), "unblock", object_type="publish.address", object_id=addr,
                     object_repr=addr, message="was blocked" if was_blocked else "was not blocked")  # fmt: skip
        return Response({"addr": addr, "was_blocked": was_blocked})


class DeployJobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    viewsets.GenericViewSet,  # type: ignore[type-arg]
):
    """Deploys to several servers, run by a worker: origins first, then proxies (admins only)."""

    serializer_class = s.DeployJobSerializer
    action_roles = {"list": Role.ADMIN, "retrieve": Role.ADMIN, "create": Role.ADMIN, "cancel": Role.ADMIN}
    filterset_fields = ["status"]

    def get_queryset(self) -> QuerySet[DeployJob]:
        return DeployJob.objects.prefetch_related("steps__server", "steps__revision").order_by("-created")

    @extend_schema(request=s.DeployJobCreateSerializer, responses={202: s.DeployJobSerializer})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Queue a deploy of ``servers`` (default: every server with an agent or a Wowza API). The answer is
        202 with the job; follow it at ``GET /deploy-jobs/{id}/`` or by ``deploy.job`` websocket messages."""
        body = s.DeployJobCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        job = jobs.create_job(audit.Actor.from_request(request), data.get("servers"), mode=data["mode"],
                              stop_on_failure=data["stop_on_failure"])  # fmt: skip
        job = self.get_queryset().get(pk=job.pk)
        return Response(s.DeployJobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: s.DeployJobSerializer, 409: dict})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop the job after the server it is deploying now; the rest are skipped."""
        job = self.get_object()
        if not jobs.cancel(job, audit.Actor.from_request(request)):
            return Response({"detail": f"The job has already finished ({job.get_status_display().lower()})."},
                            status=409)  # fmt: skip
        return Response(s.DeployJobSerializer(self.get_queryset().get(pk=job.pk)).data)
