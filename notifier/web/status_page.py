"""The status page at / on the metrics server: one server-rendered HTML
page, no CDN and no framework (it must work offline), refreshing itself.

Read-only unless ``metrics.admin_token`` is set; then two actions, "retry
this dead letter" and "poll this task now", are POSTed with the token in
the form body. A cross-site form cannot know the token, and a request a
browser marks cross-site is refused before the token is even compared.
Every PlanFix string is escaped; the Content-Security-Policy lets no
script run but the page's own (by nonce), as a second line of defence.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from html import escape
from urllib.parse import quote

from aiohttp import web

from ..ops.overview import PAGE, Overview, TaskRow
from ..ops.status_text import deadline_text, next_poll_text, quota_line, render_text
from .burndown import burndown_svg
from .server import Handler, Routes

REFRESH_S = 30
MAX_FORM = 4096

# (offset, how many tasks, the account: None for the first) → the overview;
# ValueError for an account there is not
Gather = Callable[[int, int, str | None], Awaitable[Overview]]
# an id (and the account it is of) → what was done, in words (ValueError: refused, why)
Action = Callable[[int, str | None], Awaitable[str]]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1rem 2rem;color:#222;background:#fafafa}
h1{font-size:1.3rem;margin:0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
header{display:flex;gap:1rem;align-items:baseline;flex-wrap:wrap}
.ok{color:#16794a}.bad{color:#b3261e;font-weight:600}.unknown{color:#8a6d00}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e2e2e2;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.said{background:#e8f4ea;padding:.5rem;border-radius:4px}
.said.refused{background:#fbe9e7}
svg.burndown{max-width:720px;width:100%;background:#fff;border:1px solid #e2e2e2}
rect.bar{fill:#4a7bd0}rect.bar.over{fill:#d08a2e}line.pace{stroke:#b3261e;stroke-dasharray:6 4}
line.base{stroke:#999}text.axis{font-size:11px;fill:#555}
form.inline{display:inline;margin:0}button{font-size:12px}
nav a{margin-right:1rem}
"""

SCRIPT = """
const box = document.getElementById('token');
if (box) {
  box.value = sessionStorage.getItem('admin_token') || '';
  box.addEventListener('input', () => sessionStorage.setItem('admin_token', box.value));
  document.querySelectorAll('form.action').forEach(form => form.addEventListener('submit', () => {
    form.querySelector('input[name=token]').value = box.value;
  }));
}
if (location.search.includes('note=')) {  // the refresh must not repeat what was said
  const url = new URL(location.href); url.searchParams.delete('note');
  history.replaceState(null, '', url);
}
"""


class Notes:
    """What the last actions said, by a random key in the redirect's URL: the
    page shows only what this service said (a link cannot put words on it)."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self._said: OrderedDict[str, tuple[str, bool]] = OrderedDict()

    def add(self, text: str, *, refused: bool = False) -> str:
        key = secrets.token_urlsafe(8)
        self._said[key] = (text, refused)
        while len(self._said) > self.keep:
            self._said.popitem(last=False)
        return key

    def get(self, key: str) -> tuple[str, bool] | None:
        return self._said.get(key)


def page_routes(
    gather: Gather,
    *,
    token: str | None,
    retry: Action,
    poll_now: Action,
    hosts: Sequence[str] = (),
) -> Routes:
    notes = Notes()

    def guarded(handler: Handler) -> Handler:
        """Only for a Host this service answers to (DNS rebinding: a page
        elsewhere, its name pointed at 127.0.0.1, must not read this one)."""

        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            if not _our_host(request.host, hosts):
                return _refused(421, f"not served for the host {request.host[:100]!r}; "
                                "add it to metrics.hosts")  # fmt: skip
            return await handler(request)

        return handle

    async def page(request: web.BaseRequest) -> web.Response:
        offset = _int(request.query.get("offset", "0")) or 0
        note = notes.get(request.query.get("note", ""))
        nonce = secrets.token_urlsafe(16)
        try:
            ov = await gather(offset, PAGE, request.query.get("account"))
        except ValueError as exc:
            return _refused(404, str(exc))
        body = render_page(ov, nonce=nonce, actions=token is not None, note=note)
        response = web.Response(text=body, content_type="text/html")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
            "img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    def action(do: Action, field: str) -> Handler:
        async def handle(request: web.BaseRequest) -> web.Response:
            why = _forged(request)
            if why:
                return _refused(403, why)
            if token is None:
                return _refused(403, "actions are off; set metrics.admin_token")
            if (request.content_length or 0) > MAX_FORM:
                return _refused(413, "the form is too large")
            form = await request.post()
            given = str(form.get("token", ""))
            if not hmac.compare_digest(given.encode(), token.encode()):
                return _refused(403, "wrong or missing admin token")
            target = _int(str(form.get(field, "")))
            if target is None:
                return _refused(400, f"{field} must be a number")
            account = str(form["account"]) if form.get("account") else None
            try:
                key = notes.add(await do(target, account))
            except ValueError as exc:
                key = notes.add(str(exc), refused=True)
            # See Other: the browser shows the page again by GET (a reload repeats nothing),
            # of the account the action was on.
            of = f"&account={quote(account)}" if account else ""
            return web.Response(status=303, headers={"Location": f"/?note={key}{of}"})

        return handle

    async def text(request: web.BaseRequest) -> web.Response:
        """``status``'s text; ``?limit=N&offset=M`` for more than a page of tasks."""
        offset = _int(request.query.get("offset", "0")) or 0
        limit = _int(request.query.get("limit", str(PAGE))) or PAGE
        try:
            ov = await gather(offset, limit, request.query.get("account"))
        except ValueError as exc:
            return _refused(404, str(exc))
        return web.Response(text=render_text(ov))

    routes: dict[tuple[str, str], Handler] = {
        ("GET", "/"): page,
        ("GET", "/status.txt"): text,
        ("POST", "/actions/retry"): action(retry, "outbox_id"),
        ("POST", "/actions/poll"): action(poll_now, "task_id"),
    }
    return {route: guarded(handler) for route, handler in routes.items()}


def _our_host(host: str, hosts: Sequence[str]) -> bool:
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name in ("localhost", *(h.lower() for h in hosts)):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _refused(status: int, why: str) -> web.Response:
    """A small page a browser shows, with the way back; one line for curl."""
    body = (
        '<!doctype html><meta charset="utf-8"><title>refused</title>'
        f'<p id="refused">refused: {escape(why)}</p><p><a href="/">back to the status page</a>\n'
    )
    return web.Response(status=status, text=body, content_type="text/html")


def _forged(request: web.BaseRequest) -> str | None:
    """A browser says where a request comes from; a page elsewhere may not act here."""
    site = request.headers.get("Sec-Fetch-Site")  # a page's script cannot set it
    if site is not None:
        return None if site in ("same-origin", "none") else f"a {site} request"
    origin = request.headers.get("Origin")  # older browsers: the origin must be ours
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        return "the request comes from another origin"
    return None


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


# --- the page -----------------------------------------------------------------------------


def render_page(
    ov: Overview, *, nonce: str, actions: bool, note: tuple[str, bool] | None = None
) -> str:
    e = escape
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_S}">',
        f"<title>planfix-notifier — {e(_health_word(ov))}</title>",
        f"<style>{STYLE}</style></head><body>",
        "<header><h1>planfix-notifier</h1>",
        _health(ov),
        f"<span>as of {e(ov.local(ov.at, '%d.%m %H:%M:%S %Z'))} (times in {e(ov.tz)}); "
        f"refreshes every {REFRESH_S} s</span></header>",
    ]
    if actions:
        parts.append(
            '<p id="admin"><label>admin token for the actions '
            '<input type="password" id="token" autocomplete="off"></label> '
            "(metrics.admin_token; kept in this tab only)</p>"
        )
    if note is not None:
        text, refused = note
        parts.append(
            f'<p class="said refused" id="said">refused: {e(text)}</p>'
            if refused
            else f'<p class="said" id="said">{e(text)}</p>'
        )
    of = f" — {e(ov.account)}" if ov.accounts else ""
    parts += [
        _accounts(ov),
        f'<section id="quota"><h2>Quota today{of}</h2>',
        f"<p>{e(quota_line(ov.quota, ov))}</p>",
        burndown_svg(ov.quota),
        f"<p>{e(ov.feed)}<br>{e(ov.push)}</p></section>",
        _instances(ov),
        _tasks(ov, actions),
        _outbox(ov, actions),
    ]
    parts.append(f'<script nonce="{nonce}">{SCRIPT}</script></body></html>')
    return "".join(parts)


def _accounts(ov: Overview) -> str:
    """Where the service watches several accounts: each at a glance, and
    the link to its tasks."""
    if not ov.accounts:
        return ""
    rows = [
        [
            f'<a href="/?account={quote(a.name)}">{escape(a.name)}</a>'
            + (" (shown)" if a.name == ov.account else ""),
            a.watched,
            f"{a.quota.used} of {a.quota.daily}",
            escape(a.polled_by or "this instance"),
        ]
        for a in ov.accounts
    ]
    return (
        '<section id="accounts"><h2>Accounts</h2>'
        + _table("account-list", ["account", "watched", "quota used", "polled by"], rows, "")
        + "</section>"
    )


def _instances(ov: Overview) -> str:
    if not ov.leases:
        return ""
    items = "".join(f"<li>{escape(line.strip())}</li>" for line in ov.leases[1:])
    heading = escape(ov.leases[0])
    return f'<section id="instances"><h2>Instances</h2><p>{heading}</p><ul>{items}</ul></section>'


def _health_word(ov: Overview) -> str:
    return "unknown" if ov.healthy is None else "healthy" if ov.healthy else "UNHEALTHY"


def _health(ov: Overview) -> str:
    if ov.healthy is None:
        return '<span class="unknown" id="health">health unknown</span>'
    if ov.healthy:
        return '<span class="ok" id="health">healthy</span>'
    return f'<span class="bad" id="health">UNHEALTHY: {escape(ov.why)}</span>'


def _tasks(ov: Overview, actions: bool) -> str:
    first, last = ov.offset + 1, ov.offset + len(ov.tasks)
    shown = f" — {first}–{last}" if ov.tasks else ""
    head = ["id", "number", "title", "status", "deadline", "last poll", "result", "next poll",
            "last change", "set"]  # fmt: skip
    if actions:
        head.append("")
    rows = "".join(_task_row(ov, row, actions) for row in ov.tasks)
    nav = []
    of = f"account={quote(ov.account)}&amp;" if ov.accounts else ""
    if ov.offset > 0:
        nav.append(f'<a href="/?{of}offset={max(0, ov.offset - PAGE)}">← earlier</a>')
    if last < ov.total_tasks:
        nav.append(f'<a href="/?{of}offset={last}">later →</a>')
    account = f" — {escape(ov.account)}" if ov.accounts else ""
    return (
        f'<section id="tasks"><h2>Watched tasks{account}: {ov.total_tasks}{shown}</h2>'
        f"<table><thead><tr>{''.join(f'<th>{h}</th>' for h in head)}</tr></thead>"
        f"<tbody>{rows}</tbody></table><nav>{''.join(nav)}</nav></section>"
    )


def _task_row(ov: Overview, row: TaskRow, actions: bool) -> str:
    e = escape
    result = (row.last_result or "—") + (f" ×{row.failures}" if row.failures else "")
    cells = [
        f'<td class="num">{row.task_id}</td>',
        f'<td class="num">{row.number if row.number is not None else "—"}</td>',
        f'<td class="title">{e(row.title)}</td>',
        f"<td>{e(row.status or '—')}</td>",
        f"<td>{e(deadline_text(row))}</td>",
        f"<td>{e(ov.local(row.last_poll_at))}</td>",
        f"<td>{e(result)}</td>",
        f"<td>{e(next_poll_text(ov, row))}</td>",
        f"<td>{e(ov.local(row.last_change_at))}</td>",
        f"<td>{e(', '.join(row.sets))}</td>",
    ]
    if actions:
        account = ov.account if ov.accounts else None
        form = _action_form("/actions/poll", "task_id", row.task_id, "poll now", account)
        cells.append(f"<td>{form}</td>")
    return f'<tr data-task="{row.task_id}">{"".join(cells)}</tr>'


def _action_form(path: str, field: str, target: int, label: str, account: str | None = None) -> str:
    of = f'<input type="hidden" name="account" value="{escape(account)}">' if account else ""
    return (
        f'<form class="inline action" method="post" action="{path}">'
        f'<input type="hidden" name="{field}" value="{target}">{of}'
        '<input type="hidden" name="token" value="">'
        f"<button>{label}</button></form>"
    )


def _outbox(ov: Overview, actions: bool) -> str:
    e = escape
    retry = [""] if actions else []
    channels = [
        [e(c.channel), c.pending, e(ov.local(c.oldest_pending_at)), c.sent, c.dead,
         e(c.last_error or "")]
        for c in ov.channels
    ]  # fmt: skip
    pending = [
        [i.id, e(i.channel), e(i.recipient), e(i.event.kind.value), i.attempts,
         e(ov.local(i.next_attempt_at)), e(i.last_error or "")]
        for i in ov.pending
    ]  # fmt: skip
    dead = [
        [i.id, e(i.channel), e(i.recipient), e(i.event.kind.value), e(ov.local(i.done_at)),
         e(i.last_error or ""),
         *([_action_form("/actions/retry", "outbox_id", i.id, "retry")] if actions else [])]
        for i in ov.dead
    ]  # fmt: skip
    recent = [
        [e(ov.local(event.at.timestamp())), e(event.kind.value),
         e(_about(event.task.title if event.task else "")),
         e(", ".join(f"{channel} {state}" for channel, state in deliveries) or "no route")]
        for _, event, deliveries in ov.recent
    ]  # fmt: skip
    return "".join(
        [
            '<section id="outbox"><h2>Outbox</h2>',
            _table("channels", ["channel", "pending", "oldest pending", "sent", "dead",
                                "last error"], channels, "nothing queued yet"),
            "<h2>Pending deliveries</h2>",
            _table("pending", ["#", "channel", "to", "event", "attempts", "next try",
                               "last error"], pending, "none", keys=[i.id for i in ov.pending]),
            "<h2>Dead letters</h2>",
            _table("dead", ["#", "channel", "to", "event", "given up", "why", *retry], dead,
                   "none", keys=[i.id for i in ov.dead]),
            "<h2>Recent alerts</h2>",
            _table("recent", ["when", "event", "task", "deliveries"], recent, "none yet"),
            "</section>",
        ]
    )  # fmt: skip


def _about(title: str) -> str:
    return title if len(title) <= 80 else title[:79] + "…"


def _table(
    name: str,
    head: list[str],
    rows: Sequence[Sequence[object]],
    empty: str,
    keys: Sequence[int] = (),
) -> str:
    """Cells come escaped (or as our own markup); numbers align right.
    ``keys``: each row's id, as ``data-id`` (for scripts and tests)."""
    if not rows:
        return f'<p id="{name}-empty">{empty}</p>'
    cells = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(
        (f'<tr data-id="{keys[n]}">' if keys else "<tr>")
        + "".join(
            f'<td class="num">{c}</td>' if isinstance(c, int) else f"<td>{c}</td>" for c in row
        )
        + "</tr>"
        for n, row in enumerate(rows)
    )
    return f'<table id="{name}"><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>'
