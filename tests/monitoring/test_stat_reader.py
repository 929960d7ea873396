"""The compiled stat reader (monitoring/pollers/_stat_reader.pyx) against the Python one it replaces.

``parse_stat`` reads each ``<stream>``'s texts with the compiled reader when it is built (``make`` builds
it); the Python reader stays as the reference. Both must give the same snapshot for every document:
the real captures, documents with everything XML allows in odd places, and thousands of mutated ones.
"""

from __future__ import annotations

import copy
import importlib.abc
import random
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from monitoring.pollers import nginx_rtmp
from monitoring.snapshots import ServerSnapshot

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "nginx_rtmp"
SOURCES = sorted(FIXTURES.glob("stat-*.xml"))
TAKEN_AT = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def compiled_reader() -> Callable[[list[etree._Element]], list[nginx_rtmp.StreamTexts]]:
    assert nginx_rtmp.STAT_READER == "compiled", (
        "the compiled stat reader is not built: run `make venv` (deploy/scripts/build_stat_reader.py)"
    )
    return nginx_rtmp.read_streams


def parse_both(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[ServerSnapshot, ServerSnapshot]:
    """(parse_stat with the compiled reader, parse_stat with the Python reader)."""
    compiled = compiled_reader()
    with monkeypatch.context() as patch:
        patch.setattr(nginx_rtmp, "read_streams", compiled)
        fast = nginx_rtmp.parse_stat(raw, TAKEN_AT)
        patch.setattr(nginx_rtmp, "read_streams", nginx_rtmp.read_streams_python)
        reference = nginx_rtmp.parse_stat(raw, TAKEN_AT)
    return fast, reference


def test_parse_stat_uses_the_compiled_reader() -> None:
    compiled_reader()


@pytest.mark.parametrize("path", SOURCES, ids=[path.stem for path in SOURCES])
def test_same_texts_and_snapshot_on_the_real_captures(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = path.read_bytes()
    root = etree.fromstring(raw)
    streams = list(root.iter("stream"))
    assert compiled_reader()(streams) == nginx_rtmp.read_streams_python(streams)
    fast, reference = parse_both(raw, monkeypatch)
    assert fast == reference
    assert fast.reachable


def document(*streams: str) -> bytes:
    body = "".join(f"<stream>{stream}</stream>" for stream in streams)
    return f"<rtmp><server><application><name>live</name><live>{body}</live></application></server></rtmp>".encode()


ODD_STREAMS = {
    "comments and PIs": "<!-- c --><name>a</name><?pi x?><bw_in><!-- c -->5</bw_in><client><!-- c --><id>1</id>"
    "<?pi?><publishing/></client><meta><!-- c --><video><!-- c --><width>1</width></video></meta>",
    "text split by a comment": "<name>a<!-- c -->b</name><bw_in>12<!--x-->34</bw_in>",
    "CDATA": "<name><![CDATA[a<b>]]></name><bw_in><![CDATA[5]]>6</bw_in><client><address><![CDATA[::1]]></address>"
    "</client>",
    "CDATA split": "<name><![CDATA[]]>x<![CDATA[]]></name><time><![CDATA[]]></time>",
    "empty and blank": "<name></name><time/><bw_in> </bw_in><client><id></id><address/></client>",
    "entities": "<name>a&amp;b&lt;c&#x4E2D;</name><client><flashver>&quot;x&apos;</flashver></client>",
    "unicode": "<name>caméra-東京-🎥</name><client><address>fe80::1%eth0</address></client>",
    "namespaced": '<x:name xmlns:x="urn:x">ns</x:name><name>plain</name><client xmlns="urn:y"><id>9</id></client>'
    '<client><y:id xmlns:y="urn:y">8</y:id><id>7</id></client><meta xmlns="urn:z"><video><width>3</width></video></meta>',
    "nested inside fields": "<name>a<b>b</b>c</name><bw_in><x>1</x></bw_in><client><id>1<i>2</i></id>"
    "<publishing>yes<x/></publishing></client><meta><video><width><w>4</w></width></video></meta>",
    "duplicates": "<name>a</name><name>b</name><bw_in>1</bw_in><bw_in>2</bw_in><client><id>1</id><id>2</id></client>"
    "<meta><video><width>1</width></video><video><height>2</height></video><audio><codec>A</codec>"
    "<codec>B</codec></audio></meta><meta><audio/></meta>",
    "fields in the wrong place": "<id>1</id><width>2</width><client><width>3</width><name>c</name></client>"
    "<meta><codec>x</codec><client/><video><client><id>5</id></client></video></meta><video><width>9</width></video>",
    "no fields": "",
    "only whitespace": "\r\n \t",
    "long texts": "<name>" + "n" * 5000 + "</name><client><flashver>" + "f" * 20000 + "</flashver></client>",
}


@pytest.mark.parametrize("stream", list(ODD_STREAMS.values()), ids=list(ODD_STREAMS))
def test_same_results_on_odd_documents(stream: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The Python reader also keeps the texts of comments, PIs and namespaced elements (under keys no field
    # is read by), so here only the snapshots are compared.
    raw = document(stream, "<name>next</name><client><id>2</id><publishing/></client>")
    fast, reference = parse_both(raw, monkeypatch)
    assert fast == reference
    assert [s.name for s in fast.streams][-1] == "next"


def mutate(root: etree._Element, rng: random.Random) -> None:
    """One random structural change: drop, duplicate, move or rename an element, or add a comment,
    CDATA, a namespace or nesting."""
    elements = list(root.iter(etree.Element))[1:]  # no comments
    if not elements:
        return
    target = rng.choice(elements)
    parent = target.getparent()
    names = ["name", "time", "bw_in", "client", "id", "publishing", "meta", "video", "audio", "codec", "width"]
    action = rng.randrange(8)
    if action == 0 and parent is not None:
        parent.remove(target)
    elif action == 1 and parent is not None:
        parent.insert(parent.index(target), copy.deepcopy(target))
    elif action == 2:
        target.tag = rng.choice(names)
    elif action == 3:
        target.insert(0, etree.Comment("c"))
    elif action == 4 and len(target) == 0:
        target.text = etree.CDATA(target.text or "")
    elif action == 5:
        target.tag = "{urn:x}" + etree.QName(target).localname
    elif action == 6:
        etree.SubElement(target, rng.choice(names)).text = str(rng.randrange(10**6))
    elif action == 7 and parent is not None:
        destination = rng.choice(elements)
        if destination is not target and target not in destination.iterancestors():
            destination.append(target)


def test_same_results_on_mutated_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(2026)
    originals = [etree.fromstring(path.read_bytes()) for path in SOURCES]
    with_streams = 0
    for _ in range(600):
        root = copy.deepcopy(rng.choice(originals))
        for _ in range(rng.randrange(1, 12)):
            mutate(root, rng)
        raw = etree.tostring(root)
        fast, reference = parse_both(raw, monkeypatch)
        assert fast == reference, raw[:2000]
        with_streams += bool(fast.streams)
    assert with_streams > 300


def test_same_results_on_line_mangled_captures(monkeypatch: pytest.MonkeyPatch) -> None:
    """nginx writes stat XML a few elements per line: drop, repeat and swap lines and insert balanced
    snippets between them (the documents that still parse must agree)."""
    rng = random.Random(1935)
    sources = [path.read_bytes().split(b"\r\n") for path in SOURCES]
    snippets = [b"<client><id>9</id><publishing/></client>", b"<meta><video><width>1</width></video></meta>",
                b"<!-- -->", b"<x/>", b"<bw_in>1</bw_in>", b"<stream><name>s</name></stream>"]  # fmt: skip
    readable = 0
    for _ in range(600):
        lines = list(rng.choice(sources))
        for _ in range(rng.randrange(1, 6)):
            at = rng.randrange(len(lines))
            action = rng.randrange(4)
            if action == 0:
                del lines[at]
            elif action == 1:
                lines.insert(at, lines[at])
            elif action == 2:
                other = rng.randrange(len(lines))
                lines[at], lines[other] = lines[other], lines[at]
            else:
                lines.insert(at, rng.choice(snippets))
        fast, reference = parse_both(b"\r\n".join(lines), monkeypatch)
        assert fast == reference, b"\r\n".join(lines)[:2000]
        readable += bool(fast.streams)
    assert readable > 100  # enough of them parsed, with streams, for the comparison to mean something


READER_MODULE = "monitoring.pollers._stat_reader"


def hide_compiled_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    import monitoring.pollers

    monkeypatch.delattr(monitoring.pollers, "_stat_reader", raising=False)
    monkeypatch.delitem(sys.modules, READER_MODULE, raising=False)


def test_without_the_compiled_reader_the_python_one_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    hide_compiled_reader(monkeypatch)
    monkeypatch.setitem(sys.modules, READER_MODULE, None)  # as if never built
    assert nginx_rtmp._compiled_reader() is None


def test_a_reader_built_against_another_lxml_is_refused_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class RefuseReader(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object, target: object = None) -> None:
            if name == READER_MODULE:  # what the module raises at import when lxml changed since the build
                raise ImportError("built against lxml 5.0.0, lxml 6.1.3 is installed")

    hide_compiled_reader(monkeypatch)
    monkeypatch.setattr(sys, "meta_path", [RefuseReader(), *sys.meta_path])
    assert nginx_rtmp._compiled_reader() is None
    assert "compiled stat reader not used" in caplog.text and "built against lxml 5.0.0" in caplog.text
