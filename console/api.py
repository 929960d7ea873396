"""Shared REST API plumbing: pagination, strict serializers, audited viewsets, error shape.

Every error answer is JSON with a ``detail`` message or a field → messages map, never a 500 for bad
input: Django ValidationErrors, integrity races and oversize bodies are turned into 400s here.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from console import audit

log = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus 400s for errors that would otherwise become 500s."""
    if isinstance(exc, DjangoValidationError):
        if hasattr(exc, "error_dict"):
            detail: Any = exc.message_dict
        else:
            detail = {"detail": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, RequestDataTooBig):
        exc = exceptions.ParseError("Request body too large.")
    elif isinstance(exc, SuspiciousOperation):
        exc = exceptions.ParseError(str(exc) or "Bad request.")
    elif isinstance(exc, IntegrityError):
        log.info("integrity error turned into 409: %s", exc)
        return Response(
            {"detail": "This conflicts with an existing record (a name is probably taken)."},
            status=status.HTTP_409_CONFLICT,
        )
    return drf_exception_handler(exc, context)


class StrictSerializerMixin:
    """Reject unknown and read-only fields in the input instead of silently ignoring them."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}  # type: ignore[attr-defined]
            unknown = sorted(set(data) - writable)
            if unknown:
                errors: dict[str, Any] = {name: ["Unknown or read-only field."] for name in unknown}
                try:
                    super().to_internal_value(data)  # type: ignore[misc]
                except serializers.ValidationError as exc:
                    if isinstance(exc.detail, dict):
                        errors.update(exc.detail)
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]


class AuditedModelViewSet(viewsets.ModelViewSet):  # type: ignore[type-arg]
    """A model viewset whose writes go through ``audit.save_audited`` / ``audit.delete_audited``."""

    def perform_create(self, serializer: Any) -> None:
        self._save(serializer)

    def perform_update(self, serializer: Any) -> None:
        self._save(serializer)

    def _save(self, serializer: Any) -> None:
        # Build the instance without saving, then validate + save + audit in one transaction.
        with transaction.atomic():
            model = serializer.Meta.model
            data = dict(serializer.validated_data)
            instance = serializer.instance or model()
            for name, value in data.items():
                setattr(instance, name, value)
            audit.save_audited(instance, audit.Actor.from_request(self.request))
            serializer.instance = instance

    def perform_destroy(self, instance: Any) -> None:
        audit.delete_audited(instance, audit.Actor.from_request(self.request))
