from lxml import etree

_Texts = dict[object, str | None]

def read_streams(
    streams: list[etree._Element], client_fields: frozenset[str], video_fields: frozenset[str]
) -> list[tuple[_Texts, list[_Texts], _Texts, _Texts]]: ...
