"""Keys pages: the issue dialog (secret shown once, copy targets for OBS and ffmpeg), the keys list of an
application (states, expiry, last use, live now, admin-only actions) and what non-admins see."""

import html
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from console import audit
from console.tokens import hash_secret
from streams import keys
from streams.models import PublishSession, StreamKey
from tests import factories
from tests.factories import logged_in

pytestmark = pytest.mark.django_db

ADMIN_CONTROLS = ("Issue key", "Revoke", "Rotate", "Edit", "Delete")


def dialog_of(page):
    """The key dialog's inner HTML (it must be rendered open, so it shows without JavaScript)."""
    match = re.search(r'<dialog id="key-dialog"[^>]*\sopen[\s>][^>]*>?(.*?)</dialog>', page, re.S)
    assert match, "no open key dialog"
    return match.group(1)


def copy_targets(fragment):
    """{element id: its text} for every copy button's target, in the buttons' order."""
    targets = {}
    for target in re.findall(r'<button type="button" data-copy="([^"]+)"', fragment):
        value = re.search(rf'<output id="{target}"[^>]*>([^<]*)</output>', fragment)
        assert value, f"copy button without a target: {target}"
        targets[target] = html.unescape(value.group(1))
    return targets


def open_session(key, client_id="1", **fields):
    return PublishSession.objects.create(
        server=key.application.server, application=key.application, key=key, app_name=key.application.name,
        public_name=key.public_name, client_id=client_id, publisher_addr="203.0.113.4", encoder="OBS 30.1", **fields,
    )  # fmt: skip


def test_issue_dialog_shows_the_secret_once_with_copy_targets(admin):
    app = factories.make_application(factories.make_server("school-origin", host="192.0.2.10", rtmp_port=1936))
    client = logged_in(admin)
    response = client.post(f"/applications/{app.pk}/keys/new/", {"label": "Gym camera", "max_publishers": "1"})
    assert response.status_code == 302
    key = StreamKey.objects.get(application=app)
    shown = client.get(response["Location"])
    assert shown["Cache-Control"] == "no-store"
    page = shown.content.decode()
    dialog = dialog_of(page)
    secret = re.search(r'data-testid="secret">([^<]+)<', dialog).group(1)
    assert hash_secret(secret) == key.secret_hash

    targets = copy_targets(dialog)
    assert list(targets)[:3] == ["obs-server", "obs-key", "publish-url"]
    assert targets["obs-server"] == "rtmp://192.0.2.10:1936/live"
    assert targets["obs-key"] == secret
    assert targets["publish-url"] == f"rtmp://192.0.2.10:1936/live/{secret}"
    assert targets["ffmpeg-command"].startswith("ffmpeg ") and targets["ffmpeg-command"].endswith(
        f" -f flv rtmp://192.0.2.10:1936/live/{secret}"
    )
    for target in ("obs-server", "obs-key", "publish-url"):
        assert f'<label for="{target}">' in dialog  # each field has its label
    # copy buttons need the module (hidden until it runs; it focuses the first one), the warning is there
    assert len(re.findall(r'<button type="button" data-copy="[^"]+"[^>]* hidden data-js-only>', dialog)) == 4
    assert "Shown once — store it now" in dialog
    assert "frontend/pages/key_dialog.js" in page
    # the secret has one field of its own, and shows nowhere outside the dialog
    assert page.count('data-testid="secret"') == 1
    assert dialog.count(secret) == page.count(secret) == 3  # the key, the full URL, the ffmpeg example

    again = client.get(response["Location"]).content.decode()
    assert secret not in again and "<dialog" not in again and 'data-testid="secret-gone"' in again
    assert "key_dialog.js" not in again


def test_rotation_shows_the_new_secret_once_and_the_old_ones_deadline(admin):
    issued = factories.issue_key(factories.make_application(), "Chapel")
    client = logged_in(admin)
    response = client.post(f"/keys/{issued.key.pk}/rotate/", {"grace_hours": "2"})
    assert response.status_code == 302
    page = client.get(response["Location"]).content.decode()
    dialog = dialog_of(page)
    new_secret = copy_targets(dialog)["obs-key"]
    issued.key.refresh_from_db()
    assert hash_secret(new_secret) == issued.key.secret_hash and issued.secret not in page
    assert "New stream key" in dialog and f'datetime="{issued.key.previous_valid_until.isoformat()}"' in dialog
    listing = client.get(f"/applications/{issued.key.application_id}/").content.decode()
    assert '<span class="pill rotating">rotating</span>' in listing and new_secret not in listing


def row_of(page, key):
    match = re.search(rf'<tr data-key="{key.pk}">(.*?)</tr>', page, re.S)
    assert match, f"no row for {key}"
    return match.group(1)


def test_keys_list_states_expiry_last_use_and_live_now(admin):
    app = factories.make_application()
    now = timezone.now()
    live = factories.issue_key(app, "Live cam", max_publishers=2, expires_at=now + timedelta(days=3)).key
    open_session(live, started=now - timedelta(minutes=5))
    revoked = factories.issue_key(app, "Old cam").key
    keys.revoke_key(revoked, audit.Actor.system(), "lost")
    expired = factories.issue_key(app, "Expired cam", expires_at=now + timedelta(hours=1)).key
    StreamKey.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(hours=1))
    rotating = keys.rotate_key(factories.issue_key(app, "Rotating cam").key, audit.Actor.system(), timedelta(hours=3))
    idle = factories.issue_key(app, "Idle cam").key
    used = PublishSession.objects.create(server=app.server, application=app, key=idle, app_name="live",
                                         public_name=idle.public_name, client_id="9",
                                         started=now - timedelta(days=1), ended=now - timedelta(hours=20))  # fmt: skip

    client = logged_in(admin)
    page = client.get(f"/applications/{app.pk}/").content.decode()
    assert 'class="pill active">active<' in row_of(page, live)
    assert 'class="pill revoked">revoked<' in row_of(page, revoked)
    assert 'class="pill expired">expired<' in row_of(page, expired)
    assert 'class="pill rotating">rotating<' in row_of(page, rotating.key)
    assert "1 of 2" in row_of(page, live) and 'class="pill live"' in row_of(page, live)
    assert 'class="pill live"' not in row_of(page, idle)
    assert f'<time datetime="{live.expires_at.isoformat()}">' in row_of(page, live)
    assert "never" in row_of(page, idle)  # no expiry
    assert f'<time datetime="{used.started.isoformat()}">' in row_of(page, idle)  # last used
    # admin actions: rotate only active keys, revoke any key not revoked yet
    assert "Rotate" in row_of(page, live) and "Revoke" in row_of(page, live)
    assert "Rotate" in row_of(page, rotating.key)
    assert "Rotate" not in row_of(page, expired) and "Revoke" in row_of(page, expired)
    assert "Rotate" not in row_of(page, revoked) and "Revoke" not in row_of(page, revoked)
    assert "Issue key" in page

    for state, expected in (("rotating", rotating.key), ("revoked", revoked), ("expired", expired)):
        filtered = client.get(f"/applications/{app.pk}/", {"state": state}).content.decode()
        assert re.findall(r'<tr data-key="(\d+)">', filtered) == [str(expected.pk)], state
    active = client.get(f"/applications/{app.pk}/", {"state": "active"}).content.decode()
    assert sorted(re.findall(r'<tr data-key="(\d+)">', active)) == sorted(str(k.pk) for k in (live, rotating.key, idle))
    for hostile in ("\x00", "active\x00", "x" * 5000, "'; drop table x;--"):
        response = client.get(f"/applications/{app.pk}/", {"state": hostile})
        assert response.status_code == 200 and len(re.findall(r"<tr data-key=", response.content.decode())) == 5


def test_empty_keys_list_says_what_to_do(admin, viewer):
    app = factories.make_application()
    assert "issue one</a> for each encoder" in logged_in(admin).get(f"/applications/{app.pk}/").content.decode()
    assert "an admin issues one" in logged_in(viewer).get(f"/applications/{app.pk}/").content.decode()
    factories.issue_key(app)
    filtered = logged_in(viewer).get(f"/applications/{app.pk}/", {"state": "revoked"}).content.decode()
    assert "No revoked keys" in filtered and "Show all keys" in filtered


@pytest.mark.parametrize("persona", ["viewer", "operator"])
def test_non_admins_see_keys_without_secrets_or_admin_controls(persona, request):
    user = request.getfixturevalue(persona)
    app = factories.make_application()
    issued = factories.issue_key(app, "Chapel")
    open_session(issued.key)
    client = logged_in(user)
    for url in (f"/applications/{app.pk}/", f"/keys/{issued.key.pk}/"):
        page = client.get(url).content.decode()
        assert issued.key.public_name in page and issued.key.prefix in page
        assert issued.secret not in page and 'data-testid="secret"' not in page
        for control in ADMIN_CONTROLS:
            assert control not in page, f"{persona} sees {control!r} on {url}"
    assert ("Kick" in client.get(f"/applications/{app.pk}/").content.decode()) is (persona == "operator")
    assert client.get(f"/keys/{issued.key.pk}/issued/").status_code == 403
    assert client.get(f"/applications/{app.pk}/keys/new/").status_code == 403
    assert client.post(f"/keys/{issued.key.pk}/revoke/").status_code == 403
    assert client.post(f"/keys/{issued.key.pk}/rotate/", {"grace_hours": "1"}).status_code == 403
    issued.key.refresh_from_db()
    assert issued.key.revoked_at is None and hash_secret(issued.secret) == issued.key.secret_hash


def test_key_page_times_and_revoke_warning(admin):
    issued = factories.issue_key(factories.make_application(), "Gym", expires_at=timezone.now() + timedelta(days=1))
    client = logged_in(admin)
    page = client.get(f"/keys/{issued.key.pk}/").content.decode()
    assert f'<time datetime="{issued.key.created.isoformat()}">' in page
    assert f'<time datetime="{issued.key.expires_at.isoformat()}">' in page
    assert 'id="rotate"' in page and "Revoke" in page
    confirm = client.get(f"/keys/{issued.key.pk}/revoke/").content.decode()
    assert "live publishers are dropped" in confirm and 'id="id_reason"' in confirm


def make_keys(app, count):
    now = timezone.now()
    made = StreamKey.objects.bulk_create(
        StreamKey(
            application=app,
            label=f"Camera {i}",
            public_name=f"cam-{app.pk}-{i}",
            prefix=f"p{i:05d}",
            secret_hash=f"{app.pk:08d}{i:056d}",
            max_publishers=2,
            expires_at=now + timedelta(days=1) if i % 2 else None,
        )
        for i in range(count)
    )
    PublishSession.objects.bulk_create(
        PublishSession(
            server=app.server,
            application=app,
            key=key,
            app_name=app.name,
            public_name=key.public_name,
            client_id=f"{app.pk}-{key.pk}-{j}",
            started=now - timedelta(minutes=j + 1),
            ended=None if j == 0 else now - timedelta(minutes=j),
        )
        for key in made
        for j in range(2)
    )
    return made


def test_keys_list_takes_the_same_queries_for_many_keys(admin, django_assert_max_num_queries):
    small = factories.make_application(factories.make_server("small"))
    big = factories.make_application(factories.make_server("big"))
    make_keys(small, 2)
    make_keys(big, 120)
    client = logged_in(admin)
    client.get(f"/applications/{small.pk}/")  # warm the session and role caches alike for both

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as few:
        assert client.get(f"/applications/{small.pk}/").status_code == 200
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(f"/applications/{big.pk}/").content.decode()
    assert page.count("<tr data-key=") == 120 and page.count('class="pill live"') >= 120
    with django_assert_max_num_queries(7):  # session, user, role, application, keys, live sessions, subscription
        client.get(f"/applications/{big.pk}/")
