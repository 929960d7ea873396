"""API tokens: hashed at rest, shown once, expiry, revocation, role ceiling, management command."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from console import audit, tokens
from console.models import ApiToken, AuditEntry
from tests import factories

pytestmark = pytest.mark.django_db


def bearer(secret):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_token_is_hashed_and_shown_once_via_api(admin):
    api = factories.token_client(admin)
    response = api.post("/api/v1/tokens/", {"name": "ingest platform", "role_ceiling": "operator"}, format="json")
    assert response.status_code == 201, response.json()
    secret = response.json()["token"]
    assert secret.startswith("tly_") and len(secret) >= 40
    stored = ApiToken.objects.get(pk=response.json()["id"])
    assert stored.token_hash == tokens.hash_secret(secret) and secret not in str(ApiToken.objects.values())
    assert "token" not in api.get(f"/api/v1/tokens/{stored.pk}/").json()
    assert bearer(secret).get("/api/v1/servers/").status_code == 200
    assert AuditEntry.objects.filter(action="issue", object_type="console.apitoken").exists()


def test_revoked_and_expired_tokens_are_refused(admin):
    issued = tokens.issue_token(admin, "t", "admin", audit.Actor.system())
    client = bearer(issued.secret)
    assert client.get("/api/v1/servers/").status_code == 200
    api = factories.token_client(admin)
    assert api.post(f"/api/v1/tokens/{issued.token.pk}/revoke/").status_code == 200
    assert client.get("/api/v1/servers/").status_code == 401

    expiring = tokens.issue_token(admin, "e", "admin", audit.Actor.system(), timezone.now() + timedelta(hours=1))
    ApiToken.objects.filter(pk=expiring.token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert bearer(expiring.secret).get("/api/v1/servers/").status_code == 401


def test_inactive_owner_token_is_refused(admin, viewer):
    issued = tokens.issue_token(viewer, "t", "viewer", audit.Actor.system())
    viewer.is_active = False
    viewer.save()
    assert bearer(issued.secret).get("/api/v1/servers/").status_code == 401


def test_ceiling_above_owner_role_does_not_raise_it(viewer):
    issued = tokens.issue_token(viewer, "t", "admin", audit.Actor.system())
    assert bearer(issued.secret).post("/api/v1/servers/", {"name": "x", "host": "h"}, format="json").status_code == 403


def test_last_used_is_recorded(admin):
    issued = tokens.issue_token(admin, "t", "admin", audit.Actor.system())
    bearer(issued.secret).get("/api/v1/servers/")
    issued.token.refresh_from_db()
    assert issued.token.last_used_at is not None


def test_token_create_validation(admin):
    api = factories.token_client(admin)
    bad = api.post("/api/v1/tokens/", {"name": "x", "role_ceiling": "root", "owner": "nobody",
                                       "expires_at": "2001-01-01T00:00:00Z"}, format="json")  # fmt: skip
    assert bad.status_code == 400
    assert {"role_ceiling", "owner", "expires_at"} <= set(bad.json())


def test_management_command_creates_a_working_token(admin):
    out = StringIO()
    call_command("create_api_token", "--user", "admin", "--name", "cli", "--role", "viewer", stdout=out)
    secret = out.getvalue().strip()
    assert bearer(secret).get("/api/v1/keys/").status_code == 200
    assert bearer(secret).post("/api/v1/servers/", {}, format="json").status_code == 403
    with pytest.raises(CommandError):
        call_command("create_api_token", "--user", "ghost", "--name", "cli", stdout=StringIO())
