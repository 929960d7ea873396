"""The deploys page through a real tally-agent and nginx (the `site` of tests/streams/test_deploys.py):
preview shows the diff and nginx's verdict and changes nothing; deploy and rollback are listed with
their outcome; the server page shows the deployed revision; only admins see any of it."""

from monitoring.models import Mute
from streams.models import ConfigRevision
from tests import factories
from tests.factories import logged_in
from tests.streams.test_deploys import agent_factory, live_file, site  # noqa: F401  (fixtures)


def test_preview_deploy_and_rollback_from_the_page(site):  # noqa: F811
    server, nginx = site.server, site.nginx
    original = live_file(nginx)
    factories.make_application(server, "events")
    admin = logged_in(factories.make_user("chief", "admin"))
    url = f"/servers/{server.pk}/deploys/"
    assert "No deploys yet" in admin.get(url).content.decode()

    preview = admin.post(url, {"action": "preview", "mode": "graceful"}).content.decode()
    assert "nginx -t: ok" in preview and "+        application events {" in preview
    assert live_file(nginx) == original and not ConfigRevision.objects.exists()

    page = admin.post(url, {"action": "deploy", "mode": "graceful"}, follow=True).content.decode()
    assert "Revision 1 applied" in page and 'data-revision="1"' in page and "application events" in live_file(nginx)
    assert Mute.objects.filter(server=server).exists()
    detail = admin.get(f"/servers/{server.pk}/").content.decode()
    assert "revision 1 <span" in detail and "changes not deployed yet" not in detail

    page = admin.post(url, {"action": "rollback"}, follow=True).content.decode()
    assert "Revision 2: the previous config is back" in page and live_file(nginx) == original
    assert "changes not deployed yet" in admin.get(f"/servers/{server.pk}/").content.decode()

    bad = admin.post(url, {"action": "explode", "mode": "graceful"}, follow=True).content.decode()
    assert "Unknown action" in bad and ConfigRevision.objects.count() == 2


def test_only_admins_see_deploys(site):  # noqa: F811
    server = site.server
    for role in ("viewer", "operator"):
        client = logged_in(factories.make_user(role, role))
        assert client.get(f"/servers/{server.pk}/deploys/").status_code == 403
        assert client.post(f"/servers/{server.pk}/deploys/", {"action": "deploy"}).status_code == 403
    assert not ConfigRevision.objects.exists()
