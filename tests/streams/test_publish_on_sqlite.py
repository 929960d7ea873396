"""The publish hot path on the embedded default (SQLite), through the WSGI route gunicorn serves.

streams.hotpath takes a different statement path on SQLite (no single insert-and-touch statement), and
the rest of the suite runs on PostgreSQL, so this drives the decisions in a process of its own.
"""

import json
import subprocess

from tests.console.test_modes import PYTHON, ROOT, clean_env

SCRIPT = """
import io, json
from urllib.parse import urlencode
from django.core.management import call_command
call_command("migrate", verbosity=0)
from console.wsgi import application
from streams.models import PublishReject, PublishSession
from tests import factories

app = factories.make_application(factories.make_server())
one = factories.issue_key(app, "One", max_publishers=1)
other = factories.issue_key(app, "Other")

def publish(secret, client_id):
    body = urlencode({"app": "live", "flashver": "FMLE/3.0", "addr": "127.0.0.1", "clientid": client_id,
                      "call": "publish", "name": secret}).encode()
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/hooks/nginx-rtmp/{app.server.pk}/publish",
               "QUERY_STRING": f"secret={app.server.hook_secret}", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1",
               "HTTP_HOST": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "wsgi.url_scheme": "http"}
    answer = {}
    result = application(environ, lambda status, headers: answer.update(status=status, headers=dict(headers)))
    result.close()
    return [answer["status"], answer["headers"].get("Location", "")]

answers = [publish(one.secret, "1"), publish(one.secret, "1"), publish(one.secret, "2"), publish(other.secret, "1")]
one.key.refresh_from_db()
print(json.dumps({
    "answers": answers,
    "sessions": sorted(PublishSession.objects.values_list("client_id", "public_name", "end_reason")),
    "rejects": list(PublishReject.objects.values_list("reason", flat=True)),
    "last_used": one.key.last_used_at is not None,
}))
"""


def test_publish_decisions_on_sqlite(tmp_path):
    env = clean_env(TALLY_VAR_DIR=str(tmp_path), LOG_LEVEL="CRITICAL")
    result = subprocess.run([PYTHON, "manage.py", "shell", "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["answers"] == [
        ["302 Found", "one"],  # a new session
        ["302 Found", "one"],  # nginx repeats on_publish: same answer, no second session
        ["403 Forbidden", ""],  # the key allows one publisher
        ["302 Found", "other"],  # client id 1 again with another key: the old session was left over (stale)
    ]
    assert outcome["sessions"] == [["1", "one", "stale"], ["1", "other", ""]]
    assert outcome["rejects"] == ["too_many_publishers"] and outcome["last_used"]
