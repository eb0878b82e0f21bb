"""The emulated PlanFix XML API: one request body in, one HTTP answer out.

Written from the PlanFix side on purpose (JSON task records rendered to XML
with lxml), so that the client's parser is tested against something it does
not share code with.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from . import feeds
from .state import STATUS_SETS, Account, Fault

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
MULTI_LIMIT = 100
FEED_METHODS = ("task.getList", "action.getListByPeriod")


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the answer
    trickle_s: float = 0.0  # between the bytes of its body
    reset: bool = False  # close the connection without answering
    content_type: str = "application/xml; charset=utf-8"


class ApiError(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def _document(root: etree._Element) -> bytes:
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def error_body(code: str) -> bytes:
    root = etree.Element("response", status="error")
    etree.SubElement(root, "code").text = code
    return _document(root)


def _sub(parent: etree._Element, tag: str, text: object = None) -> etree._Element:
    child = etree.SubElement(parent, tag)
    if text is not None:
        child.text = str(text)
    return child


def _flag(value: object) -> str:
    return "1" if value else "0"


def _nested(parent: etree._Element, tag: str, value: Any) -> None:
    """Render a JSON value as XML: dicts become elements, scalars text."""
    element = _sub(parent, tag)
    if isinstance(value, dict):
        for key, sub in value.items():
            _nested(element, key, sub)
    elif value is not None:
        element.text = _flag(value) if isinstance(value, bool) else str(value)


class Renderer:
    def __init__(self, account: Account) -> None:
        self.account = account
        self.modern = account.settings.shape == "modern"

    def ref(self, card: etree._Element, tag: str, value: Any) -> None:
        element = _sub(card, tag)
        if isinstance(value, dict):
            _sub(element, "id", value.get("id", 0))
            if self.modern and value.get("name"):
                _sub(element, "name", value["name"])
        else:
            _sub(element, "id", value or 0)

    def people(self, card: etree._Element, tag: str, value: dict[str, Any] | None) -> None:
        element = _sub(card, tag)
        for kind, item_tag in (("users", "user"), ("groups", "group")):
            container = _sub(element, kind)
            for person in (value or {}).get(kind, []):
                if self.modern:
                    item = _sub(container, item_tag)
                    _sub(item, "id", person["id"])
                    if person.get("name"):
                        _sub(item, "name", person["name"])
                else:
                    _sub(container, "id", person["id"])

    def task(
        self, task: dict[str, Any], *, with_id: bool = True, members: bool = True
    ) -> etree._Element:
        card = etree.Element("task")
        if with_id:
            _sub(card, "id", task["id"])
        _sub(card, "title", task.get("title", ""))
        _sub(card, "description", task.get("description", ""))
        _sub(card, "importance", task.get("importance", "AVERAGE"))
        _sub(card, "status", task.get("status", 2))
        if self.modern:
            _sub(card, "statusSet", task.get("statusSet", 1))
        _sub(card, "checkResult", _flag(task.get("checkResult")))
        for tag in ("owner", "parent", "project", "client"):
            self.ref(card, tag, task.get(tag))
        for tag in ("beginDateTime", "startTime", "endTime"):
            _sub(card, tag, task.get(tag) or None)
        _sub(card, "general", task["general"])
        overdue, close = self.account.flags(task)
        _sub(card, "isOverdued", _flag(overdue))
        _sub(card, "isCloseToDeadline", _flag(close))
        _sub(card, "isNotAcceptedInTime", _flag(task.get("isNotAcceptedInTime")))
        _sub(card, "starred", _flag(task.get("starred")))
        self.people(card, "workers", task.get("workers"))
        if self.modern:
            if members:
                self.people(card, "members", task.get("members"))
                self.people(card, "auditors", task.get("auditors"))
            _sub(card, "type", task.get("type", "task"))
            if task.get("template"):
                _sub(_sub(card, "template"), "id", task["template"])
            for tag in ("duration", "durationUnit"):
                _sub(card, tag, task.get(tag))
            _sub(card, "isSummary", _flag(task.get("isSummary")))
            custom = _sub(card, "customData")
            for value in task.get("customData", []):
                _nested(custom, "customValue", value)
        if task.get("periodicity"):
            _nested(card, "periodicity", task["periodicity"])
        for tag, text in (task.get("garbled") or {}).items():
            element = card.find(tag)
            (element if element is not None else _sub(card, tag)).text = str(text)
        return card


def _ids(root: etree._Element, path: str) -> list[int]:
    ids = []
    for element in root.iterfind(path):
        try:
            ids.append(int((element.text or "").strip()))
        except ValueError:
            raise ApiError("0009") from None
    return ids


def _requested_task_ids(root: etree._Element) -> frozenset[int]:
    try:
        return frozenset(_ids(root, "task/id") + _ids(root, "tasks/id"))
    except ApiError:
        return frozenset()


def _signature_base(children: Iterable[etree._Element]) -> str:
    parts = []
    for child in sorted(children, key=lambda el: str(el.tag)):
        parts.append(_signature_base(child) if len(child) else (child.text or ""))
    return "".join(parts)


class XmlApi:
    def __init__(self, account: Account) -> None:
        self.account = account

    def handle(self, authorization: str | None, body: bytes) -> Answer:
        account = self.account
        try:
            root = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError:
            return Answer(body=error_body("0003"))
        method = str(root.get("method") or "")
        with account.lock:
            answer = Answer()
            if self._too_fast():
                return Answer(status=429, body=b"Too Many Requests", headers={"Retry-After": "1"})
            cost = len(_ids(root, "tasks/id")) if method == "task.getMulti" else 1
            if account.settings.multi_cost != "per_task":
                cost = 1
            within_quota = account.count_request(method, max(cost, 1))
            if account.settings.send_remaining:
                answer.headers["X-RateLimit-Remaining"] = str(account.quota_remaining)
            if not within_quota:
                answer.body = error_body("0007")
                return answer
            task_ids = _requested_task_ids(root)
            fault = account.take_fault(method, task_ids)
            if fault is not None and fault.kind == "stale_remaining":
                answer.headers["X-RateLimit-Remaining"] = "0"  # PlanFix's count lags
                fault = None
            timing = fault is not None and fault.kind in ("slow", "trickle")
            if fault is not None and not timing and not _per_task(fault, method):
                return _faulty(fault, answer)
            if fault is not None and fault.kind == "slow":
                answer.delay_s = fault.delay_s
            if fault is not None and fault.kind == "trickle":
                answer.trickle_s = fault.delay_s
            try:
                self._authenticate(method, root, authorization)
                answer.body = _document(self._dispatch(method, root, fault))
            except (ApiError, feeds.FeedError) as exc:
                answer.body = error_body(exc.code)
            return answer

    def _too_fast(self) -> bool:
        limit = self.account.settings.rps_limit
        now = self.account.clock.now_ts()
        last, self.account.last_request_ts = self.account.last_request_ts, now
        if not limit or last is None:
            return False
        return now - last < 1.0 / limit

    def _authenticate(self, method: str, root: etree._Element, authorization: str | None) -> None:
        settings = self.account.settings
        user, secret = _basic(authorization)
        if user != settings.api_key:
            raise ApiError("0001")
        account_name = (root.findtext("account") or "").strip()
        if account_name in settings.other_dc_accounts:
            raise ApiError("0024")
        if account_name != settings.account:
            raise ApiError("0004")
        if settings.signature_key:
            given = (root.findtext("signature") or "").strip()
            base = method + _signature_base(c for c in root if c.tag != "signature")
            expected = hashlib.md5(
                (base + settings.signature_key).encode(), usedforsecurity=False
            ).hexdigest()
            if given != expected:
                raise ApiError("0006")
        sid = (root.findtext("sid") or "").strip()
        if method == "auth.login" or (secret == settings.token and not sid):
            return
        if not sid:
            raise ApiError("0012")
        if not self.account.session_valid(sid):
            raise ApiError("0005")

    def _dispatch(self, method: str, root: etree._Element, fault: Fault | None) -> etree._Element:
        account = self.account
        response = etree.Element("response", status="ok")
        render = Renderer(account)
        if method == "auth.login":
            login = (root.findtext("login") or "").strip()
            password = root.findtext("password") or ""
            if login != account.settings.login or password != account.settings.password:
                raise ApiError("1001")
            _sub(response, "sid", account.new_session())
        elif method == "task.get":
            response.append(render.task(self._one_task(root), with_id=render.modern))
        elif method == "task.getMulti":
            if not account.settings.supports_multi:
                raise ApiError("0008")
            ids = _ids(root, "tasks/id")
            if len(ids) > MULTI_LIMIT:
                raise ApiError("0021")
            hidden = fault.task_id if fault is not None and fault.kind == "error" else None
            found = [
                account.tasks[i]
                for i in ids
                if i in account.tasks and account.tasks[i].get("access", True) and i != hidden
            ]
            container = _sub(response, "tasks")
            container.set("count", str(len(found)))
            container.set("totalCount", str(len(found)))
            for task in found:
                container.append(render.task(task))
        elif method in FEED_METHODS and method not in account.settings.feed_methods:
            raise ApiError("0008")
        elif method == "task.getList":
            response.append(feeds.task_list(account, root, lambda t: render.task(t, members=False)))
        elif method == "action.getListByPeriod":
            response.append(feeds.action_list(account, root))
        elif method == "taskStatus.getSetList":
            container = _sub(response, "taskStatusSets")
            container.set("count", str(len(STATUS_SETS)))
            for set_id, (name, _) in STATUS_SETS.items():
                item = _sub(container, "taskStatusSet")
                _sub(item, "id", set_id)
                _sub(item, "name", name)
        elif method == "taskStatus.getListOfSet":
            asked = _ids(root, "taskStatusSet/id")
            if not asked:
                raise ApiError("0009")
            if asked[0] not in STATUS_SETS:
                raise ApiError("0000")
            container = _sub(response, "taskStatuses")
            for status_id, name, active in STATUS_SETS[asked[0]][1]:
                item = _sub(container, "taskStatus")
                _sub(item, "id", status_id)
                _sub(item, "name", name)
                _sub(item, "isActive", _flag(active))
                _sub(item, "hasDeadline", "1")
        else:
            raise ApiError("0008")
        return response

    def _one_task(self, root: etree._Element) -> dict[str, Any]:
        ids = _ids(root, "task/id")
        numbers = _ids(root, "task/general")
        if ids:
            task = self.account.tasks.get(ids[0])
        elif numbers:
            task = self.account.task_by_general(numbers[0])
        else:
            raise ApiError("0009")
        if task is None:
            raise ApiError("3001")
        if not task.get("access", True):
            raise ApiError("3008")
        return task


def _per_task(fault: Fault, method: str) -> bool:
    """An error aimed at one task inside a batch hides that task, not the batch."""
    return fault.kind == "error" and fault.task_id is not None and method == "task.getMulti"


def _basic(authorization: str | None) -> tuple[str, str]:
    if not authorization or not authorization.startswith("Basic "):
        return "", ""
    try:
        decoded = base64.b64decode(authorization[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    user, _, secret = decoded.partition(":")
    return user, secret


_HTML_PAGE = (
    b"<html><head><title>502 Bad Gateway</title></head><body><center>"
    b"<h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)


def _faulty(fault: Fault, answer: Answer) -> Answer:
    if fault.kind == "http_error":
        answer.status, answer.body = fault.status, _HTML_PAGE
        answer.content_type = "text/html"
    elif fault.kind == "html":
        answer.body, answer.content_type = _HTML_PAGE, "text/html"
    elif fault.kind == "error":
        answer.body = error_body(fault.code)
    elif fault.kind == "malformed":
        answer.body = b'<?xml version="1.0" encoding="UTF-8"?><response status="ok"><task><id>1'
    elif fault.kind == "wrong_root":
        answer.body = b'<?xml version="1.0"?><error><message>maintenance</message></error>'
    elif fault.kind == "xml_bomb":
        lol = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
        answer.body = (
            f'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY l0 "lol">{lol}]>'
            '<response status="ok"><task><title>&l9;</title></task></response>'
        ).encode()
    elif fault.kind == "xxe":
        answer.body = (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<response status="ok"><task><id>1</id><title>&x;</title></task></response>'
        )
    elif fault.kind == "huge":
        filler = b"<description>" + b"x" * (10 * 1024 * 1024) + b"</description>"
        answer.body = (
            b'<?xml version="1.0"?><response status="ok"><task>' + filler + b"</task></response>"
        )
    elif fault.kind == "non_utf8":
        answer.body = (
            '<?xml version="1.0" encoding="UTF-8"?><response status="ok"><task><id>1</id>'
            "<title>Задача</title></task></response>"
        ).encode("cp1251")
    elif fault.kind == "reset":
        answer.reset = True
    return answer
