# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of ``monitoring.pollers.nginx_rtmp._read_stream``: the same texts, read in C.

Reading one ``<stream>`` through lxml's Python API costs a Python proxy object, a tag string and a text
string per element, about two thirds of a 1,000-stream poll's parse (bench/parse_stat.py). This module
walks the libxml2 nodes of the tree lxml already built (lxml's public C API, the headers its wheel
ships) and creates Python objects only for the fields ``nginx_rtmp`` reads. Its texts are
``_read_stream``'s, except that it skips what no field is read from (comments, processing instructions,
namespaced elements), so both give the same snapshots: tests/monitoring/test_stat_reader.py holds them
to that on the captures, odd documents and mutated ones. The Python
reader stays the reference and the fallback when this module is not built
(deploy/scripts/build_stat_reader.py, run by ``make``).

Rules shared with lxml (so the results are equal):
- children are element nodes only; comments, processing instructions and namespaced elements never
  match a field name (lxml gives them a function or a "{uri}name" tag);
- an element's text is lxml's ``.text``: the text (and CDATA) nodes before its first other child, ``None``
  when there is none, ``""`` when they are all empty.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport strcmp, strlen

from lxml.includes cimport tree
from lxml.includes.etreepublic cimport LXML_VERSION_STRING, _Element, import_lxml__etree

import lxml.etree

# Built against one lxml release: refuse another (its element struct may differ even at the same size).
if lxml.etree.__version__ != LXML_VERSION_STRING.decode():
    raise ImportError(f"built against lxml {LXML_VERSION_STRING.decode()}, lxml {lxml.etree.__version__} is installed")
import_lxml__etree()

cdef dict _NO_TEXTS = {}


cdef inline bint _is_field(tree.xmlNode* node) noexcept:
    """An element without a namespace: the only nodes whose tag can equal a field name."""
    return node.type == tree.XML_ELEMENT_NODE and node.ns is NULL


cdef inline bint _named(tree.xmlNode* node, const char* name) noexcept:
    return strcmp(<const char*>node.name, name) == 0


cdef inline str _decode(const char* text):
    return PyUnicode_DecodeUTF8(text, strlen(text), NULL)


cdef enum:
    NAME_SLOTS = 64


cdef class _Names:
    """Tag name strings of one call, by libxml2 name pointer: a parser interns each element name in its
    document's dictionary, so the nodes of one tag share a pointer (a name that is not shared is decoded
    again, never mistaken). Valid for one call only, while the documents it reads stay alive."""

    cdef const char* pointers[NAME_SLOTS]
    cdef list strings
    cdef int used

    def __cinit__(self):
        self.strings = [None] * NAME_SLOTS
        self.used = 0
        for slot in range(NAME_SLOTS):
            self.pointers[slot] = NULL

    cdef str get(self, const char* name):
        cdef size_t slot = (<size_t>name >> 3) % NAME_SLOTS
        cdef int probe
        for probe in range(NAME_SLOTS):
            if self.pointers[slot] == name:
                return <str>self.strings[slot]
            if self.pointers[slot] is NULL:
                text = _decode(name)
                if self.used < NAME_SLOTS // 2:
                    self.pointers[slot] = name
                    self.strings[slot] = text
                    self.used += 1
                return text
            slot = (slot + 1) % NAME_SLOTS
        return _decode(name)


cdef inline tree.xmlNode* _text_node(tree.xmlNode* node) noexcept:
    """``node`` or the first text/CDATA node after XInclude markers; NULL at any other node (lxml's rule)."""
    while node is not NULL:
        if node.type == tree.XML_TEXT_NODE or node.type == tree.XML_CDATA_SECTION_NODE:
            return node
        if node.type != tree.XML_XINCLUDE_START and node.type != tree.XML_XINCLUDE_END:
            return NULL
        node = node.next
    return NULL


cdef object _text(tree.xmlNode* element):
    """lxml's ``element.text``."""
    cdef tree.xmlNode* first = _text_node(element.children)
    cdef tree.xmlNode* node = first
    cdef const char* found = NULL
    cdef int count = 0
    while node is not NULL:
        if node.content[0] != 0:
            found = <const char*>node.content
        count += 1
        node = _text_node(node.next)
    if found is NULL:
        return "" if count else None
    if count == 1:
        return _decode(found)
    joined = b""
    node = first
    while node is not NULL:
        joined += <bytes>(<const char*>node.content)
        node = _text_node(node.next)
    return joined.decode("utf-8")


cdef dict _fields(_Names tags, tree.xmlNode* parent, frozenset names, bint publishing):
    """tag -> text of ``parent``'s children named in ``names`` (and ``publishing`` -> None if asked)."""
    cdef dict found = {}
    cdef tree.xmlNode* node = parent.children
    while node is not NULL:
        if _is_field(node):
            tag = tags.get(<const char*>node.name)
            if tag in names:
                found[tag] = _text(node)
            elif publishing and _named(node, b"publishing"):
                found[tag] = None
        node = node.next
    return found


def read_streams(list streams not None, frozenset client_fields not None, frozenset video_fields not None):
    """``[nginx_rtmp._read_stream(stream) for stream in streams]``: for each ``<stream>`` element, (its
    fields, each client's fields, meta/video fields, meta/audio fields)."""
    cdef _Names tags = _Names()
    cdef _Element stream
    cdef list read = []
    for stream in streams:
        read.append(_read_stream(tags, stream._c_node, client_fields, video_fields))
    return read


cdef tuple _read_stream(_Names tags, tree.xmlNode* stream, frozenset client_fields, frozenset video_fields):
    cdef dict values = {}
    cdef list clients = []
    cdef dict video = _NO_TEXTS
    cdef dict audio = _NO_TEXTS
    cdef tree.xmlNode* child = stream.children
    cdef tree.xmlNode* part
    cdef tree.xmlNode* item
    while child is not NULL:
        if _is_field(child):
            if _named(child, b"client"):
                clients.append(_fields(tags, child, client_fields, True))
            elif _named(child, b"meta"):
                part = child.children
                while part is not NULL:
                    if _is_field(part):
                        if _named(part, b"video"):
                            video = _fields(tags, part, video_fields, False)
                        elif _named(part, b"audio"):
                            audio = {}
                            item = part.children
                            while item is not NULL:
                                if _is_field(item) and _named(item, b"codec"):
                                    audio["codec"] = _text(item)
                                item = item.next
                    part = part.next
            else:
                values[tags.get(<const char*>child.name)] = _text(child)
        child = child.next
    return values, clients, video, audio
