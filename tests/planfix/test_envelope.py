"""The request envelope, the signature and safe parsing, without a server."""

from __future__ import annotations

import hashlib

import pytest
from lxml import etree

from notifier.planfix.envelope import Body, build_request, parse_response, sign, signature_base
from notifier.planfix.errors import BadResponseError, ErrorClass, PlanfixApiError


def test_signature_base_reproduces_planfix_worked_example() -> None:
    request = etree.fromstring(
        build_request("auth.login", "acc", [("login", "login"), ("password", "passw")])
    )
    assert signature_base(request) == "auth.loginaccloginpassw"


def test_signature_sorts_every_level_and_keeps_repeated_tags_in_order() -> None:
    body: Body = [("tasks", [("id", 3), ("general", 9), ("id", 1)]), ("sid", "S")]
    request = etree.fromstring(build_request("task.getMulti", "acc", body))
    # account, sid, tasks → (general, id, id) with the ids in document order.
    assert signature_base(request) == "task.getMultiaccS931"


def test_signature_is_md5_of_base_and_key_and_is_sent() -> None:
    raw = build_request("task.get", "acc", [("task", [("id", 5)])], signature_key="k3y")
    request = etree.fromstring(raw)
    expected = hashlib.md5(b"task.getacc5k3y", usedforsecurity=False).hexdigest()
    assert request.findtext("signature") == expected == sign(request, "k3y")


def test_envelope_is_utf8_with_method_account_and_sid() -> None:
    raw = build_request("task.get", "acme", [("task", [("id", 7)])], sid="abc")
    assert raw.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    request = etree.fromstring(raw)
    assert request.get("method") == "task.get"
    assert [c.tag for c in request] == ["account", "sid", "task"]
    assert request.findtext("task/id") == "7"


def test_text_is_escaped_in_requests() -> None:
    raw = build_request("auth.login", "acc", [("login", "<a&b>"), ("password", "п\"'")])
    request = etree.fromstring(raw)
    assert request.findtext("login") == "<a&b>"
    assert request.findtext("password") == "п\"'"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", "an HTML page"),
        (b"<data/>", "root element <data>"),
        (b'<?xml version="1.0"?><response status="ok"><task>', "not well-formed"),
        (b"", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (b'<response status="maybe"/>', "response status 'maybe'"),
        (b'<!DOCTYPE r [<!ENTITY a "b">]><response status="ok">&a;</response>', "DTD"),
        ('<response status="ok"><t>Привет</t></response>'.encode("cp1251"), "not well-formed"),
    ],
)
def test_bad_responses_become_one_typed_error(body: bytes, reason: str) -> None:
    with pytest.raises(BadResponseError) as caught:
        parse_response(body, method="task.get")
    assert reason in str(caught.value)
    assert caught.value.error_class is ErrorClass.TRANSIENT


def test_oversized_response_is_refused_before_parsing() -> None:
    with pytest.raises(BadResponseError, match="larger than"):
        parse_response(b"<response status='ok'>" + b" " * (6 * 1024 * 1024) + b"</response>")


def test_error_response_carries_code_and_class() -> None:
    with pytest.raises(PlanfixApiError) as caught:
        parse_response(b'<response status="error"><code>3001</code></response>', method="task.get")
    assert caught.value.code == "3001"
    assert caught.value.error_class is ErrorClass.TASK
    assert "task does not exist" in str(caught.value)


def test_error_without_code_is_unknown_and_transient() -> None:
    with pytest.raises(PlanfixApiError) as caught:
        parse_response(b'<response status="error"/>')
    assert caught.value.code == "0000"
    assert caught.value.transient


def test_undocumented_code_is_transient_not_fatal() -> None:
    with pytest.raises(PlanfixApiError) as caught:
        parse_response(b'<response status="error"><code>99999</code></response>')
    assert caught.value.error_class is ErrorClass.TRANSIENT
    assert "undocumented" in str(caught.value)
