"""The XML envelope: building requests, signing them, reading responses safely.

Responses are untrusted input. They are parsed with no DTD, no entity
expansion and no network, after a size cap, and anything that is not a
``<response status="ok|error">`` document becomes one :class:`BadResponseError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import TypeAlias

from lxml import etree

from .errors import BadResponseError, PlanfixApiError

MAX_RESPONSE_BYTES = 5 * 1024 * 1024
EXCERPT_CHARS = 120

# A request body is a tree of (tag, value) pairs: a value is text, or a list of
# pairs for nested elements. Pairs keep order and allow repeated tags (<id/><id/>).
Value: TypeAlias = "str | int | Sequence[tuple[str, Value]]"
Body: TypeAlias = Sequence[tuple[str, Value]]

_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def _append(parent: etree._Element, tag: str, value: Value) -> None:
    child = etree.SubElement(parent, tag)
    if isinstance(value, str | int):
        child.text = str(value)
    else:
        for sub_tag, sub_value in value:
            _append(child, sub_tag, sub_value)


def build_request(
    method: str,
    account: str,
    body: Body = (),
    *,
    sid: str | None = None,
    signature_key: str | None = None,
) -> bytes:
    root = etree.Element("request", method=method)
    _append(root, "account", account)
    if sid:
        _append(root, "sid", sid)
    for tag, value in body:
        _append(root, tag, value)
    if signature_key:
        _append(root, "signature", sign(root, signature_key))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def signature_base(request: etree._Element) -> str:
    """``method`` + the values of the request's children, sorted by tag at every
    level (repeated tags keep document order), ``signature`` left out."""
    return str(request.get("method", "")) + _concat_values(
        child for child in request if child.tag != "signature"
    )


def _concat_values(children: Iterable[etree._Element]) -> str:
    ordered = sorted(children, key=lambda el: str(el.tag))  # sorted() is stable
    parts = []
    for child in ordered:
        if len(child):
            parts.append(_concat_values(child))
        else:
            parts.append(child.text or "")
    return "".join(parts)


def sign(request: etree._Element, key: str) -> str:
    # md5 is PlanFix's choice for this signature, not ours.
    digest = hashlib.md5((signature_base(request) + key).encode(), usedforsecurity=False)
    return digest.hexdigest()


def excerpt(raw: bytes) -> str:
    text = raw[: EXCERPT_CHARS * 4].decode("utf-8", errors="replace")
    return " ".join(text.split())[:EXCERPT_CHARS]


def parse_response(raw: bytes, *, method: str | None = None) -> etree._Element:
    """Parse and validate a PlanFix answer; return the ``<response>`` element
    of a successful one, raise :class:`PlanfixApiError` for an error one."""
    if len(raw) > MAX_RESPONSE_BYTES:
        raise BadResponseError(f"larger than {MAX_RESPONSE_BYTES} bytes", method=method)
    if raw[:512].lstrip()[:14].lower().startswith((b"<html", b"<!doctype html")):
        raise BadResponseError("an HTML page, not XML", excerpt=excerpt(raw), method=method)
    if b"<!DOCTYPE" in raw or b"<!ENTITY" in raw:
        # No legitimate PlanFix answer has a DTD; refusing it outright is the
        # only sure defence against entity bombs and external entities.
        raise BadResponseError("a DTD or entity declaration", excerpt=excerpt(raw), method=method)
    try:
        root = etree.fromstring(raw, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        reason = f"not well-formed XML ({str(exc).splitlines()[0][:80]})"
        raise BadResponseError(reason, excerpt=excerpt(raw), method=method) from None
    if root.tag != "response":
        raise BadResponseError(
            f"root element <{root.tag}>, expected <response>", excerpt=excerpt(raw), method=method
        )
    status = root.get("status")
    if status == "ok":
        return root
    if status == "error":
        code = (root.findtext("code") or "").strip() or "0000"
        raise PlanfixApiError(
            code, method=method, server_message=(root.findtext("message") or "").strip()
        )
    raise BadResponseError(f"response status {status!r}", excerpt=excerpt(raw), method=method)


def text_of(parent: etree._Element, path: str) -> str | None:
    """The stripped text at ``path``, or None where it is absent or empty."""
    found = parent.findtext(path)
    if found is None:
        return None
    found = found.strip()
    return found or None
