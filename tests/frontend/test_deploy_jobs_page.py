"""The deploy job pages (admins only): ``/deploys/`` lists the servers in the order a job runs them (origins
and edges first, proxies last) and explains the ones it cannot deploy to; its form starts a job and leads
to ``/deploys/<id>/``, which shows each step's status and output and can cancel. Hostile forms get the form
back with a 400 and the reason, and no job. The real deploys go through the ``fleet`` of
tests/streams/test_deploy_jobs.py (two nginx-rtmp origins and a TCP proxy, each with a real tally-agent).

The browser test runs the whole product: daphne with its in-process background (the job runs in a thread
of the web process) on the test database and Redis, headless Chromium following the job page over the
websocket. Its waits are bounds against hanging, never speed targets; the durations are printed (``-s``).
"""

import itertools
import re
import threading
import time

import lxml.html
import pytest
from django.db import connections
from django.test import Client

from console.models import AuditEntry
from streams import jobs
from streams.models import DeployJob, DeployStep, Server
from tests import factories
from tests.deploy.test_agent import agent_factory  # noqa: F401  (fixture)
from tests.factories import logged_in
from tests.frontend.browser import browser, live_console, log_in  # noqa: F401  (fixtures)
from tests.live_console import run_console
from tests.streams.test_deploy_jobs import change_everything, fleet, live_file  # noqa: F401  (fixture)

AGENT = {"agent_url": "http://127.0.0.1:9", "agent_token": "t" * 32}  # deployable on paper; nothing listens
CANCEL = "//*[@id='deploy-job']//button[@name='action'][@value='cancel']"
WAIT_MS = 60_000  # a bound against hanging, not a speed target


def tree(response):
    return lxml.html.fromstring(response.content.decode())


def text_of(element):
    return " ".join(element.text_content().split())


def errors(response):
    return [text_of(li) for li in tree(response).xpath("//*[contains(@class, 'errors')]//li")]


def form_rows(response):
    """(order, name, checkbox state, "Through" column) of each server row of the new-job form."""
    rows = []
    for row in tree(response).xpath("//tr[@data-server]"):
        box = row.xpath(".//input[@name='servers']")[0]
        cells = row.xpath("./td")
        state = "disabled" if box.get("disabled") is not None else "checked" if box.get("checked") is not None else ""
        rows.append((int(text_of(cells[1])), text_of(cells[2]), state, text_of(cells[5])))
    return rows


def steps_shown(response):
    """(position, data-status, text) of each step of a job page."""
    return [(int(li.get("data-step")), li.get("data-status"), text_of(li))
            for li in tree(response).xpath("//*[@id='deploy-job']//li[@data-step]")]  # fmt: skip


def progress(response):
    bar = tree(response).xpath("//*[@id='deploy-job']//progress")[0]
    return int(bar.get("value")), int(bar.get("max"))


def job_status(response):
    return text_of(tree(response).xpath("//*[@data-testid='job-status']")[0])


def make_job(servers, status=DeployJob.Status.QUEUED):
    """A job straight in the database (``create_job`` refuses servers without an agent)."""
    job = DeployJob.objects.create(status=status, author_name="chief")
    for position, server in enumerate(servers, start=1):
        DeployStep.objects.create(job=job, server=server, position=position)
    return job


# --- the form --------------------------------------------------------------------------------------------


def test_the_form_lists_servers_in_run_order_and_explains_the_ones_it_cannot_deploy(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    empty = admin.get("/deploys/")
    assert empty.status_code == 200 and "No servers yet." in empty.content.decode()
    assert "No deploy jobs yet." in empty.content.decode()

    factories.make_server("a-front", role=Server.Role.PROXY, **AGENT)  # first by name, but a proxy: last
    factories.make_server("b-front", role=Server.Role.PROXY)
    factories.make_server("f-wowza", kind=Server.Kind.WOWZA, wowza_api_url="http://127.0.0.1:9", enabled=False)
    factories.make_server("e-wowza", kind=Server.Kind.WOWZA, wowza_api_url="http://127.0.0.1:9")
    factories.make_server("d-edge", role=Server.Role.EDGE)
    factories.make_server("c-origin", **AGENT)
    page = admin.get("/deploys/")
    assert page.status_code == 200
    assert form_rows(page) == [
        (1, "c-origin", "checked", "tally-agent"),
        (2, "d-edge", "disabled", "cannot deploy: no tally-agent URL and token"),
        (3, "e-wowza", "checked", "REST API"),
        (4, "f-wowza", "disabled", "cannot deploy: disabled"),
        (5, "a-front", "checked", "tally-agent"),
        (6, "b-front", "disabled", "cannot deploy: no tally-agent URL and token"),
    ]
    html = tree(page)
    assert [o.get("value") for o in html.xpath("//select[@name='mode']/option")] == ["", "graceful", "reconnect"]
    assert html.xpath("//input[@name='stop_on_failure']")[0].get("checked") is not None  # stop by default
    assert not errors(page)


def test_the_form_starts_a_job_and_leads_to_its_page(db, django_capture_on_commit_callbacks):
    chief = factories.make_user("chief", "admin")
    admin = logged_in(chief)
    front = factories.make_server("front", role=Server.Role.PROXY, **AGENT)
    origin = factories.make_server("origin", **AGENT)
    factories.make_server("other", **AGENT)  # not chosen
    with django_capture_on_commit_callbacks(execute=False) as started:
        answer = admin.post("/deploys/", {"servers": [front.pk, origin.pk, origin.pk], "mode": "reconnect"})
    job = DeployJob.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/deploys/{job.pk}/"
    assert len(started) == 1  # handed to a worker once committed
    assert (job.status, job.mode, job.author, job.author_name) == ("queued", "reconnect", chief, "chief")
    assert not job.stop_on_failure  # the box was left unticked
    assert [(s.position, s.server.name) for s in job.steps.select_related("server")] == [(1, "origin"), (2, "front")]

    page = admin.get(answer["Location"])
    assert f"Deploy job {job.pk} queued." in page.content.decode()
    assert job_status(page) == "Queued" and progress(page) == (0, 2)
    assert [(n, status) for n, status, _ in steps_shown(page)] == [(1, "pending"), (2, "pending")]
    assert "goes on after a failure" in page.content.decode() and "reload reconnect" in page.content.decode()
    assert tree(page).xpath(CANCEL)  # still cancellable
    listing = tree(admin.get("/deploys/"))
    row = listing.xpath(f"//tr[@data-job='{job.pk}']")[0]
    assert "Queued" in text_of(row) and "origin, front" in text_of(row)

    admin.post("/deploys/", {"servers": [origin.pk], "stop_on_failure": "on"})
    assert DeployJob.objects.order_by("-pk").first().stop_on_failure  # the form's default, ticked


def test_hostile_forms_get_the_form_back_with_the_reason_and_no_job(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    ready = factories.make_server("ready", **AGENT)
    factories.make_server("bare")
    wowza = factories.make_server("wz", kind=Server.Kind.WOWZA, wowza_api_url="http://127.0.0.1:9", enabled=False)
    bare = Server.objects.get(name="bare")
    cases = [  # what was sent, and what the page must say (a part of it)
        ({}, "Choose at least one server."),
        ({"servers": ""}, "Choose at least one server."),
        # Ids that are no server's: the message is about the servers.
        ({"servers": ["abc", "-1", "1.5", " 1", "0x1", "1e3"]}, "server"),
        ({"servers": ["999999"]}, "server"),  # no such server
        ({"servers": ["9" * 40]}, "server"),  # beyond any integer column
        ({"servers": [bare.pk]}, "Cannot deploy to bare: no tally-agent URL and token."),
        ({"servers": [ready.pk, wowza.pk]}, "Cannot deploy to wz: disabled."),
        ({"servers": [ready.pk], "mode": "sideways"}, "mode must be one of graceful, reconnect, or empty."),
        ({"servers": [ready.pk], "mode": "<script>"}, "mode must be one of graceful, reconnect, or empty."),
    ]
    for body, message in cases:
        answer = admin.post("/deploys/", body)
        said = " ".join(errors(answer))
        assert answer.status_code == 400 and message.lower() in said.lower(), (body, answer.status_code, said)
        assert [name for _, name, _, _ in form_rows(answer)] == ["bare", "ready", "wz"]  # the form is back
    assert not DeployJob.objects.exists()

    # More than a job may hold: 501 deployable servers, all ticked.
    many = Server.objects.bulk_create(Server(name=f"edge-{n:03d}", host="127.0.0.1", **AGENT) for n in range(501))
    answer = admin.post("/deploys/", {"servers": [s.pk for s in many]})
    assert answer.status_code == 400 and errors(answer) == ["At most 500 servers per job."]
    # Thousands of ids: Django refuses the body itself (more than DATA_UPLOAD_MAX_NUMBER_FIELDS fields).
    answer = admin.post("/deploys/", {"servers": [ready.pk] * 3000})
    assert answer.status_code == 400
    assert not DeployJob.objects.exists()


def test_a_unicode_digit_id_is_refused_not_a_server_error(db):
    client = Client(raise_request_exception=False)
    client.force_login(factories.make_user("chief", "admin"))
    answer = client.post("/deploys/", {"servers": ["²"]})
    assert answer.status_code == 400 and "Server ids must be numbers." in answer.content.decode()


def test_ids_the_job_cannot_honour_are_refused_not_dropped(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    ready = factories.make_server("ready", **AGENT)
    gone = factories.make_server("gone", **AGENT)
    gone_pk = gone.pk
    gone.delete()  # another admin deleted it while this form was open
    arabic = str(ready.pk).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    cases = {
        "a deleted server next to a real one": [ready.pk, gone_pk],
        "a non-number next to a real one": [ready.pk, "abc"],
        "the id in Arabic-Indic digits": [arabic],  # int() would read it
    }
    answers = {case: admin.post("/deploys/", {"servers": ids}) for case, ids in cases.items()}
    assert {case: answer.status_code for case, answer in answers.items()} == dict.fromkeys(cases, 400)
    assert all(errors(answer) for answer in answers.values())
    assert not DeployJob.objects.exists()


def test_thousands_of_ids_get_a_page_that_says_why(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    ready = factories.make_server("ready", **AGENT)
    answer = admin.post("/deploys/", {"servers": [ready.pk] * 3000})
    assert answer.status_code == 400 and "too many" in answer.content.decode().lower()


def test_only_admins_see_or_use_the_deploy_job_pages(db):
    server = factories.make_server("ready", **AGENT)
    job = make_job([server])
    for username, role in (("watcher", "viewer"), ("oncall", "operator"), ("nobody", None)):
        client = logged_in(factories.make_user(username, role))
        assert client.get("/deploys/").status_code == 403, role
        assert client.post("/deploys/", {"servers": [server.pk]}).status_code == 403, role
        assert client.get(f"/deploys/{job.pk}/").status_code == 403, role
        assert client.post(f"/deploys/{job.pk}/", {"action": "cancel"}).status_code == 403, role
    anonymous = Client()
    for answer in (anonymous.get("/deploys/"), anonymous.post(f"/deploys/{job.pk}/", {"action": "cancel"})):
        assert answer.status_code == 302 and answer["Location"].startswith("/login/")
    job.refresh_from_db()
    assert DeployJob.objects.count() == 1 and job.status == "queued"
    admin = logged_in(factories.make_user("chief", "admin"))
    assert admin.get(f"/deploys/{job.pk + 1000}/").status_code == 404
    assert admin.post(f"/deploys/{job.pk + 1000}/", {"action": "cancel"}).status_code == 404


# --- the job page ----------------------------------------------------------------------------------------


def test_a_real_job_over_the_fleet_shows_every_step_with_its_output(fleet, monkeypatch):  # noqa: F811
    change_everything(fleet)
    handed = []
    monkeypatch.setattr(jobs, "start", handed.append)  # this test runs the job itself, as the worker would
    admin = logged_in(factories.make_user("chief", "admin"))
    form = admin.get("/deploys/")
    assert [(name, state) for _, name, state, _ in form_rows(form)] == [
        ("origin-a", "checked"), ("origin-b", "checked"), ("front", "checked")]  # fmt: skip
    chosen = [row.get("value") for row in tree(form).xpath("//input[@name='servers'][@checked]")]
    answer = admin.post("/deploys/", {"servers": chosen, "mode": "", "stop_on_failure": "on"})
    job = DeployJob.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/deploys/{job.pk}/" and handed == [job.pk]

    started = time.monotonic()
    jobs.run_job(job.pk)
    print(f"\nthe job over 3 servers took {time.monotonic() - started:.2f} s")
    page = admin.get(answer["Location"])
    assert job_status(page) == "Succeeded" and progress(page) == (3, 3)
    assert "3 of 3 servers done" in text_of(tree(page).xpath("//*[@id='job-status']")[0])
    shown = steps_shown(page)
    assert [(n, status) for n, status, _ in shown] == [(1, "applied"), (2, "applied"), (3, "applied")]
    for (_, _, text), name in zip(shown, ("origin-a (Origin)", "origin-b (Origin)", "front (TCP proxy)")):
        assert text.startswith(name) and "Applied revision 1 in" in text, text
    assert not tree(page).xpath("//li[@data-step]//details")  # nginx -t -q says nothing when all is well
    assert not tree(page).xpath(CANCEL)  # over: nothing to cancel
    for name in ("origin-a", "origin-b"):
        assert "application events" in live_file(fleet.nginx[name])

    again = admin.post(answer["Location"], {"action": "cancel"}, follow=True)
    assert "The job has already finished (succeeded)." in again.content.decode()
    job.refresh_from_db()
    assert job.status == "succeeded"
    row = tree(admin.get("/deploys/")).xpath(f"//tr[@data-job='{job.pk}']")[0]
    assert "Succeeded" in text_of(row) and "origin-a, origin-b, front" in text_of(row)

    # A second job that nginx -t refuses on origin-b: its output is on the page, unfolded; the proxy is skipped.
    broken = fleet.origins[0]  # origin-b
    app = broken.applications.get(name="live")
    app.settings = {**app.settings, "push_targets": ["rtmp://no-such-host.invalid/live"]}
    app.save()
    answer = admin.post("/deploys/", {"servers": chosen, "mode": "graceful", "stop_on_failure": "on"})
    second = DeployJob.objects.get(pk=handed[-1])
    jobs.run_job(second.pk)
    page = admin.get(answer["Location"])
    assert answer["Location"] == f"/deploys/{second.pk}/" and job_status(page) == "Failed" and progress(page) == (3, 3)
    shown = steps_shown(page)
    assert [(n, status) for n, status, _ in shown] == [(1, "unchanged"), (2, "failed"), (3, "skipped")]
    assert "Unchanged revision 2" in shown[0][2] and "Failed revision 2" in shown[1][2]
    refused = tree(page).xpath("//li[@data-step='2']//details")[0]
    output = text_of(refused.xpath(".//pre")[0])
    assert refused.get("open") is not None and output.startswith("Refused by nginx -t: nginx: [emerg]"), output
    assert 'host not found in url "no-such-host.invalid/live"' in output, output
    assert "an earlier server failed" in shown[2][2]


def test_a_failed_job_shows_why_and_what_it_skipped(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    job = make_job([factories.make_server("no-agent"), factories.make_server("after-it")])
    jobs.run_job(job.pk)  # what the worker runs: the first server has no agent
    page = admin.get(f"/deploys/{job.pk}/")
    assert job_status(page) == "Failed" and progress(page) == (2, 2)
    (first, second) = steps_shown(page)
    assert first[:2] == (1, "failed") and "no-agent has no agent URL and token" in first[2]
    assert second[:2] == (2, "skipped") and "an earlier server failed" in second[2]
    failed_output = tree(page).xpath("//li[@data-step='1']//details")[0]
    assert failed_output.get("open") is not None  # a failure's output is shown unfolded
    assert tree(page).xpath("//li[@data-step='2']//details")[0].get("open") is None


def test_cancel_from_the_page(db):
    admin = logged_in(factories.make_user("chief", "admin"))
    server = factories.make_server("ready", **AGENT)
    job = make_job([server, server])
    page = admin.post(f"/deploys/{job.pk}/", {"action": "explode"}, follow=True)
    assert "Unknown action." in page.content.decode() and job_status(page) == "Queued"

    page = admin.post(f"/deploys/{job.pk}/", {"action": "cancel"}, follow=True)
    assert page.redirect_chain == [(f"/deploys/{job.pk}/", 302)]
    assert "Cancelled: the server being deployed now finishes, the rest are skipped." in page.content.decode()
    assert job_status(page) == "Cancelled" and "cancelled by chief" in page.content.decode()
    assert [(n, status) for n, status, _ in steps_shown(page)] == [(1, "skipped"), (2, "skipped")]
    assert not tree(page).xpath(CANCEL)
    assert jobs.run_job(job.pk) is None  # never runs now

    again = admin.post(f"/deploys/{job.pk}/", {"action": "cancel"}, follow=True)
    assert "The job has already finished (cancelled)." in again.content.decode()
    finished = make_job([server], status=DeployJob.Status.FAILED)
    answer = admin.post(f"/deploys/{finished.pk}/", {"action": "cancel"}, follow=True)
    assert "The job has already finished (failed)." in answer.content.decode() and job_status(answer) == "Failed"
    audited = AuditEntry.objects.filter(object_type="streams.deployjob", object_id=str(job.pk))
    assert [(entry.action, entry.actor_name) for entry in audited] == [("cancel", "chief")]


# --- in a real browser -----------------------------------------------------------------------------------

# Installed in every document of the context before its scripts run: on a job page, record the steps'
# data-status values each time the page shows something new (the live refresh swaps the whole region,
# so the observer watches <main>, not the region). A reload would start a new, shorter record.
RECORD_STEPS = """
if (/^\\/deploys\\/\\d+\\/$/.test(location.pathname)) {
  window.tallySeen = [];
  const snapshot = () => {
    const region = document.getElementById("deploy-job");
    if (!region) return;
    const steps = [...region.querySelectorAll("li[data-step]")].map((li) => li.dataset.status);
    const bar = region.querySelector("progress");
    const status = region.querySelector("[data-testid=job-status]").textContent.trim();
    const shown = {steps, status, progress: `${bar.value}/${bar.max}`, at: performance.now()};
    const last = window.tallySeen[window.tallySeen.length - 1];
    if (!last || JSON.stringify([last.steps, last.status, last.progress])
        !== JSON.stringify([shown.steps, shown.status, shown.progress])) window.tallySeen.push(shown);
  };
  document.addEventListener("DOMContentLoaded", () => {
    snapshot();
    new MutationObserver(snapshot).observe(document.getElementById("main"),
      {subtree: true, childList: true, attributes: true, characterData: true});
  });
}
"""
RANK = {"pending": 0, "running": 1, "applied": 2}


def in_a_thread(work):
    """ORM work while Playwright's loop runs in this thread (Django refuses it here): in a helper thread."""
    result = []

    def run():
        try:
            result.append(work())
        finally:
            connections.close_all()

    helper = threading.Thread(target=run)
    helper.start()
    helper.join(timeout=60)
    return result[0]


@pytest.mark.browser
def test_an_admin_starts_a_job_and_watches_it_to_the_end_without_reloading(fleet, settings, tmp_path, browser):  # noqa: F811
    change_everything(fleet)  # every server has something to apply
    factories.make_user("chief", "admin")
    # The console renders configs with callbacks to the live server the fleet's nginx were started with.
    with run_console(tmp_path, TALLY_CALLBACK_BASE_URL=settings.CALLBACK_BASE_URL) as console:
        page = browser()
        page.context.add_init_script(RECORD_STEPS)
        log_in(page, console.base, "chief", "/deploys/")
        assert page.locator("input[name=servers]:checked").count() == 3  # every server, by default
        clicked = time.monotonic()
        page.click("button:has-text('Start deploy job')")
        page.wait_for_url(re.compile(r".*/deploys/\d+/$"), timeout=WAIT_MS)
        page.evaluate("window.tallyNoReload = true")
        # Whether the socket opens before or after the job's last message, the page catches up (the test
        # below holds the socket back on purpose).
        page.wait_for_selector("[data-testid=job-status]:has-text('Succeeded')", timeout=WAIT_MS)
        seen_done = time.monotonic() - clicked
        assert page.evaluate("window.tallyNoReload === true")  # followed in place
        seen = page.evaluate("window.tallySeen")
        job_id = int(page.get_attribute("#deploy-job", "data-job"))
        assert page.get_attribute("#deploy-job progress", "value") == "3"
        assert page.get_attribute("#deploy-job progress", "max") == "3"
        assert page.locator("#deploy-job button[value=cancel]").count() == 0

    print(f"\nthe page showed: {[(s['steps'], s['status'], s['progress'], round(s['at'])) for s in seen]}")
    assert seen[-1]["steps"] == ["applied"] * 3 and seen[-1]["status"] == "Succeeded" and seen[-1]["progress"] == "3/3"
    assert len(seen) >= 2 and seen[0]["status"] in ("Queued", "Running")  # it changed in place after loading
    for shown in seen:  # a step is never applied (or started) before the one before it is applied
        for before, step in zip(shown["steps"], shown["steps"][1:]):
            assert step == "pending" or before == "applied", seen
    for earlier, later in itertools.pairwise(seen):  # and nothing ever goes back
        assert all(RANK[a] <= RANK[b] for a, b in zip(earlier["steps"], later["steps"])), seen

    job = in_a_thread(lambda: DeployJob.objects.get(pk=job_id))
    print(f"job {job_id}: {(job.finished - job.started).total_seconds():.2f} s in the worker; "
          f"the page showed it succeeded {seen_done:.2f} s after the click")  # fmt: skip
    assert job.status == "succeeded" and job.author_name == "chief"
    for name in ("origin-a", "origin-b"):
        assert "application events" in live_file(fleet.nginx[name])
    assert "least_conn" not in live_file(fleet.nginx["front"])


# Holds the page's websocket back until the test sets ``window.tallyHold = false``, as a slow network
# would: the socket the page gets relays the events of a real one opened only then.
HOLD_SOCKET = """
window.tallyHold = true;
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends EventTarget {
  constructor(url) {
    super();
    const connect = () => {
      if (window.tallyHold) return setTimeout(connect, 50);
      this.real = new NativeWebSocket(url);
      this.real.addEventListener("open", () => this.dispatchEvent(new Event("open")));
      this.real.addEventListener("message", (e) => this.dispatchEvent(new MessageEvent("message", {data: e.data})));
      this.real.addEventListener("close", (e) => this.dispatchEvent(new CloseEvent("close", {code: e.code})));
    };
    connect();
  }
  send(data) { this.real.send(data); }
  close() { this.real?.close(); }
};
"""


@pytest.mark.browser
def test_a_job_that_ends_before_the_socket_opens_still_shows_its_end(live_console, browser):  # noqa: F811
    server = factories.make_server("unreachable", **AGENT)  # its agent's port is closed: the job fails at once
    factories.make_user("chief", "admin")
    page = browser()
    page.context.add_init_script(HOLD_SOCKET)
    log_in(page, live_console.base, "chief", "/deploys/")
    page.click("button:has-text('Start deploy job')")
    page.wait_for_url(re.compile(r".*/deploys/\d+/$"), timeout=WAIT_MS)
    job_id = int(page.get_attribute("#deploy-job", "data-job"))
    shown_first = page.inner_text("[data-testid=job-status]")

    def job_done():
        deadline = time.monotonic() + 60  # a bound against hanging
        while not DeployJob.objects.get(pk=job_id).done and time.monotonic() < deadline:
            time.sleep(0.1)
        return DeployJob.objects.get(pk=job_id).status

    assert in_a_thread(job_done) == "failed"  # the console ran it while the page was not connected yet
    page.evaluate("window.tallyHold = false")
    page.wait_for_selector("#live-status[data-state=live]", timeout=WAIT_MS)
    print(
        f"\nthe page showed {shown_first!r} for job {job_id} of {server.name}; the job failed before the socket opened"
    )
    # Bounded: once the socket is open, the page catches up on what it missed.
    page.wait_for_selector("[data-testid=job-status]:has-text('Failed')", timeout=10_000)
