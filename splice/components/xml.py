"""The xml component: parse XML into plain values and render such values back into XML.

Element keys come from the caller's namespace prefixes, so a mapping reads ``cbc:ID``
whatever prefix a sender chose. Parsing never loads a DTD, never opens the network and
rejects any document whose DOCTYPE declares entities (billion laughs, external entities).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any
from xml.parsers.expat import ExpatError, ParserCreate

from lxml import etree

from splice.components.files import read_file, resolve_path
from splice.sdk import ActionContext, ActionError, Component, Input

component = Component("xml", description="Parse and render XML")

XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
TEXT_KEY = "#text"
ATTRIBUTE_MARK = "@"
# Bytes fed to the entity pre-scan at a time; the scan stops at the root element's start tag.
SCAN_CHUNK_BYTES = 64 * 1024
_POSITION_SUFFIX = re.compile(r", line \d+, column \d+$")


@component.action(
    inputs={
        "path": Input("string", description="XML file to parse; give path or content"),
        "content": Input("string|bytes", description="XML text or bytes; give path or content"),
        "namespaces": Input(
            "object", description="Prefix to namespace URI; these prefixes name the keys"
        ),
        "force_list": Input(
            "list|boolean",
            description="Keys that are always lists, even when they occur once; true for all",
        ),
        "strip_whitespace": Input(
            "boolean", default=True, description="Strip leading and trailing whitespace of text"
        ),
    },
    description="Parse an XML document into objects, lists and strings",
    output="object with root (its key), namespace (its URI or null) and document (its value)",
)
def parse(
    context: ActionContext,
    *,
    path: str | None,
    content: str | bytes | None,
    namespaces: Mapping[str, Any] | None,
    force_list: list[Any] | bool | None,
    strip_whitespace: bool,
) -> dict[str, Any]:
    """Parse one document from ``path`` or ``content``.

    An element without attributes or children becomes its text. Any other element becomes
    an object with ``@attribute`` keys, child keys and ``#text`` when it has text. A key
    that occurs more than once, or is listed in ``force_list``, has a list as its value.
    """
    data, source, is_text = _load(context, path, content)
    caller_prefixes = _caller_prefixes(namespaces)
    list_keys = _list_keys(force_list)
    _reject_entity_declarations(data, source, is_text)
    root = _parse_tree(data, source, is_text)
    names = _KeyNames(caller_prefixes, root)
    document = _convert(root, names, list_keys, strip_whitespace)
    return {
        "root": names.element_key(root.tag),
        "namespace": etree.QName(root).namespace,
        "document": document,
    }


def _load(
    context: ActionContext, path: str | None, content: str | bytes | None
) -> tuple[bytes, str, bool]:
    """Return the document's bytes, a name for messages, and whether it was given as text."""
    if (path is None) == (content is None):
        raise ActionError(
            "xml.parse needs exactly one of the path and content inputs", retryable=False
        )
    if path is not None:
        file = resolve_path(context, path)
        return read_file(file), str(file), False
    if isinstance(content, str):
        # Text is already decoded, so its encoding declaration no longer applies.
        return content.removeprefix("\ufeff").encode("utf-8"), "content", True
    return bytes(content or b""), "content", False


def _caller_prefixes(namespaces: Mapping[str, Any] | None) -> dict[str, str]:
    """Invert ``namespaces`` to URI -> prefix; the first prefix given for a URI wins."""
    prefixes: dict[str, str] = {}
    for prefix, uri in (namespaces or {}).items():
        if not isinstance(uri, str) or not uri:
            raise ActionError(
                f"namespaces[{prefix!r}] must be a namespace URI string, got {uri!r}",
                retryable=False,
            )
        prefixes.setdefault(uri, prefix)
    return prefixes


def _list_keys(force_list: list[Any] | bool | None) -> set[str] | bool:
    if force_list is None or isinstance(force_list, bool):
        return bool(force_list)
    for key in force_list:
        if not isinstance(key, str):
            raise ActionError(
                f"force_list must list element keys as strings, got {key!r}", retryable=False
            )
    return set(force_list)


class _EntityDeclared(Exception):
    pass


class _RootReached(Exception):
    pass


def _reject_entity_declarations(data: bytes, source: str, is_text: bool) -> None:
    """Raise ActionError when the DOCTYPE before the root element declares an entity.

    Expat reads only the prolog and calls back on each declaration before any entity is
    referenced, so a hostile document is stopped before anything expands.
    """
    scanner = ParserCreate("utf-8" if is_text else None)

    def on_entity(name: str, *_: Any) -> None:
        raise _EntityDeclared(name)

    def on_start(*_: Any) -> None:
        raise _RootReached

    scanner.EntityDeclHandler = on_entity
    scanner.StartElementHandler = on_start
    try:
        for offset in range(0, len(data), SCAN_CHUNK_BYTES):
            scanner.Parse(data[offset : offset + SCAN_CHUNK_BYTES], False)
        scanner.Parse(b"", True)
    except _EntityDeclared as declared:
        raise _entity_error(source, str(declared)) from None
    except (_RootReached, ExpatError):
        # Malformed XML is reported by lxml below, with its own line and reason.
        return
    except (LookupError, ValueError) as error:  # an unknown or mismatched declared encoding
        raise ActionError(
            f"{source} cannot be decoded as its XML declaration says ({error}); fix the "
            "encoding in the declaration or re-save the file in that encoding",
            retryable=False,
        ) from None


def _entity_error(source: str, name: str) -> ActionError:
    return ActionError(
        f"{source} declares the entity {name!r} in its DOCTYPE; entity declarations are "
        "rejected because they can expand without bound or read local files. "
        "Remove the DOCTYPE or ask the sender for a document without entities",
        retryable=False,
    )


def _parse_tree(data: bytes, source: str, is_text: bool) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        # huge_tree lifts libxml2's 10 MB limit on one text node (embedded attachments).
        huge_tree=True,
        remove_comments=True,
        remove_pis=True,
        encoding="utf-8" if is_text else None,
    )
    try:
        root = etree.fromstring(data, parser)
    except etree.XMLSyntaxError as error:
        raise _syntax_error(source, error) from None
    # Second line of defence, for encodings the expat pre-scan could not read.
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is not None:
        for entity in dtd.iterentities():
            raise _entity_error(source, entity.name)
    return root


def _syntax_error(source: str, error: etree.XMLSyntaxError) -> ActionError:
    line, column = error.position
    # lxml appends ", line L, column C" to the reason; the message gives them once.
    reason = _POSITION_SUFFIX.sub("", error.msg or "unknown error")
    return ActionError(
        f"{source} is not well-formed XML: {reason} at line {line}, column {column}; "
        "fix the document or ask its sender for a valid one",
        retryable=False,
    )


class _KeyNames:
    """Keys of elements and attributes: the caller's prefix, else the document's own."""

    def __init__(self, caller_prefixes: dict[str, str], root: etree._Element) -> None:
        self.caller_prefixes = caller_prefixes
        self.document_prefixes: dict[str, str] = {XML_NAMESPACE: "xml"}
        # An attribute never takes the default namespace, so it needs a non-empty prefix.
        self.attribute_prefixes: dict[str, str] = {XML_NAMESPACE: "xml"}
        for _, (prefix, uri) in etree.iterwalk(root, events=("start-ns",)):
            self.document_prefixes.setdefault(uri, prefix or "")
            if prefix:
                self.attribute_prefixes.setdefault(uri, prefix)

    def element_key(self, tag: str) -> str:
        return self._key(tag, self.document_prefixes)

    def attribute_key(self, name: str) -> str:
        return ATTRIBUTE_MARK + self._key(name, self.attribute_prefixes)

    def _key(self, clark_name: str, document_prefixes: dict[str, str]) -> str:
        if not clark_name.startswith("{"):
            return clark_name
        uri, _, local = clark_name[1:].partition("}")
        prefix = self.caller_prefixes.get(uri)
        if prefix is None:
            prefix = document_prefixes.get(uri, "")
        return f"{prefix}:{local}" if prefix else local


def _convert(
    root: etree._Element, names: _KeyNames, list_keys: set[str] | bool, strip: bool
) -> Any:
    """Return the value of ``root``, building each element's value after its children's.

    A stack instead of recursion keeps deeply nested documents within Python's limits.
    """
    stack: list[list[tuple[str, Any]]] = [[]]
    for event, element in etree.iterwalk(root, events=("start", "end"), tag=etree.Element):
        if event == "start":
            stack.append([])
            continue
        children = stack.pop()
        value = _element_value(element, children, names, list_keys, strip)
        stack[-1].append((names.element_key(element.tag), value))
    return stack[0][0][1]


def _element_value(
    element: etree._Element,
    children: list[tuple[str, Any]],
    names: _KeyNames,
    list_keys: set[str] | bool,
    strip: bool,
) -> Any:
    # Mixed content: the text before the first child and after each child, joined.
    text = "".join([element.text or "", *(child.tail or "" for child in element)])
    if strip:
        text = text.strip()
    if not element.attrib and not children:
        return text
    value: dict[str, Any] = {}
    for name, attribute in element.attrib.items():
        value[names.attribute_key(name)] = attribute
    for key, child in children:
        _add_child(value, key, child, list_keys)
    if text.strip():
        value[TEXT_KEY] = text
    return value


def _add_child(value: dict[str, Any], key: str, child: Any, list_keys: set[str] | bool) -> None:
    # An element's value is a string or an object, never a list, so a list here is a repeat.
    if list_keys is True or (list_keys and key in list_keys):
        value.setdefault(key, []).append(child)
    elif key not in value:
        value[key] = child
    elif isinstance(value[key], list):
        value[key].append(child)
    else:
        value[key] = [value[key], child]


@component.action(
    inputs={
        "document": Input("any", required=True, description="Value of the root element"),
        "root": Input("string", required=True, description="Key of the root element"),
        "namespaces": Input(
            "object", description='Prefix to namespace URI; "" sets the default namespace'
        ),
        "declaration": Input("boolean", default=True, description="Start with <?xml ...?>"),
        "encoding": Input(
            "string", default="utf-8", description="Encoding named in the declaration"
        ),
        "pretty": Input("boolean", default=False, description="Indent nested elements"),
    },
    description="Render a value shaped like the output of xml.parse as an XML document",
    output="string",
)
def render(
    context: ActionContext,
    *,
    document: Any,
    root: str,
    namespaces: Mapping[str, Any] | None,
    declaration: bool,
    encoding: str,
    pretty: bool,
) -> str:
    """Render ``document`` as the element ``root``, the inverse of xml.parse.

    Keys follow xml.parse: ``@name`` for attributes, ``#text`` for text, ``prefix:Local``
    for elements in a namespace, and a list for a repeated element. Numbers and booleans
    are written as text and bytes as base64. Text mixed between children is not kept apart,
    so ``#text`` is written before the first child.
    """
    resolver = _QualifiedNames(namespaces)
    try:
        element = etree.Element(resolver.element(root, "root"), nsmap=resolver.nsmap)
    except ValueError as error:
        raise ActionError(f"root {root!r} is not a valid XML name", retryable=False) from error
    try:
        _fill(element, document, resolver, root)
        data = etree.tostring(
            element, xml_declaration=declaration, encoding=encoding, pretty_print=pretty
        )
        return data.decode(encoding)
    except RecursionError:
        raise ActionError(
            "document is nested too deeply to render; flatten it", retryable=False
        ) from None
    except LookupError as error:
        raise ActionError(
            f"unknown encoding {encoding!r}; give an encoding such as 'utf-8' or 'ISO-8859-1'",
            retryable=False,
        ) from error


class _QualifiedNames:
    """Clark names (``{uri}local``) of the keys in a document to render."""

    def __init__(self, namespaces: Mapping[str, Any] | None) -> None:
        self.uris: dict[str, str] = {"xml": XML_NAMESPACE}
        self.nsmap: dict[str | None, str] = {}
        for prefix, uri in (namespaces or {}).items():
            if not isinstance(uri, str) or not uri:
                raise ActionError(
                    f"namespaces[{prefix!r}] must be a namespace URI string, got {uri!r}",
                    retryable=False,
                )
            self.uris[prefix] = uri
            self.nsmap[prefix or None] = uri

    def element(self, key: str, where: str) -> str:
        prefix, _, local = key.rpartition(":")
        if not prefix:
            default = self.uris.get("")
            return f"{{{default}}}{local}" if default else local
        return f"{{{self._uri(prefix, key, where)}}}{local}"

    def attribute(self, key: str, where: str) -> str:
        prefix, _, local = key.rpartition(":")
        if not prefix:
            return local
        return f"{{{self._uri(prefix, key, where)}}}{local}"

    def _uri(self, prefix: str, key: str, where: str) -> str:
        uri = self.uris.get(prefix)
        if uri is None:
            raise ActionError(
                f"key {key!r} at {where} uses the prefix {prefix!r}, which the namespaces "
                "input does not define; add it there",
                retryable=False,
            )
        return uri


def _fill(element: etree._Element, value: Any, names: _QualifiedNames, where: str) -> None:
    """Set the attributes, text and children of ``element`` from ``value``."""
    if not isinstance(value, dict):
        _set_text(element, value, where)
        return
    for key, item in value.items():
        if key == TEXT_KEY:
            _set_text(element, item, f"{where}/{key}")
        elif key.startswith(ATTRIBUTE_MARK):
            _set_attribute(element, key, item, names, where)
        else:
            for entry in item if isinstance(item, list) else [item]:
                _add_element(element, key, entry, names, where)


def _add_element(
    parent: etree._Element, key: str, value: Any, names: _QualifiedNames, where: str
) -> None:
    if isinstance(value, list):
        raise ActionError(
            f"{where}/{key} is a list inside a list, which XML cannot represent; give a repeated "
            "element as one flat list of values",
            retryable=False,
        )
    try:
        child = etree.SubElement(parent, names.element(key, where))
    except ValueError as error:
        raise ActionError(
            f"key {key!r} at {where} is not a valid XML name", retryable=False
        ) from error
    _fill(child, value, names, f"{where}/{key}")


def _set_attribute(
    element: etree._Element, key: str, value: Any, names: _QualifiedNames, where: str
) -> None:
    name = names.attribute(key[len(ATTRIBUTE_MARK) :], where)
    try:
        element.set(name, _text_of(value, f"{where}/{key}") or "")
    except ValueError as error:
        raise ActionError(
            f"attribute {key!r} at {where} cannot be written: {error}", retryable=False
        ) from error


def _set_text(element: etree._Element, value: Any, where: str) -> None:
    try:
        element.text = _text_of(value, where)
    except ValueError as error:
        raise ActionError(f"text at {where} cannot be written: {error}", retryable=False) from error


def _text_of(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    raise ActionError(
        f"{where} is a {type(value).__name__}; text and attributes hold strings, numbers, "
        "booleans, bytes or null",
        retryable=False,
    )
