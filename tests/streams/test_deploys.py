"""Config deploys from the console API, through a real tally-agent, to a real nginx-rtmp that calls a live
console back: dry run with diff and validation, apply, a refused value, rollback byte for byte, an
unhealthy reload rolled back with an alert, and the reload window's mute."""

from types import SimpleNamespace

import pytest

from monitoring.models import Alert, Condition, Mute
from streams.models import ConfigRevision, PublishSession
from streams.rendering import render_server_config
from tests import factories
from tests.deploy.test_agent import TOKEN, agent_factory  # noqa: F401  (fixture)
from tests.nginx import free_port, wait_until

BOUND_S = 30


@pytest.fixture
def site(transactional_db, live_server, nginx_factory, agent_factory, settings):  # noqa: F811
    settings.CALLBACK_BASE_URL = f"http://127.0.0.1:{live_server.thread.port}"
    factories.default_alert_rules()
    server, http_port = factories.make_loopback_server("gym-origin", nginx_prefix_paths=True)
    app = factories.make_application(server, "live")
    nginx = nginx_factory(render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL),
                          http_port=http_port, rtmp_port=server.rtmp_port)  # fmt: skip
    agent = agent_factory(nginx)
    server.agent_url, server.agent_token = f"http://127.0.0.1:{agent.port}", TOKEN
    server.save()
    api = factories.token_client(factories.make_user("boss", "admin"))
    return SimpleNamespace(server=server, app=app, nginx=nginx, api=api)


def live_file(nginx):
    return (nginx.prefix / "conf" / "nginx.conf").read_text()


def test_deploy_a_new_application_then_roll_back_byte_for_byte(site, ffmpeg_factory):
    server, nginx, api = site.server, site.nginx, site.api
    original = live_file(nginx)
    events = factories.make_application(server, "events")
    dry = api.post(f"/api/v1/servers/{server.pk}/deploy/", {"dry_run": True}, format="json").json()
    assert dry["validation"]["ok"] and dry["changed"] and "+    application events {" in dry["diff"].replace(
        "+        application", "+    application")  # fmt: skip
    assert "application events" in dry["text"] and live_file(nginx) == original
    assert not ConfigRevision.objects.exists()  # a dry run stores nothing

    answer = api.post(f"/api/v1/servers/{server.pk}/deploy/", {}, format="json")
    assert answer.status_code == 200, answer.content
    revision = ConfigRevision.objects.get()
    assert (revision.number, revision.status, revision.mode) == (1, "applied", "graceful")
    assert live_file(nginx) == revision.text and "application events" in revision.diff
    assert Mute.objects.filter(server=server, reason="config reload (revision 1)").exists()
    issued = factories.issue_key(events, "Stage")
    publisher = ffmpeg_factory.publisher(nginx.rtmp_url("events", issued.secret))
    assert wait_until(lambda: PublishSession.objects.filter(app_name="events", ended__isnull=True).exists(),
                      timeout_s=BOUND_S), publisher.stderr_text()  # fmt: skip

    back = api.post(f"/api/v1/servers/{server.pk}/rollback/", {}, format="json")
    assert back.status_code == 200 and back.json()["status"] == "rollback" and back.json()["number"] == 2
    assert live_file(nginx) == original  # byte for byte
    listed = api.get(f"/api/v1/servers/{server.pk}/config-revisions/").json()["results"]
    assert [(r["number"], r["status"]) for r in listed] == [(2, "rollback"), (1, "applied")]


def test_a_value_nginx_refuses_never_reaches_the_live_file(site, ffmpeg_factory):
    server, app, nginx, api = site.server, site.app, site.nginx, site.api
    original = live_file(nginx)
    app.settings = {**app.settings, "push_targets": ["rtmp://no-such-host.invalid/live"]}
    app.save()
    answer = api.post(f"/api/v1/servers/{server.pk}/deploy/", {}, format="json")
    assert answer.status_code == 422
    body = answer.json()
    assert not body["validation"]["ok"] and "host not found" in body["validation"]["output"]
    assert body["revision"]["status"] == "invalid" and live_file(nginx) == original
    issued = factories.issue_key(app, "Still works")  # the old config keeps serving
    ffmpeg_factory.publisher(nginx.rtmp_url("live", issued.secret))
    assert wait_until(lambda: PublishSession.objects.filter(ended__isnull=True).exists(), timeout_s=BOUND_S)


def test_an_unhealthy_reload_is_rolled_back_and_raises_an_alert(site):
    server, nginx, api = site.server, site.nginx, site.api
    original = live_file(nginx)
    server.stat_url = f"http://127.0.0.1:{free_port()}/stat"  # passes nginx -t, but /stat leaves the agent's URL
    server.save()
    answer = api.post(f"/api/v1/servers/{server.pk}/deploy/", {}, format="json")
    assert answer.status_code == 502
    assert answer.json()["revision"]["status"] == "rolled_back" and live_file(nginx) == original
    alert = Alert.objects.get(condition=Condition.DEPLOY_FAILED)
    assert alert.state == "open" and alert.title == "Config deploy failed: gym-origin"
    assert nginx.stat_xml()  # nginx serves as before


def test_deploy_errors_are_clear(site):
    server, api = site.server, site.api
    assert api.post(f"/api/v1/servers/{server.pk}/deploy/", {"mode": "sideways"}, format="json").status_code == 400
    assert api.post(f"/api/v1/servers/{server.pk}/deploy/", {"dry_run": "maybe"}, format="json").status_code == 400
    server.agent_token = "wrong-token-0123456789"
    server.save()
    refused = api.post(f"/api/v1/servers/{server.pk}/deploy/", {"dry_run": True}, format="json")
    assert refused.status_code == 502 and "refused the token" in refused.json()["detail"]
    server.agent_url = f"http://127.0.0.1:{free_port()}"
    server.save()
    assert "unreachable" in api.post(f"/api/v1/servers/{server.pk}/deploy/", {}, format="json").json()["detail"]
    viewer = factories.token_client(factories.make_user("watcher", "viewer"))
    assert viewer.post(f"/api/v1/servers/{server.pk}/deploy/", {}, format="json").status_code == 403
    assert not ConfigRevision.objects.exists()
