"""The Wowza stand-in against the published contract (../shared/contracts/wowza/README.md, "Validating the
test double").

Every request the poller and these tests send, and every response the stand-in answers, is checked with
openapi-core (request and response) against a relaxed in-memory copy of the WSE OpenAPI file, then the
JSON bodies strictly with openapi-schema-validator (openapi-core casts ``"12"`` to 12; the strict check
does not). The relaxed spec cannot say which keys must be present, so the stand-in's bodies must also
cover the key sets and value types of the recorded WSE 4.7.0 responses (golden shapes). Then the error
and auth contract: 401 with the configured ``WWW-Authenticate``, error bodies with a string ``code``,
201/409/404, and ``disconnectStream`` removing the stream. Last, what config deploys rely on: the
application security config (saved, and enforced only from the next restart), the application actions,
vhost publishers, and ``publish`` (an encoder connecting) held to the enforced security.

The module is skipped only when ../shared is absent next to the repository.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
if not SHARED.is_dir():
    pytest.skip(f"the Wowza contract lives in {SHARED}, which is absent here", allow_module_level=True)

import yaml  # noqa: E402
from openapi_core import OpenAPI  # noqa: E402
from openapi_core.testing import MockRequest, MockResponse  # noqa: E402
from openapi_core.validation.request.exceptions import RequestValidationError, SecurityValidationError  # noqa: E402
from openapi_schema_validator import OAS30Validator, oas30_format_checker  # noqa: E402

from monitoring.pollers.wowza import JSON_HEADERS, WowzaPoller  # noqa: E402
from tests.monitoring.polls import fetch  # noqa: E402
from tests.wowza_standin import (  # noqa: E402
    FIXTURES,
    VHOST_PATH,
    Exchange,
    PublishRefused,
    WowzaStandin,
    load_recorded,
    wowza_standin,  # noqa: F401
    wowza_standin_factory,  # noqa: F401
)

CONTRACT = SHARED / "contracts" / "wowza"
SPEC_FILE = CONTRACT / "openapi" / "wowza-streaming-engine-openapi.yml"
EXAMPLES = CONTRACT / "examples"
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
WRITE_METHODS = {"put", "post", "delete", "patch"}
SCALAR_TYPES = {"string", "integer", "number", "boolean"}
NUMBER_REFS = {"#/components/schemas/Long", "#/components/schemas/Integer"}
# Added to the relaxed copy: what real WSE answers (README "Known quirks"), which the spec leaves out.
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "code": {"type": "string"},
        "message": {"type": "string"},
        "wowzaServer": {"type": "string"},
    },
    "required": ["success", "code", "message", "wowzaServer"],
}
WRITE_RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean", "enum": [True]},
        "message": {"type": "string"},
        "data": {"type": "object", "nullable": True},
    },
    "required": ["success", "message"],
}
APP = f"{VHOST_PATH}/applications"


# --- the relaxed contract ----------------------------------------------------------------------------


def _walk(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in list(node.values()):
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def relax(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the relaxed copy the contract README §"Validating the test double" step 1 describes."""
    relaxed = copy.deepcopy(spec)
    for template, item in relaxed["paths"].items():
        shared = {p["name"] for p in item.get("parameters", []) if p.get("in") == "path"}
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            declared = shared | {p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"}
            for name in re.findall(r"{([^}]+)}", template):
                if name not in declared:
                    operation.setdefault("parameters", []).append(
                        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                    )

    def numbers_and_nullable(node: dict[str, Any]) -> None:
        if node.get("$ref") in NUMBER_REFS:
            del node["$ref"]
            node["type"] = "integer"
        if isinstance(node.get("type"), str) and node["type"] in SCALAR_TYPES:
            node["nullable"] = True

    def no_required(node: dict[str, Any]) -> None:
        if isinstance(node.get("required"), list):
            del node["required"]

    _walk(relaxed, numbers_and_nullable)
    _walk(relaxed["components"]["schemas"], no_required)
    schemas = relaxed["components"]["schemas"]
    schemas["WseError"] = ERROR_SCHEMA
    schemas["WseWriteResult"] = WRITE_RESULT_SCHEMA
    for item in relaxed["paths"].values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                _add_responses(operation, write=method in WRITE_METHODS)
    relaxed["servers"] = [{"url": "/"}]
    # The spec declares digestAuth but requires only basicAuth; WSE <= 4.8.5 defaults to digest (README §e).
    relaxed["security"] = [{"basicAuth": []}, {"digestAuth": []}]
    return relaxed


def _add_responses(operation: dict[str, Any], *, write: bool) -> None:
    """Give every response a JSON body schema; write operations also get 201 and 409 (README step 1)."""
    responses = operation.setdefault("responses", {})
    codes = {"200", "400", "401", "404", "500"} | ({"201", "409"} if write else set())
    for code in codes:
        response = responses.setdefault(code, {"description": f"HTTP {code} (as real WSE answers)"})
        if "content" not in response:
            name = "WseWriteResult" if code.startswith("2") else "WseError"
            response["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


@pytest.fixture(scope="module")
def relaxed() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_FILE.open() as handle:
        return relax(yaml.load(handle, Loader=loader))


@pytest.fixture(scope="module")
def contract(relaxed: dict[str, Any]) -> Contract:
    return Contract(relaxed)


class Contract:
    """openapi-core plus the strict body check, over the relaxed spec."""

    def __init__(self, relaxed: dict[str, Any]) -> None:
        self.relaxed = relaxed
        self.openapi = OpenAPI.from_dict(relaxed)
        self.routes = []
        for template, item in relaxed["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")
            literal_segments = sum(1 for part in template.split("/") if part and "{" not in part)
            self.routes.append((literal_segments, pattern, item))
        self.routes.sort(key=lambda route: -route[0])

    def operation(self, method: str, path: str) -> dict[str, Any]:
        """The spec operation for a concrete path: the matching template with the most literal segments."""
        for _, pattern, item in self.routes:
            if pattern.match(path) and method.lower() in item:
                return item[method.lower()]
        raise AssertionError(f"no operation in the contract for {method} {path}")

    def has_path(self, path: str) -> bool:
        return any(pattern.match(path) for _, pattern, _ in self.routes)

    def check(self, exchange: Exchange) -> bool:
        """Validate one exchange: openapi-core request and response, then the strict body checks.

        Return ``True`` for an exchange whose request the contract itself refuses, which the stand-in must
        then have refused too: a method the path does not offer (WSE answers 405; the spec has no operation
        to validate the answer against, so only the error body is checked), or a request openapi-core or the
        strict check rejects, such as an action outside the ``{action}`` enum or a SecurityConfig field of the
        wrong type (WSE answers 400). ``check_all`` counts these, so a test must say how many it sent.
        """
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        methods = {method for _, pattern, item in self.routes if pattern.match(exchange.path) for method in item}
        if self.has_path(exchange.path) and exchange.method.lower() not in methods:
            assert exchange.status == 405, f"{where}: the contract has no such operation, the stand-in must say 405"
            assert exchange.response_headers["Content-Type"] == "application/json", where
            self.strict(ERROR_SCHEMA, exchange.json(), where)
            assert exchange.json()["code"] == "405", where
            return True
        request = MockRequest(
            "http://127.0.0.1",
            exchange.method,
            exchange.path,
            args={key: values[-1] for key, values in parse_qs(exchange.query).items()},
            headers=exchange.request_headers,
            data=exchange.request_body or None,
            content_type=exchange.request_headers.get("Content-Type", "application/json"),
        )
        operation = self.operation(exchange.method, exchange.path)
        refused: list[str] = []
        try:
            self.openapi.validate_request(request)
        except SecurityValidationError:
            # Only a request the stand-in refused may lack acceptable credentials.
            assert exchange.status == 401, f"{where}: the contract refused the request's credentials"
        except RequestValidationError as exc:
            refused.append(f"{exc}: {exc.__cause__}")
        if exchange.request_body and not refused:
            schema = operation["requestBody"]["content"]["application/json"]["schema"]
            refused.extend(self.strict_errors(schema, json.loads(exchange.request_body)))
        if refused:
            assert exchange.status == 400, f"{where}: the contract refuses the request ({refused[0]}), not the stand-in"
        response = MockResponse(
            exchange.response_body,
            status_code=exchange.status,
            headers=exchange.response_headers,
            content_type=exchange.response_headers["Content-Type"],
        )
        self.openapi.validate_response(request, response)
        assert exchange.response_headers["Content-Type"] == "application/json", where
        responses = operation["responses"]
        schema = (responses.get(str(exchange.status)) or responses["default"])["content"]["application/json"]["schema"]
        self.strict(schema, exchange.json(), where)
        return bool(refused)

    def strict_errors(self, schema: dict[str, Any], value: Any) -> list[str]:
        root = {**schema, "components": self.relaxed["components"]}
        errors = sorted(OAS30Validator(root, format_checker=oas30_format_checker).iter_errors(value), key=str)
        return [f"{error.message} at {list(error.absolute_path)}" for error in errors]

    def strict(self, schema: dict[str, Any], value: Any, where: str) -> None:
        """openapi-schema-validator, no casting: ``"12"`` is not an integer, ``1.5`` is not one either."""
        errors = self.strict_errors(schema, value)
        assert not errors, f"{where}: {errors[0]}"


def check_all(contract: Contract, standin: WowzaStandin, *, refused: int = 0) -> int:
    """Validate every exchange the stand-in saw; return how many (so a test can see it was not zero).

    ``refused``: how many requests the test sent that the contract itself refuses (see ``Contract.check``).
    """
    assert standin.errors == [], standin.errors
    off_contract = [exchange for exchange in standin.exchanges if contract.check(exchange)]
    assert len(off_contract) == refused, [f"{e.method} {e.path}?{e.query} -> {e.status}" for e in off_contract]
    return len(standin.exchanges)


# --- helpers -----------------------------------------------------------------------------------------


def client_for(standin: WowzaStandin, *, password: str | None = None) -> httpx.Client:
    """An API client as the console sends: the JSON headers and the stand-in's auth scheme."""
    password = standin.password if password is None else password
    auth: httpx.Auth | None = None
    if standin.auth == "digest":
        auth = httpx.DigestAuth(standin.username, password)
    elif standin.auth == "basic":
        auth = httpx.BasicAuth(standin.username, password)
    return httpx.Client(base_url=standin.url, auth=auth, headers=JSON_HEADERS, timeout=5.0)


def make_server(standin: WowzaStandin) -> Any:
    from streams.models import Server

    return Server(name="wowza-1", kind="wowza", host="127.0.0.1", wowza_api_url=standin.url,
                  wowza_username=standin.username, wowza_password=standin.password, wowza_auth=standin.auth)  # fmt: skip


def shape(value: Any, prefix: str = "$") -> dict[str, set[str]]:
    """Map each key path (``$.a.b``, ``$.list[]``) to the JSON types seen there, recursively."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", type(None): "null",
             list: "array", dict: "object"}  # fmt: skip
    found: dict[str, set[str]] = {prefix: {names[type(value)]}}
    children: list[tuple[str, Any]] = []
    if isinstance(value, dict):
        children = [(f"{prefix}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{prefix}[]", item) for item in value]
    for path, item in children:
        for key, types in shape(item, path).items():
            found.setdefault(key, set()).update(types)
    return found


def assert_covers(double: Any, recorded: Any, what: str) -> None:
    """The double's key paths include every recorded one, with the same JSON types (an int may stand in
    for a recorded float; a recorded ``null`` allows anything)."""
    have, want = shape(double), shape(recorded)
    missing = sorted(set(want) - set(have))
    assert not missing, f"{what}: the stand-in lacks {missing}"
    for path, types in want.items():
        allowed = types | ({"integer"} if "number" in types else set())
        if "null" in types:
            continue
        assert have[path] <= allowed, f"{what}: {path} is {sorted(have[path])}, recorded {sorted(types)}"


# --- the contract files and our copies ---------------------------------------------------------------


def test_fixture_copies_equal_the_contract_recordings() -> None:
    copies = sorted(path.name for path in FIXTURES.glob("*.recorded.json"))
    originals = sorted(path.name for path in EXAMPLES.glob("*.recorded.json"))
    assert copies == originals
    for name in copies:
        assert (FIXTURES / name).read_bytes() == (EXAMPLES / name).read_bytes(), name


RECORDED_RESPONSES = [
    ("getServerStatusConfig", "GET", "/v2/servers/_defaultServer_/status", 200),
    ("getApplicationsConfig", "GET", APP, 200),
    ("getApplicationConfig", "GET", f"{APP}/my_app", 200),
    ("getCurrentApplicationStatistics", "GET", f"{APP}/my_app/monitoring/current", 200),
    ("getInstancesConfig", "GET", f"{APP}/my_app/instances", 200),
    ("getInstanceConfig", "GET", f"{APP}/my_app/instances/_definst_", 200),
    ("getCurrentIncomingStreamStatistics", "GET",
     f"{APP}/my_app/instances/_definst_/incomingstreams/myStream/monitoring/current", 200),
    ("postApplicationsConfig.response-201", "POST", APP, 201),
    ("putApplicationConfig.response-200", "PUT", f"{APP}/my_app", 200),
    ("deleteApplicationConfig.response-200", "DELETE", f"{APP}/my_app", 200),
    ("postPublisherVhostConfig.response-201", "POST", f"{VHOST_PATH}/publishers/encoder1", 201),
    ("deletePublisherVhostConfig.response-200", "DELETE", f"{VHOST_PATH}/publishers/encoder1", 200),
    ("error-404", "GET", f"{APP}/nope", 404),
    ("error-409", "POST", APP, 409),
]  # fmt: skip
RECORDED_REQUESTS = {
    "postApplicationsConfig.response-201": "postApplicationsConfig.request",
    "putApplicationConfig.response-200": "putApplicationConfig.request",
    "postPublisherVhostConfig.response-201": "postPublisherVhostConfig.request",
    "error-409": "postApplicationsConfig.request",
}


@pytest.mark.parametrize(("name", "method", "path", "status"), RECORDED_RESPONSES)
def test_real_wse_recordings_pass_the_relaxed_contract(contract, name, method, path, status) -> None:
    """The relaxed spec and the strict check accept what real WSE 4.7.0 sent (or they would be wrong)."""
    request_name = RECORDED_REQUESTS.get(name)
    request_body = json.dumps(load_recorded(request_name)).encode() if request_name else b""
    body = json.dumps(load_recorded(name)).encode()
    headers = {"Authorization": "Digest username=x", **JSON_HEADERS}
    exchange = Exchange(method, path, "", headers, request_body, status, {"Content-Type": "application/json"}, body)
    assert contract.check(exchange) is False  # a recorded request is one the contract accepts


def test_recorded_401_passes_without_credentials(contract) -> None:
    body = json.dumps(load_recorded("error-401")).encode()
    exchange = Exchange("GET", APP, "", dict(JSON_HEADERS), b"", 401, {"Content-Type": "application/json"}, body)
    contract.check(exchange)


def test_the_strict_check_rejects_what_openapi_core_casts(contract) -> None:
    stats = {"$ref": "#/components/schemas/CurrentIncomingStreamStatistics"}
    contract.strict(stats, {"uptime": 12, "bytesInRate": 312, "name": "cam1"}, "a well-typed body")
    for bad in ({"uptime": "12"}, {"uptime": 1.5}, {"name": 7}):
        with pytest.raises(AssertionError):
            contract.strict(stats, bad, "a badly typed body")
    with pytest.raises(AssertionError, match="is not of type 'string'"):
        contract.strict({"$ref": "#/components/schemas/WseError"},
                        {"success": False, "code": 404, "message": "x", "wowzaServer": "4.7.0"}, "an integer code")  # fmt: skip


# --- what the poller asks, and what the stand-in answers ---------------------------------------------


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_every_poller_request_and_standin_answer_follows_the_contract(contract, wowza_standin_factory, auth) -> None:  # noqa: F811
    standin = wowza_standin_factory(auth=auth)
    standin.add_stream("live", "cam 1/é", "192.0.2.10", bitrate_kbps=2500, viewers=3)
    standin.add_stream("live", "cam2", "wowz://198.51.100.7:39369", instance="backup")
    standin.add_stream("events", "stage", "2001:db8::5", bitrate_kbps=800)
    standin.add_app("vod", app_type="VOD")
    standin.advance(30)

    poller = WowzaPoller()
    snapshot = poller.parse(fetch(make_server(standin), poller), datetime.now(UTC))

    assert snapshot.reachable, snapshot.error
    assert {(s.app, s.name) for s in snapshot.streams} == {("live", "cam 1/é"), ("live/backup", "cam2"),
                                                          ("events", "stage")}  # fmt: skip
    assert check_all(contract, standin) >= 10
    polled = [exchange for exchange in standin.exchanges if exchange.status != 401]
    for exchange in standin.exchanges:
        assert exchange.method == "GET"
        assert exchange.request_headers["Accept"] == "application/json; charset=utf-8"
        assert exchange.request_headers["Content-Type"] == "application/json; charset=utf-8"
    scheme = "Digest " if auth == "digest" else "Basic "
    assert all(exchange.request_headers["Authorization"].startswith(scheme) for exchange in polled)
    if auth == "digest":  # one challenge, then the remembered nonce answers every later call
        assert [exchange.status for exchange in standin.exchanges].count(401) == 1


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_every_request_of_tallys_wowza_management_follows_the_contract(
    contract,
    wowza_standin_factory,  # noqa: F811
    auth,
    db,
) -> None:
    """Deploys, key issue/rotate/revoke and the periodic sync (streams.wowza), as Tally sends them."""
    from console import audit
    from streams import deploys, keys, wowza
    from tests import factories

    standin = wowza_standin_factory(auth=auth)
    server = factories.make_server(
        "wowza-c", kind="wowza", host="127.0.0.1", stat_url="", wowza_api_url=standin.url,
        wowza_username=standin.username, wowza_password=standin.password, wowza_auth=auth,
    )  # fmt: skip
    live = factories.make_application(server, "live")
    factories.make_application(server, "events")
    standin.add_stream("live", "already-on", "192.0.2.20")
    actor = audit.Actor()
    assert deploys.deploy(server, actor, dry_run=True).valid
    assert deploys.deploy(server, actor, mode="reconnect").revision.status == "applied"
    issued = keys.issue_key(live, label="Cam", actor=actor)
    standin.publish("live", issued.key.public_name, username=issued.username, password=issued.secret)
    rotated = keys.rotate_key(issued.key, actor)
    assert rotated.wowza is not None and rotated.wowza.ok and "written" in rotated.wowza.text
    revoked = keys.revoke_key(rotated.key, actor).wowza
    assert revoked is not None and revoked.ok and "stream disconnected" in revoked.text
    keys.issue_key(live, label="Other", actor=actor)
    wowza.WowzaAdmin(server).delete_publisher(f"tally-{issued.key.pk + 1}")
    assert "created publisher" in wowza.sync_all()["wowza-c"]
    methods = {(exchange.method, exchange.status) for exchange in standin.exchanges}
    assert {("POST", 201), ("PUT", 200), ("DELETE", 200), ("GET", 200)} <= methods
    assert check_all(contract, standin) >= 20
    for exchange in standin.exchanges:
        assert exchange.request_headers["Accept"] == "application/json; charset=utf-8"


def test_every_endpoint_the_tests_use_follows_the_contract(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10", viewers=1)
    standin.advance(5)
    stream = f"{APP}/live/instances/_definst_/incomingstreams/cam1"
    with client_for(standin) as api:
        for path in ["/restinfo", "/v2/servers/_defaultServer_/status", "/v2/machine/monitoring/current", APP,
                     f"{APP}/live", f"{APP}/live/monitoring/current", f"{APP}/live/instances",
                     f"{APP}/live/instances/_definst_", stream, f"{stream}/monitoring/current"]:  # fmt: skip
            assert api.get(path).status_code == 200, path
        # applications: both create forms, read, partial update, delete
        assert api.post(APP, json=load_recorded("postApplicationsConfig.request")).status_code == 201
        assert api.post(f"{APP}/testlive", json={"name": "testlive", "appType": "Live"}).status_code == 201
        assert api.put(f"{APP}/testlive", json=load_recorded("putApplicationConfig.request")).status_code == 200
        assert api.get(f"{APP}/testlive").json()["appType"] == "VOD"
        assert api.delete(f"{APP}/testlive").status_code == 200
        # publishers: vhost and application level (v2, publisherName), server level (v3, publisher)
        for base in (f"{VHOST_PATH}/publishers", f"{APP}/live/publishers"):
            assert api.post(f"{base}/enc1", json=load_recorded("postPublisherVhostConfig.request")).status_code == 201
            assert api.post(base, json={"publisherName": "enc2", "password": "pw2"}).status_code == 201
            assert [p["publisherName"] for p in api.get(base).json()["publishers"]] == ["enc1", "enc2"]
            assert api.get(f"{base}/enc1").status_code == 200
            assert api.put(f"{base}/enc1", json={"password": "rotated"}).status_code == 200
            assert api.delete(f"{base}/enc2").status_code == 200
        v3 = "/v3/servers/_defaultServer_/publishers"
        body = {"publisher": "myRTMPencoder", "password": "123", "serverName": "", "description": "", "version": "3"}
        assert api.post(v3, json=body).status_code == 201
        assert api.get(v3).json()["publishers"] == [{"publisher": "myRTMPencoder"}]
        assert api.put(f"{v3}/myRTMPencoder", json={**body, "password": "newpassword"}).status_code == 200
        assert api.get(f"{v3}/myRTMPencoder").json()["password"] == "newpassword"
        assert api.post(f"{v3}/cam2", json={"password": "pw", "version": "3"}).status_code == 201
        assert api.delete(f"{v3}/cam2").status_code == 200
        # stream actions
        assert api.put(f"{stream}/actions/resetStream").status_code == 200
        assert api.put(f"{stream}/actions/disconnectStream").status_code == 200
    assert standin.publishers("vhost") == {"enc1": "rotated"}
    assert standin.publishers("app", "live") == {"enc1": "rotated"}
    assert standin.publishers("server") == {"myRTMPencoder": "newpassword"}
    assert check_all(contract, standin) >= 35


# --- golden shapes -----------------------------------------------------------------------------------


@pytest.fixture
def busy_standin(wowza_standin: WowzaStandin) -> Iterator[WowzaStandin]:  # noqa: F811
    wowza_standin.add_stream("live", "myStream", "wowz://192.168.3.185:39369", bitrate_kbps=1200, viewers=2)
    wowza_standin.add_stream("live", "myStr", "192.0.2.20")
    wowza_standin.advance(12)
    yield wowza_standin


GOLDEN_GETS = [
    ("getServerStatusConfig", "/v2/servers/_defaultServer_/status"),
    ("getApplicationsConfig", APP),
    ("getApplicationConfig", f"{APP}/live"),
    ("getCurrentApplicationStatistics", f"{APP}/live/monitoring/current"),
    ("getInstancesConfig", f"{APP}/live/instances"),
    ("getInstanceConfig", f"{APP}/live/instances/_definst_"),
    (
        "getCurrentIncomingStreamStatistics",
        f"{APP}/live/instances/_definst_/incomingstreams/myStream/monitoring/current",
    ),
]


@pytest.mark.parametrize(("name", "path"), GOLDEN_GETS)
def test_standin_bodies_cover_the_recorded_shapes(contract, busy_standin, name, path) -> None:
    with client_for(busy_standin) as api:
        response = api.get(path)
    assert response.status_code == 200
    assert_covers(response.json(), load_recorded(name), name)
    assert check_all(contract, busy_standin) >= 1


def test_write_and_error_bodies_cover_the_recorded_shapes(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    with client_for(standin) as api:
        created = api.post(APP, json=load_recorded("postApplicationsConfig.request"))
        duplicate = api.post(f"{APP}/app_name", json={"name": "app_name", "appType": "Live"})
        updated = api.put(f"{APP}/app_name", json=load_recorded("putApplicationConfig.request"))
        deleted = api.delete(f"{APP}/app_name")
        missing = api.delete(f"{APP}/app_name")
        publisher = api.post(f"{VHOST_PATH}/publishers/enc1", json=load_recorded("postPublisherVhostConfig.request"))
        publisher_deleted = api.delete(f"{VHOST_PATH}/publishers/enc1")
    with client_for(standin, password="wrong") as api:
        refused = api.get(APP)
    for response, name in [
        (created, "postApplicationsConfig.response-201"),
        (duplicate, "error-409"),
        (updated, "putApplicationConfig.response-200"),
        (deleted, "deleteApplicationConfig.response-200"),
        (missing, "error-404"),
        (publisher, "postPublisherVhostConfig.response-201"),
        (publisher_deleted, "deletePublisherVhostConfig.response-200"),
        (refused, "error-401"),
    ]:
        assert_covers(response.json(), load_recorded(name), name)
        assert response.json() == load_recorded(name), name  # app_name, as recorded: the same bodies
    assert created.json()["message"] == "Application (app_name) created successfully."
    assert deleted.json()["message"] == "Application (app_name) deleted successfully"
    assert check_all(contract, standin) >= 8


# --- error and auth contract -------------------------------------------------------------------------


@pytest.mark.parametrize("auth", ["digest", "basic"])
def test_401_carries_the_configured_challenge(contract, wowza_standin_factory, auth) -> None:  # noqa: F811
    standin = wowza_standin_factory(auth=auth)
    with httpx.Client(base_url=standin.url, headers=JSON_HEADERS) as anonymous:
        response = anonymous.get(APP)
    with client_for(standin, password="wrong") as api:
        wrong = api.get(APP)
    for refused in (response, wrong):
        assert refused.status_code == 401
        assert refused.json() == {"message": "The request requires user authentication", "success": False,
                                  "code": "401", "wowzaServer": "4.7.0"}  # fmt: skip
    challenge = response.headers["WWW-Authenticate"]
    if auth == "digest":
        assert re.fullmatch(r'Digest realm="Wowza", domain="/", nonce="[0-9a-f]{32}", algorithm=MD5, qop="auth"',
                            challenge)  # fmt: skip
    else:
        assert challenge == 'Basic realm="Wowza"'
    assert check_all(contract, standin) >= 2


def _digest_header(standin: WowzaStandin, method: str, uri: str, nonce: str, nc: int, *, password: str) -> str:
    """An RFC 7616 MD5 ``qop=auth`` Authorization header, computed here independently of httpx."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    cnonce, nc_text = secrets.token_hex(8), f"{nc:08x}"
    ha1 = md5(f"{standin.username}:Wowza:{password}")
    response = md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{md5(f'{method}:{uri}')}")
    return (f'Digest username="{standin.username}", realm="Wowza", nonce="{nonce}", uri="{uri}", '
            f'response="{response}", qop=auth, nc={nc_text}, cnonce="{cnonce}", algorithm=MD5')  # fmt: skip


def test_digest_is_checked_per_rfc_7616(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    uri = f"{APP}?x=1"
    with httpx.Client(base_url=standin.url, headers=JSON_HEADERS) as raw:
        challenge = raw.get(uri).headers["WWW-Authenticate"]
        found = re.search(r'nonce="([^"]+)"', challenge)
        assert found is not None, challenge
        nonce = found.group(1)

        def get(header: str, path: str = uri) -> int:
            return raw.get(path, headers={"Authorization": header}).status_code

        assert get(_digest_header(standin, "GET", uri, nonce, 1, password=standin.password)) == 200
        assert get(_digest_header(standin, "GET", uri, nonce, 1, password=standin.password)) == 401  # nc replay
        assert get(_digest_header(standin, "GET", uri, nonce, 2, password="wrong")) == 401
        assert get(_digest_header(standin, "GET", uri, "f" * 32, 1, password=standin.password)) == 401  # unknown nonce
        assert get(_digest_header(standin, "GET", APP, nonce, 3, password=standin.password)) == 401  # uri mismatch
        assert get(_digest_header(standin, "POST", uri, nonce, 4, password=standin.password)) == 401  # method
        assert get(_digest_header(standin, "GET", uri, nonce, 9, password=standin.password)) == 200
    assert check_all(contract, standin) >= 8


def test_create_conflict_and_unknown_names(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    v3 = "/v3/servers/_defaultServer_/publishers"
    with client_for(standin) as api:
        assert api.post(f"{APP}/live", json={"name": "live", "appType": "Live"}).status_code == 409
        assert api.post(APP, json={"name": "live", "appType": "Live"}).status_code == 409
        for base, body in [(f"{VHOST_PATH}/publishers", {"password": "pw"}),
                           (f"{APP}/live/publishers", {"password": "pw"}),
                           (v3, {"password": "pw", "version": "3"})]:  # fmt: skip
            assert api.post(f"{base}/enc", json=body).status_code == 201
            assert api.post(f"{base}/enc", json=body).status_code == 409
            assert api.get(f"{base}/nobody").status_code == 404
            assert api.put(f"{base}/nobody", json=body).status_code == 404
            assert api.delete(f"{base}/nobody").status_code == 404
            deleted = api.delete(f"{base}/enc")
            assert (deleted.status_code, deleted.json()["message"]) == (200, "Saved")
        errors = [
            api.get(f"{APP}/nope"),
            api.get(f"{APP}/nope/monitoring/current"),
            api.get(f"{APP}/nope/instances"),
            api.put(f"{APP}/nope", json={"appType": "VOD"}),
            api.delete(f"{APP}/nope"),
            api.get(f"{APP}/live/instances/_definst_/incomingstreams/nope/monitoring/current"),
            api.put(f"{APP}/live/instances/_definst_/incomingstreams/nope/actions/disconnectStream"),
        ]
    for response in errors:
        assert response.status_code == 404
        assert response.json() == {"message": "The server has not found anything matching the request URI",
                                    "code": "404", "success": False, "wowzaServer": "4.7.0"}  # fmt: skip
    assert check_all(contract, standin) >= 20


def test_disconnect_stream_removes_it_from_incoming_streams(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10")
    standin.add_stream("live", "cam2", "192.0.2.11")
    instance = f"{APP}/live/instances/_definst_"
    with client_for(standin) as api:
        before = [s["name"] for s in api.get(instance).json()["incomingStreams"]]
        kicked = api.put(f"{instance}/incomingstreams/cam1/actions/disconnectStream")
        after = [s["name"] for s in api.get(instance).json()["incomingStreams"]]
        listed = [s["name"] for s in api.get(f"{APP}/live/instances").json()["instanceList"][0]["incomingStreams"]]
        again = api.put(f"{instance}/incomingstreams/cam1/actions/disconnectStream")
        stats = api.get(f"{instance}/incomingstreams/cam1/monitoring/current")
    assert before == ["cam1", "cam2"]
    assert kicked.status_code == 200 and kicked.json()["success"] is True
    assert after == listed == ["cam2"]
    assert standin.streams("live") == ["cam2"]
    assert (again.status_code, stats.status_code) == (404, 404)
    assert check_all(contract, standin) >= 6


# --- config deploys: application security, actions, publishers, publishing -----------------------------

PUBLISHERS = f"{VHOST_PATH}/publishers"
WRITE_OK = {"success": True, "message": "", "data": None}
REQUIRE_DIGEST = {"publishRequirePassword": True, "publishAuthenticationMethod": "digest"}


def test_every_config_deploy_endpoint_follows_the_contract(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10")
    security = f"{APP}/live/security"
    with client_for(standin) as api:
        # applications, as a deploy creates and updates them
        assert api.get(APP).status_code == 200
        created = api.post(APP, json={"name": "studio", "appType": "Live", "description": "Studio A"})
        assert created.status_code == 201
        assert api.put(f"{APP}/studio", json={"appType": "Live"}).status_code == 200
        assert api.get(f"{APP}/studio").json()["description"] == "Studio A"
        # security: read, then save
        assert api.get(security).status_code == 200
        saved = api.put(security, json={**REQUIRE_DIGEST, "publishBlockDuplicateStreamNames": True,
                                        "serverName": "_defaultServer_"})  # fmt: skip
        assert (saved.status_code, saved.json()) == (200, load_recorded("putApplicationConfig.response-200"))
        # vhost publishers: create, list, rotate, delete
        assert api.post(f"{PUBLISHERS}/enc1", json=load_recorded("postPublisherVhostConfig.request")).status_code == 201
        assert api.get(PUBLISHERS).json()["publishers"] == [{"publisherName": "enc1"}]
        assert api.put(f"{PUBLISHERS}/enc1", json={"password": "rotated"}).status_code == 200
        # application actions
        for action in ("restart", "shutdown", "start"):
            answer = api.put(f"{APP}/live/actions/{action}")
            assert (answer.status_code, answer.json()) == (200, WRITE_OK), action
        copied = api.put(f"{APP}/live/actions/copy", params={"dstEntryName": "live2"})
        assert (copied.status_code, copied.json()) == (200, WRITE_OK)
        deleted = api.delete(f"{PUBLISHERS}/enc1")
        assert (deleted.status_code, deleted.json()) == (200, load_recorded("deletePublisherVhostConfig.response-200"))
        # errors: what the contract accepts and WSE refuses...
        assert api.post(f"{PUBLISHERS}/enc2", json={"password": "pw"}).status_code == 201
        not_found = [
            api.get(f"{APP}/nope/security"),
            api.put(f"{APP}/nope/security", json=REQUIRE_DIGEST),
            api.put(f"{APP}/nope/actions/restart"),
            api.get(f"{PUBLISHERS}/nobody"),
            api.put(f"{PUBLISHERS}/nobody", json={"password": "x"}),
            api.delete(f"{PUBLISHERS}/nobody"),
        ]
        conflicts = [
            api.post(f"{PUBLISHERS}/enc2", json={"password": "pw"}),
            api.put(f"{APP}/live/actions/copy", params={"dstEntryName": "live2"}),
        ]
        no_destination = api.put(f"{APP}/live/actions/copy")
        # ...and what the contract itself refuses (check_all counts these: refused=6)
        bad_requests = [
            api.put(f"{APP}/live/actions/reload"),  # outside the {action} enum
            api.put(security, json={"publishRequirePassword": "yes"}),
            api.put(security, json={"playMaximumConnections": True}),
            api.post(APP, json={"name": "bad", "appType": "Live", "securityConfig": {"publishRequirePassword": 1}}),
        ]
        wrong_methods = [api.get(f"{APP}/live/actions/restart"), api.delete(security)]
        assert api.get(f"{APP}/bad").status_code == 404  # the refused create created nothing
    assert [r.status_code for r in not_found] == [404] * 6
    assert [r.json() for r in not_found] == [load_recorded("error-404")] * 6
    assert [r.status_code for r in conflicts] == [409] * 2
    assert [r.json() for r in conflicts] == [load_recorded("error-409")] * 2
    for response in [no_destination, *bad_requests]:
        assert response.status_code == 400
        assert response.json() == {"success": False, "code": "400", "wowzaServer": "4.7.0",
                                   "message": "The request could not be understood by the server due to malformed syntax"}  # fmt: skip
    assert [(r.status_code, r.json()["code"]) for r in wrong_methods] == [(405, "405")] * 2
    assert standin.restarts("live") == 1 and standin.app_running("live")
    assert standin.security("live2") == standin.security("live", active=True) == standin.security("live")
    assert standin.publishers("vhost") == {"enc2": "pw"}
    assert check_all(contract, standin, refused=6) >= 30


@pytest.mark.parametrize("require_password", [False, True])
def test_security_bodies_cover_the_recorded_security_config(contract, wowza_standin, require_password) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_app("studio", require_password=require_password)
    recorded = load_recorded("getApplicationConfig")["securityConfig"]
    with client_for(standin) as api:
        security = api.get(f"{APP}/studio/security").json()
        in_app_config = api.get(f"{APP}/studio").json()["securityConfig"]
        assert api.put(f"{APP}/studio/security", json={"publishBlockDuplicateStreamNames": True}).status_code == 200
        after_put = api.get(f"{APP}/studio").json()["securityConfig"]
    assert_covers(security, recorded, "getSecurityConfig")
    assert set(security) == set(recorded)
    assert security == in_app_config
    expected = ("digest" if require_password else "none", require_password)
    assert (security["publishAuthenticationMethod"], security["publishRequirePassword"]) == expected
    assert security == {**recorded, "publishRequirePassword": require_password,
                        "publishAuthenticationMethod": expected[0]}  # fmt: skip
    assert after_put == {**security, "publishBlockDuplicateStreamNames": True}  # the app config shows the saved one
    assert check_all(contract, standin) >= 4


def test_security_writes_are_type_checked_partial_and_saved_only(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    security = f"{APP}/live/security"
    before = standin.security("live")
    with client_for(standin) as api:
        # one bad field refuses the whole write
        bad = api.put(security, json={"publishRequirePassword": True, "publishBlockDuplicateStreamNames": None})
        assert bad.status_code == 400 and standin.security("live") == before
        # unknown fields and serverName are ignored
        ignored = {"noSuchField": 1, "version": "1", "saveFieldList": ["publishRequirePassword"], "serverName": "x"}
        assert api.put(security, json=ignored).status_code == 200
        assert standin.security("live") == before
        assert api.get(security).json()["serverName"] == "_defaultServer_"
        # a partial write changes its fields only, and only the saved config
        assert api.put(security, json={"publishAuthenticationMethod": "block"}).status_code == 200
        # an application created with a securityConfig runs with it
        body = {"name": "secure", "appType": "Live", "description": "", "securityConfig": REQUIRE_DIGEST}
        assert api.post(APP, json=body).status_code == 201
    assert standin.security("live") == {**before, "publishAuthenticationMethod": "block"}
    assert standin.security("live", active=True) == before
    assert standin.security("secure", active=True) == {**before, **REQUIRE_DIGEST}
    assert standin.security("secure") == standin.security("secure", active=True)
    assert check_all(contract, standin) >= 6  # a null is contract-valid (nullable) yet refused by WSE: not counted


def test_a_saved_security_change_is_enforced_only_after_a_restart(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.publish("live", "early")  # an open application: no credentials needed
    with client_for(standin) as api:
        assert api.post(f"{PUBLISHERS}/enc1", json={"password": "s3cret"}).status_code == 201
        assert api.put(f"{APP}/live/security", json=REQUIRE_DIGEST).status_code == 200
        assert api.get(f"{APP}/live/security").json()["publishRequirePassword"] is True
        assert standin.security("live", active=True)["publishRequirePassword"] is False
        standin.publish("live", "before-restart")  # saved, not yet enforced
        assert standin.restarts("live") == 0
        assert api.put(f"{APP}/live/actions/restart").status_code == 200
    assert standin.restarts("live") == 1
    assert standin.security("live", active=True) == standin.security("live")
    assert standin.streams("live") == []  # the restart dropped both
    for credentials in ({}, {"username": "enc1"}, {"username": "enc1", "password": "wrong"},
                        {"username": "nobody", "password": "s3cret"}):  # fmt: skip
        with pytest.raises(PublishRefused):
            standin.publish("live", "cam1", **credentials)
    standin.publish("live", "cam1", username="enc1", password="s3cret")
    assert standin.streams("live") == ["cam1"]
    assert check_all(contract, standin) >= 4


def test_a_restart_disconnects_every_stream_of_the_app_and_restarts_its_clock(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_stream("live", "cam1", "192.0.2.10", viewers=4)
    standin.add_stream("live", "cam2", "192.0.2.11", instance="backup")
    standin.add_stream("events", "stage", "192.0.2.12")
    standin.advance(60)
    with client_for(standin) as api:
        before = api.get(f"{APP}/live/monitoring/current").json()
        assert api.put(f"{APP}/live/actions/restart").status_code == 200
        after = api.get(f"{APP}/live/monitoring/current").json()
        listed = api.get(f"{APP}/live/instances").json()["instanceList"]
        gone = api.get(f"{APP}/live/instances/_definst_/incomingstreams/cam1")
    assert before["uptime"] >= 60 > after["uptime"]
    assert (before["totalConnections"], after["totalConnections"]) == (6, 0)
    assert [(i["name"], i["incomingStreams"]) for i in listed] == [("_definst_", [])]
    assert gone.status_code == 404
    assert standin.streams("live") == [] and standin.streams("events") == ["stage"]  # other apps untouched
    standin.publish("live", "cam1")  # an open app takes encoders again at once
    assert check_all(contract, standin) >= 5


def test_publish_checks_every_credential_store_and_a_deleted_publisher_is_refused(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_app("secure", require_password=True)
    with client_for(standin) as api:
        assert api.post(f"{PUBLISHERS}/vhost-enc", json={"password": "pw-v"}).status_code == 201
        assert api.post(f"{APP}/secure/publishers/app-enc", json={"password": "pw-a"}).status_code == 201
        body = {"publisher": "server-enc", "password": "pw-s", "version": "3"}
        assert api.post("/v3/servers/_defaultServer_/publishers", json=body).status_code == 201
        for username, password in [("vhost-enc", "pw-v"), ("app-enc", "pw-a"), ("server-enc", "pw-s")]:
            standin.publish("secure", username, username=username, password=password)
        with pytest.raises(PublishRefused, match="bad publisher name or password"):
            standin.publish("secure", "mixed", username="vhost-enc", password="pw-a")
        # rotation: the old password stops working at once (no restart: WSE rereads its password store)
        assert api.put(f"{PUBLISHERS}/vhost-enc", json={"password": "pw-v2"}).status_code == 200
        with pytest.raises(PublishRefused):
            standin.publish("secure", "cam", username="vhost-enc", password="pw-v")
        # revocation: deleting the credential keeps the live stream; kicking it and reconnecting fails
        assert api.delete(f"{PUBLISHERS}/vhost-enc").status_code == 200
        assert "vhost-enc" in standin.streams("secure")
        stream = f"{APP}/secure/instances/_definst_/incomingstreams/vhost-enc"
        assert api.put(f"{stream}/actions/disconnectStream").status_code == 200
        listed = [s["name"] for s in api.get(f"{APP}/secure/instances/_definst_").json()["incomingStreams"]]
    assert listed == ["app-enc", "server-enc"] == standin.streams("secure")
    for password in ("pw-v", "pw-v2"):
        with pytest.raises(PublishRefused):
            standin.publish("secure", "vhost-enc", username="vhost-enc", password=password)
    with pytest.raises(PublishRefused, match="does not exist"):
        standin.publish("nope", "cam")
    assert check_all(contract, standin) >= 8


def test_shutdown_stops_the_app_until_start_which_activates_the_saved_security(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.publish("live", "cam1")
    with client_for(standin) as api:
        assert api.put(f"{APP}/live/actions/shutdown").status_code == 200
        assert standin.streams("live") == [] and not standin.app_running("live")
        with pytest.raises(PublishRefused, match="shut down"):
            standin.publish("live", "cam1")
        assert api.get(f"{APP}/live").status_code == 200  # its configuration stays
        assert api.put(f"{APP}/live/security", json=REQUIRE_DIGEST).status_code == 200
        assert api.post(f"{PUBLISHERS}/enc1", json={"password": "pw"}).status_code == 201
        assert api.put(f"{APP}/live/actions/start").status_code == 200
        assert standin.app_running("live") and standin.restarts("live") == 0
        with pytest.raises(PublishRefused):
            standin.publish("live", "cam1")
        standin.publish("live", "cam1", username="enc1", password="pw")
        # starting a running application changes nothing: streams and the enforced security stay
        assert api.put(f"{APP}/live/security", json={"publishRequirePassword": False}).status_code == 200
        assert api.put(f"{APP}/live/actions/start").status_code == 200
    assert standin.streams("live") == ["cam1"]
    assert standin.security("live", active=True)["publishRequirePassword"] is True
    assert check_all(contract, standin) >= 7


def test_block_and_duplicate_stream_names_once_active(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    with client_for(standin) as api:
        assert api.put(f"{APP}/live/security", json={"publishBlockDuplicateStreamNames": True}).status_code == 200
        standin.publish("live", "cam1")
        standin.publish("live", "cam1")  # not active yet: the second encoder takes the name over
        assert api.put(f"{APP}/live/actions/restart").status_code == 200
        standin.publish("live", "cam1")
        with pytest.raises(PublishRefused, match="already live"):
            standin.publish("live", "cam1")
        standin.publish("live", "cam1", instance="backup")  # another instance, another name space
        assert (
            api.put(f"{APP}/live/instances/_definst_/incomingstreams/cam1/actions/disconnectStream").status_code == 200
        )
        standin.publish("live", "cam1")
        assert api.post(f"{PUBLISHERS}/enc1", json={"password": "pw"}).status_code == 201
        block = {"publishRequirePassword": True, "publishAuthenticationMethod": "block"}
        assert api.put(f"{APP}/live/security", json=block).status_code == 200
        assert api.put(f"{APP}/live/actions/restart").status_code == 200
    with pytest.raises(PublishRefused, match="blocks publishing"):
        standin.publish("live", "cam2", username="enc1", password="pw")
    assert check_all(contract, standin) >= 7


def test_copy_takes_the_saved_config_and_app_publishers(contract, wowza_standin) -> None:  # noqa: F811
    standin = wowza_standin
    standin.add_app("studio", "Live", "Studio A", require_password=True)
    standin.add_stream("studio", "cam1", "192.0.2.10")
    with client_for(standin) as api:
        assert api.post(f"{APP}/studio/publishers/enc1", json={"password": "pw"}).status_code == 201
        assert api.put(f"{APP}/studio/security", json={"publishBlockDuplicateStreamNames": True}).status_code == 200
        assert api.put(f"{APP}/studio/actions/copy", params={"dstEntryName": "studio b"}).status_code == 200
        copied = api.get(f"{APP}/studio%20b").json()
    assert (copied["name"], copied["appType"], copied["description"]) == ("studio b", "Live", "Studio A")
    assert copied["securityConfig"] == {**standin.security("studio"), "serverName": "_defaultServer_"}
    assert standin.security("studio b", active=True) == standin.security("studio")
    assert standin.publishers("app", "studio b") == {"enc1": "pw"}
    assert standin.streams("studio b") == [] and standin.streams("studio") == ["cam1"]  # the source keeps running
    assert standin.app_running("studio b")
    standin.publish("studio b", "cam1", username="enc1", password="pw")
    assert check_all(contract, standin) >= 4
