"""Deploy jobs over several servers, on real nginx through real tally-agents: two nginx-rtmp origins and the
TCP proxy in front of them (its agent verifies a reload by a new worker and its listener, as a proxy has no
/stat). A real Celery worker runs a job queued through the API, origins first and the proxy last, and
reports each step on the channel layer; a failure stops the job and skips the proxy; without a broker the
web process runs the job in a thread; the beat sweep starts lost jobs and fails jobs whose worker died.
"""

import asyncio
import json
import socket
from datetime import timedelta
from types import SimpleNamespace

import pytest
from channels.layers import get_channel_layer
from django.utils import timezone

from console import audit
from streams import deploys, jobs
from streams.models import ConfigRevision, DeployJob, DeployStep, ProxyMember, Server
from streams.rendering import render_server_config
from tests import factories
from tests.deploy.test_agent import TOKEN, agent_factory  # noqa: F401  (fixture)
from tests.live_console import run_worker
from tests.nginx import free_port, wait_until

BOUND_S = 60  # against hanging only


@pytest.fixture
def fleet(transactional_db, live_server, nginx_factory, agent_factory, settings):  # noqa: F811
    settings.CALLBACK_BASE_URL = f"http://127.0.0.1:{live_server.thread.port}"
    proxy_port = free_port()
    proxy = factories.make_server("front", host="127.0.0.1", rtmp_port=proxy_port, role=Server.Role.PROXY,
                                  proxy_method=Server.ProxyMethod.LEAST_CONN, nginx_prefix_paths=True)  # fmt: skip
    origins, nginxes = [], {}
    for name in ("origin-b", "origin-a"):  # created out of order: the job orders by role, then name
        server, http_port = factories.make_loopback_server(name, nginx_prefix_paths=True)
        factories.make_application(server, "live", settings={"on_update": False})
        ProxyMember.objects.create(proxy=proxy, origin=server)
        nginx = nginx_factory(render_server_config(server, callback_base_url=settings.CALLBACK_BASE_URL),
                              http_port=http_port, rtmp_port=server.rtmp_port)  # fmt: skip
        agent = agent_factory(nginx)
        server.agent_url, server.agent_token = f"http://127.0.0.1:{agent.port}", TOKEN
        server.save()
        origins.append(server)
        nginxes[name] = nginx
    front = nginx_factory(render_server_config(proxy, callback_base_url=""), http_port=free_port(),
                          rtmp_port=proxy_port, has_stat=False)  # fmt: skip
    agent = agent_factory(front, "--stat-url", "none", "--verify-tcp", f"127.0.0.1:{proxy_port}")
    proxy.agent_url, proxy.agent_token = f"http://127.0.0.1:{agent.port}", TOKEN
    proxy.save()
    nginxes["front"] = front
    api = factories.token_client(factories.make_user("boss", "admin"))
    return SimpleNamespace(proxy=proxy, origins=origins, nginx=nginxes, api=api)


def live_file(nginx):
    return (nginx.prefix / "conf" / "nginx.conf").read_text()


def change_everything(fleet):
    """A new application on both origins and another balancing method on the proxy."""
    for origin in fleet.origins:
        factories.make_application(origin, "events", settings={"on_update": False})
    fleet.proxy.proxy_method = Server.ProxyMethod.ROUND_ROBIN
    fleet.proxy.save()


async def _collect(channel_layer, channel, job_id, until):
    seen = []
    while True:
        message = (await asyncio.wait_for(channel_layer.receive(channel), timeout=BOUND_S))["message"]
        if message.get("type") == "deploy.job" and message.get("job") == job_id:
            seen.append(message)
            if message["status"] in until:
                return seen


def test_a_celery_worker_deploys_origins_then_the_proxy_and_reports_each_step(fleet, real_redis, tmp_path, settings):
    change_everything(fleet)
    layer = get_channel_layer()
    channel = asyncio.run(layer.new_channel())
    asyncio.run(layer.group_add("fleet", channel))
    with run_worker(tmp_path, TALLY_CALLBACK_BASE_URL=settings.CALLBACK_BASE_URL):
        answer = fleet.api.post("/api/v1/deploy-jobs/", {}, format="json")  # every deployable server
        assert answer.status_code == 202, answer.content
        body = answer.json()
        assert [s["server_name"] for s in body["steps"]] == ["origin-a", "origin-b", "front"]
        assert {s["status"] for s in body["steps"]} == {"pending"}
        messages = asyncio.run(_collect(layer, channel, body["id"], until={"succeeded", "failed"}))
    job = fleet.api.get(f"/api/v1/deploy-jobs/{body['id']}/").json()
    assert job["status"] == "succeeded", json.dumps(job, indent=1)
    assert [(s["server_name"], s["status"]) for s in job["steps"]] == [
        ("origin-a", "applied"), ("origin-b", "applied"), ("front", "applied")]  # fmt: skip
    # Progress went out step by step, in order: each server started, then finished, before the next one.
    steps = [(m["step"]["position"], m["step"]["status"]) for m in messages if "step" in m]
    assert steps == [(1, "running"), (1, "applied"), (2, "running"), (2, "applied"), (3, "running"), (3, "applied")]
    assert messages[-1]["counts"]["applied"] == 3 and messages[-1]["total"] == 3
    for name in ("origin-a", "origin-b"):
        assert "application events" in live_file(fleet.nginx[name])
    assert "least_conn" not in live_file(fleet.nginx["front"])  # round robin: no method directive
    revisions = ConfigRevision.objects.order_by("created")
    assert [(r.server.name, r.status) for r in revisions] == [
        ("origin-a", "applied"), ("origin-b", "applied"), ("front", "applied")]  # fmt: skip
    assert all(r.author_name == "boss" for r in revisions)


def test_a_failure_stops_the_job_and_the_proxy_is_skipped(fleet):
    change_everything(fleet)
    broken = fleet.origins[0]  # origin-b: runs second
    app = broken.applications.get(name="live")
    app.settings = {**app.settings, "push_targets": ["rtmp://no-such-host.invalid/live"]}
    app.save()
    front_before = live_file(fleet.nginx["front"])
    job = jobs.create_job(audit.Actor(), None)
    jobs.run_job(job.pk)  # what the worker runs
    job.refresh_from_db()
    steps = list(job.steps.select_related("server", "revision"))
    assert job.status == "failed" and job.finished is not None
    assert [(s.server.name, s.status) for s in steps] == [("origin-a", "applied"), ("origin-b", "failed"),
                                                         ("front", "skipped")]  # fmt: skip
    assert steps[1].revision.status == "invalid" and "host not found" in steps[1].message
    assert steps[2].message == "an earlier server failed" and steps[2].revision is None
    assert live_file(fleet.nginx["front"]) == front_before  # the proxy was not touched


def test_going_on_after_a_failure_when_asked(fleet):
    fleet.origins[1].agent_token = "wrong-token-0123456789"  # origin-a: the agent refuses
    fleet.origins[1].save()
    job = jobs.create_job(audit.Actor(), None, stop_on_failure=False, mode="graceful")
    jobs.run_job(job.pk)
    job.refresh_from_db()
    outcome = [(s.server.name, s.status) for s in job.steps.select_related("server")]
    assert job.status == "failed" and outcome == [("origin-a", "failed"), ("origin-b", "unchanged"),
                                                  ("front", "unchanged")]  # fmt: skip
    assert "refused the token" in job.steps.get(position=1).message
    assert jobs.run_job(job.pk) is None  # a finished job is never run again


def test_without_a_broker_the_web_process_runs_the_job(fleet, settings):
    settings.BACKGROUND_IN_PROCESS = True
    change_everything(fleet)
    answer = fleet.api.post("/api/v1/deploy-jobs/", {"servers": [fleet.proxy.pk, fleet.origins[0].pk]},
                            format="json")  # fmt: skip
    assert answer.status_code == 202
    job_id = answer.json()["id"]
    assert wait_until(lambda: DeployJob.objects.get(pk=job_id).done, timeout_s=BOUND_S)
    job = fleet.api.get(f"/api/v1/deploy-jobs/{job_id}/").json()
    assert job["status"] == "succeeded"
    assert [(s["server_name"], s["status"]) for s in job["steps"]] == [("origin-b", "applied"), ("front", "applied")]
    assert "application events" not in live_file(fleet.nginx["origin-a"])  # not in the job


def _job(servers, status=DeployJob.Status.QUEUED, **fields):
    job = DeployJob.objects.create(status=status, **fields)
    for position, server in enumerate(servers, start=1):
        DeployStep.objects.create(job=job, server=server, position=position)
    return job


def test_the_sweep_fails_a_job_whose_worker_died_and_starts_a_lost_one(db):
    server = factories.make_server("no-agent-here")
    long_ago = timezone.now() - timedelta(hours=1)
    dead = _job([server, server], status=DeployJob.Status.RUNNING, started=long_ago, heartbeat=long_ago)
    DeployStep.objects.filter(job=dead, position=1).update(status="running", started=long_ago)
    lost = _job([server])
    DeployJob.objects.filter(pk=lost.pk).update(created=long_ago)
    fresh = _job([server])  # just queued: its own start message is still on its way
    jobs.sweep()
    dead.refresh_from_db()
    assert dead.status == "failed" and dead.message == "the worker running the job stopped"
    assert list(dead.steps.values_list("status", flat=True)) == ["failed", "skipped"]
    lost.refresh_from_db()
    assert lost.status == "failed"  # it ran: its server has no agent, so its one step failed
    assert "no agent URL and token" in lost.steps.get().message
    fresh.refresh_from_db()
    assert fresh.status == "queued"


def test_cancel_stops_before_the_next_server(db):
    server = factories.make_server("no-agent-either")
    job = _job([server, server])
    assert jobs.cancel(job, audit.Actor())
    job.refresh_from_db()
    assert job.status == "cancelled" and job.finished is not None
    assert list(job.steps.values_list("status", flat=True)) == ["skipped", "skipped"]
    assert not jobs.cancel(job, audit.Actor())  # already over
    assert jobs.run_job(job.pk) is None


def test_the_api_refuses_bad_jobs_clearly(db):
    admin = factories.token_client(factories.make_user("chief", "admin"))
    bare = factories.make_server("bare")  # no agent: cannot be deployed to
    ready = factories.make_server("ready", agent_url="http://127.0.0.1:9", agent_token="t" * 32)
    wowza = factories.make_server("wz", kind="wowza", wowza_api_url="http://127.0.0.1:9", enabled=False)
    cases = [
        ({"servers": [bare.pk]}, "bare: no tally-agent URL and token"),
        ({"servers": [wowza.pk]}, "wz: disabled"),
        ({"servers": []}, "Choose at least one server"),
        ({"servers": [999999, ready.pk, 999998]}, "No such server: 999998, 999999."),
        ({"servers": [2**70]}, "less than or equal to"),
        ({"servers": ["one"]}, "A valid integer is required"),
        ({"servers": "all"}, "Expected a list"),
        ({"servers": [ready.pk], "mode": "sideways"}, "is not a valid choice"),
        ({"servers": [ready.pk], "stop_on_failure": "perhaps"}, "Must be a valid boolean"),
        ({"servers": [ready.pk], "colour": "red"}, "colour"),
        ({"servers": [ready.pk] * 501}, "no more than 500"),
    ]
    for body, message in cases:
        answer = admin.post("/api/v1/deploy-jobs/", body, format="json")
        assert answer.status_code == 400 and message in answer.content.decode(), (body, answer.content)
    assert not DeployJob.objects.exists()  # nothing half-written
    assert admin.post("/api/v1/deploy-jobs/", "[", content_type="application/json").status_code == 400
    viewer = factories.token_client(factories.make_user("watcher", "viewer"))
    assert viewer.get("/api/v1/deploy-jobs/").status_code == 403
    assert viewer.post("/api/v1/deploy-jobs/", {}, format="json").status_code == 403
    job = _job([ready], status=DeployJob.Status.SUCCEEDED)
    assert admin.post(f"/api/v1/deploy-jobs/{job.pk}/cancel/").status_code == 409
    assert admin.get("/api/v1/deploy-jobs/").json()["results"][0]["id"] == job.pk


def test_a_proxy_reload_that_cannot_listen_is_rolled_back(fleet):
    """nginx -t does not bind, so a listen address taken by another program passes it; the reload then keeps
    the old workers, the agent sees no new worker and puts the old file back."""
    before = live_file(fleet.nginx["front"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        fleet.proxy.rtmp_port = squatter.getsockname()[1]
        fleet.proxy.save()
        result = deploys.deploy(fleet.proxy, audit.Actor())
    assert result.revision.status == "rolled_back", result.agent
    assert "no healthy new worker" in result.revision.output
    assert live_file(fleet.nginx["front"]) == before
