"""The overview as plain text: what ``status`` prints, and what the running
service serves at /status.txt for it."""

from __future__ import annotations

from .overview import Overview, QuotaView, TaskRow

RESULT_WIDTH = 11


def render_text(ov: Overview, *, not_running: str = "") -> str:
    lines = [f"status at {ov.local(ov.at, '%d.%m %H:%M:%S %Z')} (times in {ov.tz})"]
    if ov.healthy is None:
        lines.append(f"health: unknown — {not_running or 'the service is not running'}; "
                     "next polls are known only to it")  # fmt: skip
    else:
        lines.append("health: ok" if ov.healthy else f"health: UNHEALTHY — {ov.why}")
    if ov.accounts:
        lines += ["", *account_lines(ov), "", f"account {ov.account}:"]
    lines += ["", *task_lines(ov), "", quota_line(ov.quota, ov), ov.feed, ov.push, *ov.leases]
    lines.append("")
    lines += outbox_lines(ov)
    return "\n".join(lines) + "\n"


def account_lines(ov: Overview) -> list[str]:
    lines = [f"accounts: {len(ov.accounts)} (the details below: {ov.account})"]
    for a in ov.accounts:
        polled = f"; polled by {a.polled_by}" if a.polled_by else ""
        lines.append(
            f"  {a.name}: {a.watched} tasks watched; quota {a.quota.used} of {a.quota.daily} "
            f"used{polled}"
        )
    return lines


def task_lines(ov: Overview) -> list[str]:
    shown = f" (showing {ov.offset + 1}–{ov.offset + len(ov.tasks)})" if ov.tasks else ""
    lines = [f"watched tasks: {ov.total_tasks}{shown}"]
    if not ov.tasks:
        return lines
    lines.append(
        f"{'id':>8} {'number':>7}  {'status':<14} {'deadline':<12} {'last poll':<12} "
        f"{'result':<{RESULT_WIDTH}} {'next poll':<21} {'changed':<12} title"
    )
    lines += [_task_line(ov, row) for row in ov.tasks]
    return lines


def _task_line(ov: Overview, row: TaskRow) -> str:
    number = str(row.number) if row.number is not None else "—"
    result = (row.last_result or "—") + (f" ×{row.failures}" if row.failures else "")
    return (
        f"{row.task_id:>8} {number:>7}  {_cut(row.status or '—', 14):<14} "
        f"{deadline_text(row):<12} {ov.local(row.last_poll_at):<12} "
        f"{_cut(result, RESULT_WIDTH):<{RESULT_WIDTH}} {next_poll_text(ov, row):<21} "
        f"{ov.local(row.last_change_at):<12} {row.title}"
    )


def deadline_text(row: TaskRow) -> str:
    if row.deadline is None:
        return "—"
    return row.deadline.strftime("%d.%m %H:%M" if row.deadline_has_time else "%d.%m")


def next_poll_text(ov: Overview, row: TaskRow) -> str:
    if row.next_poll_at is None:
        return "—"
    if row.next_reason == "none":
        return "not planned"
    if row.next_poll_at <= ov.at + 1:
        return f"now ({row.next_reason})"
    return f"{ov.local(row.next_poll_at)} ({row.next_reason})"


def quota_line(q: QuotaView, ov: Overview) -> str:
    hours_gone = q.hour_now + 1
    pace = q.used / hours_gone  # (not the hours' sum: a day begun before they were counted)
    line = (
        f"quota {q.day}: {q.used} of {q.daily} used ({q.on_demand} on demand), {q.left} left; "
        f"{pace:.0f}/h so far against an even {q.even_per_hour:.0f}/h; "
        f"resets {ov.local(q.resets_at, '%d.%m %H:%M %Z')}"
    )
    return line + ("; exhausted (PlanFix said 0007)" if q.exhausted else "")


def outbox_lines(ov: Overview) -> list[str]:
    if not ov.channels:
        return ["outbox: empty"]
    lines = ["outbox:"]
    for c in ov.channels:
        oldest = f" (oldest {ov.local(c.oldest_pending_at)})" if c.oldest_pending_at else ""
        error = f"; last error: {c.last_error}" if c.last_error else ""
        lines.append(f"  {c.channel}: {c.pending} pending{oldest}, {c.sent} sent, "
                     f"{c.dead} dead letters{error}")  # fmt: skip
    for item in ov.pending:
        lines.append(f"  pending #{item.id} {item.channel} → {item.recipient}: "
                     f"{item.attempts} attempts, next {ov.local(item.next_attempt_at)}"
                     + (f"; {item.last_error}" if item.last_error else ""))  # fmt: skip
    for item in ov.dead:
        why = item.last_error or "no reason kept"
        lines.append(f"  dead    #{item.id} {item.channel} → {item.recipient} "
                     f"{ov.local(item.done_at)}: {why}")  # fmt: skip
    return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
