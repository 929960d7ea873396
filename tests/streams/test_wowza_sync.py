"""Wowza origins managed through the REST API, against the contract-validated stand-in (tests/wowza_standin.py,
checked by tests/monitoring/test_wowza_contract.py): deploys create Live applications with publish
authentication and restart them when needed; keys become publisher entries the moment they are issued,
rotated or revoked (with the live stream disconnected); the periodic sync deletes entries of expired keys
and re-creates entries Wowza lost; encoders are held to all of it by the stand-in's publish check."""

from datetime import timedelta

import pytest
from django.utils import timezone

from streams import wowza
from streams.models import ConfigRevision, Server, StreamKey
from tests import factories
from tests.nginx import free_port
from tests.wowza_standin import PublishRefused, WowzaStandin, wowza_standin, wowza_standin_factory  # noqa: F401


@pytest.fixture
def wz(db, wowza_standin: WowzaStandin):  # noqa: F811
    server = factories.make_server(
        "wowza-1", kind="wowza", host="127.0.0.1", stat_url="", wowza_api_url=wowza_standin.url,
        wowza_username=wowza_standin.username, wowza_password=wowza_standin.password, wowza_auth="digest",
    )  # fmt: skip
    app = factories.make_application(server, "live")
    api = factories.token_client(factories.make_user("boss", "admin"))
    return server, app, api, wowza_standin


def deploy(api, server, **body):
    return api.post(f"/api/v1/servers/{server.pk}/deploy/", body, format="json")


def issue(api, app, label="Hall camera"):
    answer = api.post("/api/v1/keys/", {"application": app.pk, "label": label}, format="json")
    assert answer.status_code == 201, answer.content
    return answer.json()


def test_deploy_creates_live_apps_with_publish_auth_and_restarts_them(wz):
    server, _app, api, standin = wz
    factories.make_application(server, "events")  # new in Tally, absent on Wowza
    standin.add_app("vod", app_type="VOD")  # not Tally's: left alone
    dry = deploy(api, server, dry_run=True)
    assert dry.status_code == 200, dry.content
    plan = dry.json()["validation"]["output"]
    assert "create application events" in plan and "set publish security of live and restart it" in plan
    assert "+application events" in dry.json()["diff"] and "publishRequirePassword true" in dry.json()["text"]
    assert sorted(standin.apps()) == ["live", "vod"] and not ConfigRevision.objects.exists()  # nothing done

    answer = deploy(api, server)
    assert answer.status_code == 200, answer.content
    revision = answer.json()["revision"]
    assert revision["status"] == "applied" and "restarted application live" in revision["output"]
    assert sorted(standin.apps()) == ["events", "live", "vod"]
    for name in ("live", "events"):
        active = standin.security(name, active=True)
        assert active["publishRequirePassword"] is True and active["publishAuthenticationMethod"] == "digest"
    assert standin.restarts("live") == 1
    with pytest.raises(PublishRefused):
        standin.publish("live", "anyone")  # publishing without credentials is over

    standin.clear_exchanges()
    again = deploy(api, server).json()
    assert again["changed"] is False and again["revision"]["output"] == "nothing to change"
    assert standin.restarts("live") == 1  # no needless restart
    # Nothing to change: the state is read once before (shared by the diff, the plan and the sync) and once
    # after (the verification), and nothing is written.
    calls = [(e.method, e.path.removeprefix(wowza.VHOST_PATH)) for e in standin.exchanges if e.status != 401]
    assert {method for method, _ in calls} == {"GET"}
    assert sorted(calls).count(("GET", "/applications")) == 2 and calls.count(("GET", "/publishers")) == 2
    listed = api.get(f"/api/v1/servers/{server.pk}/config-revisions/").json()["results"]
    assert [r["number"] for r in listed] == [2, 1]


def test_keys_are_publisher_entries_from_issue_to_revoke(wz):
    server, app, api, standin = wz
    deploy(api, server)
    body = issue(api, app)
    key = StreamKey.objects.get(pk=body["id"])
    assert body["username"] == f"tally-{key.pk}" and body["obs_stream_key"] == key.public_name
    assert body["wowza"] == f"Wowza publisher tally-{key.pk} written"
    assert body["publish_url"] == (f"rtmp://tally-{key.pk}:{body['secret']}@127.0.0.1/live/{key.public_name}")
    assert standin.publishers("vhost") == {f"tally-{key.pk}": body["secret"]}
    with pytest.raises(PublishRefused):
        standin.publish("live", key.public_name, username=body["username"], password="guess")
    standin.publish("live", key.public_name, username=body["username"], password=body["secret"])
    assert standin.streams("live") == [key.public_name]

    rotated = api.post(f"/api/v1/keys/{key.pk}/rotate/", {}, format="json").json()
    assert rotated["secret"] != body["secret"] and standin.publishers("vhost")[body["username"]] == rotated["secret"]
    assert standin.streams("live") == [key.public_name]  # the live encoder keeps going until it reconnects
    standin.remove_stream("live", key.public_name)
    with pytest.raises(PublishRefused):
        standin.publish("live", key.public_name, username=body["username"], password=body["secret"])  # old one
    standin.publish("live", key.public_name, username=body["username"], password=rotated["secret"])

    revoked = api.post(f"/api/v1/keys/{key.pk}/revoke/", {"reason": "stolen"}, format="json").json()
    assert revoked["wowza"] == f"Wowza: publisher tally-{key.pk} deleted, stream disconnected"
    assert standin.streams("live") == [] and standin.publishers("vhost") == {}
    with pytest.raises(PublishRefused):
        standin.publish("live", key.public_name, username=body["username"], password=rotated["secret"])
    key.refresh_from_db()
    assert key.wowza_secret == ""  # not kept once revoked


def test_the_periodic_sync_deletes_expired_entries_and_restores_lost_ones(wz):
    server, app, api, standin = wz
    deploy(api, server)
    lasting, expiring = issue(api, app, "Lasting"), issue(api, app, "Expiring")
    standin.publish("live", expiring["obs_stream_key"], username=expiring["username"], password=expiring["secret"])
    StreamKey.objects.filter(pk=expiring["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    standin.clear_exchanges()
    # Wowza lost an entry (reinstalled, edited by hand): the stored secret brings it back.
    api_url = f"{standin.url}/v2/servers/_defaultServer_/vhosts/_defaultVHost_/publishers/{lasting['username']}"
    assert factories_delete(api_url, standin) == 200
    outcome = wowza.sync_all()["wowza-1"]
    assert f"created publisher {lasting['username']}" in outcome
    assert f"deleted publisher {expiring['username']}" in outcome and "disconnected live/expiring" in outcome
    assert standin.publishers("vhost") == {lasting["username"]: lasting["secret"]}
    assert standin.streams("live") == []
    assert wowza.sync_all()["wowza-1"] == "nothing to change"


def factories_delete(url, standin):
    """Delete a publisher entry behind Tally's back, as an operator on the Wowza host would."""
    import httpx

    auth = httpx.DigestAuth(standin.username, standin.password)
    return httpx.delete(url, auth=auth, headers=wowza.JSON_HEADERS).status_code


def test_graceful_leaves_the_restart_pending_while_streams_are_live(wz):
    server, _app, api, standin = wz
    standin.add_stream("live", "already-on", "192.0.2.20")
    first = deploy(api, server, mode="graceful").json()["revision"]
    assert first["status"] == "applied" and "restart of live left pending (1 live stream(s))" in first["output"]
    assert first["result"]["restart_pending"] == ["live"]
    assert standin.restarts("live") == 0 and standin.streams("live") == ["already-on"]
    assert standin.security("live", active=True)["publishRequirePassword"] is False  # saved, not applied
    assert "restart live (its publish security is saved but not applied yet)" in deploy(
        api, server, dry_run=True).json()["validation"]["output"]  # fmt: skip
    second = deploy(api, server, mode="reconnect").json()["revision"]
    assert "restarted application live (1 live stream(s) reconnect)" in second["output"]
    assert second["result"]["restart_pending"] == []
    assert standin.restarts("live") == 1 and standin.security("live", active=True)["publishRequirePassword"] is True


def test_wowza_failures_are_clear_and_lose_nothing(wz):
    server, app, api, standin = wz
    server.wowza_password = "wrong"
    server.save()
    refused = deploy(api, server)
    assert refused.status_code == 502 and "refused the REST credentials" in refused.json()["detail"]
    body = issue(api, app)  # the key is issued anyway; Wowza gets its entry at the next sync
    assert "not written yet" in body["wowza"] and standin.publishers("vhost") == {}
    assert "ERROR" in wowza.sync_all()["wowza-1"]
    server.wowza_password = standin.password
    server.save()
    assert f"created publisher {body['username']}" in wowza.sync_all()["wowza-1"]
    assert standin.publishers("vhost") == {body["username"]: body["secret"]}

    server.wowza_api_url = f"http://127.0.0.1:{free_port()}"
    server.save()
    unreachable = deploy(api, server, dry_run=True)
    assert unreachable.status_code == 502 and "cannot connect" in unreachable.json()["detail"]
    revoked = api.post(f"/api/v1/keys/{body['id']}/revoke/", {}, format="json").json()
    assert revoked["state"] == "revoked" and "the next sync deletes publisher" in revoked["wowza"]

    standin.inject("*", status=500, body=b"<html>Internal error</html>", content_type="text/html")
    server.wowza_api_url = standin.url
    server.save()
    broken = deploy(api, server)
    assert broken.status_code == 502 and "without JSON" in broken.json()["detail"]
    assert not ConfigRevision.objects.filter(server=server).exists()  # nothing half-recorded


def test_rollback_says_wowza_follows_the_database(wz):
    server, _app, api, _standin = wz
    deploy(api, server)
    answer = api.post(f"/api/v1/servers/{server.pk}/rollback/", {}, format="json")
    assert answer.status_code == 409 and "follow Tally's database" in answer.json()["detail"]
    assert [r.status for r in Server.objects.get(pk=server.pk).config_revisions.all()] == ["applied"]


def test_the_deploys_page_previews_and_deploys_a_wowza_server(wz):
    from tests.factories import logged_in

    server, _app, _api, standin = wz
    admin = logged_in(factories.make_user("chief", "admin"))
    url = f"/servers/{server.pk}/deploys/"
    assert "Preview (diff and plan)" in admin.get(url).content.decode()
    preview = admin.post(url, {"action": "preview", "mode": "graceful"}).content.decode()
    assert "set publish security of live and restart it" in preview and standin.restarts("live") == 0
    page = admin.post(url, {"action": "deploy", "mode": "graceful"}, follow=True).content.decode()
    assert "Revision 1 applied through Wowza&#x27;s REST API and read back." in page
    assert standin.security("live", active=True)["publishRequirePassword"] is True
    refused = admin.post(url, {"action": "rollback"}, follow=True).content.decode()
    assert "follow Tally&#x27;s database" in refused and ConfigRevision.objects.count() == 1
    assert "Config deploys" in admin.get(f"/servers/{server.pk}/").content.decode()


def test_a_sync_that_fails_half_way_is_recorded_with_what_it_did(wz):
    server, _app, api, standin = wz
    restart = "/v2/servers/_defaultServer_/vhosts/_defaultVHost_/applications/live/actions/restart"
    standin.inject(restart, status=500, body={"success": False, "code": "500", "message": "boom",
                                              "wowzaServer": "4.7.0"})  # fmt: skip
    answer = deploy(api, server)
    assert answer.status_code == 502, answer.content
    revision = answer.json()["revision"]
    assert revision["status"] == "failed"
    assert revision["output"].startswith("set publish security of live")
    assert "ERROR: Wowza answered HTTP 500 to PUT" in revision["output"] and "boom" in revision["output"]
    assert standin.restarts("live") == 0
    standin.clear_faults()
    again = deploy(api, server).json()["revision"]  # the saved security matches now: the restart is still due
    assert again["status"] == "applied" and "restarted application live" in again["output"]
    assert standin.security("live", active=True)["publishRequirePassword"] is True
