"""Turn the reliability run's JUnit XML into the README's "Reliability" table.

python -m tests.reliability.report bench/results/reliability.xml README.md
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree  # our own pytest output, not untrusted input

BEGIN, END = "<!-- reliability:begin -->", "<!-- reliability:end -->"
WHAT = {
    "test_fault_during_the_baseline": "PlanFix fault while taking the baseline (HTTP 500/502/503, timeout, reset, "
    "malformed XML, HTML page, wrong root, XML bomb, XXE, 10 MB body, non-UTF-8, 0005, 0007, 0011, 3014, "
    "0024, 0000, a one-off 3001/3008): no false alert, a later change alerted once",
    "test_fault_during_a_real_change": "the same faults while a task really changes: the change alerted exactly once, nothing false",
    "test_a_task_really_deleted_is_told_once": "a task really deleted: one task_unavailable",
    "test_one_clear_line_and_exit_2": "broken configurations (TOML, types, missing keys and secrets, bad channels, routes, bot): one line naming file and key, exit 2, no traceback",
    "test_an_unreadable_file": "an unreadable config file: one line, exit 2",
    "test_kill_9_at_random_moments_loses_nothing": "kill -9 at 30 seeded random moments during a stream of changes: every change the service "
    "recorded alerted, the newest title of every task alerted, duplicates ≤ messages in flight",
    "test_a_channel_fault_loses_nothing": "channel fault while alerts are queued for Telegram and e-mail (Telegram 429, 5xx, slower than "
    "the timeout, down; SMTP down, 451, untrusted TLS certificate; for good: Telegram 403, 400, SMTP 550): the other "
    "channel delivers meanwhile, nothing lost, order kept, dead letters with the reason only for the for-good ones",
    "test_hostile_text_is_shown_as_text_everywhere": "hostile task title and description (HTML, Markdown, CR/LF header "
    "injection, 100 KB, RTL overrides, emoji, DTD/entity look-alikes) from PlanFix to Telegram, e-mail and webhook: "
    "accepted, shown as text, no injected header or recipient, the webhook carries it exactly",
    "test_two_hours_of_polling_leave_memory_and_descriptors_flat": "soak: two hours of the service's day at 1 request/s "
    "(7200 requests), run at 20/s with changes, alerts, /metrics scrapes and reloads: RSS and open descriptors flat",
    "test_a_session_of_the_service_leaks_no_secret": "a service session at DEBUG through alerts, a PlanFix HTML page and "
    "XXE, Telegram 5xx, good and bad reloads: no API key, token, bot token or SMTP password in any output",
    "test_wrong_password_is_fatal_and_names_no_secret": "a wrong PlanFix password: a fatal error that names no secret",
    "test_a_stranger_is_refused_politely": "bot commands from a chat that is not allowed: refused, nothing subscribed",
    "test_plain_http_to_a_remote_host_is_refused": "http:// to a non-loopback host refused (PlanFix endpoint, webhook, Telegram API)",
    "test_a_password_never_goes_in_clear_to_a_remote_host": "an SMTP password without TLS to a non-loopback host refused",
    "test_new_file_is_private_and_current": "the state file (and its -wal, -shm) created 0600",
    "test_a_trickling_answer_is_cut_at_timeout_s": "never silent 1: PlanFix trickles its answer a byte every 0.5 s: "
    "the request is given up after timeout_s (it caps the whole exchange), polling goes on, the change alerted",
    "test_one_unreadable_card_fails_only_its_task": "never silent 2: one unreadable card in a task.getMulti answer: its "
    "neighbours alerted, the bad one asked alone with task.get, its error names the task and the field",
    "test_recovery_after_an_outage_is_at_once": "never silent 3: ten minutes of HTTP errors, HTML, truncated XML and "
    "resets, then PlanFix is fine: one probe at a time during the outage (≤ 60 s apart), a change right after it "
    "alerted within 90 s (per-task back-off used to hold it up to an hour)",
    "test_one_remaining_zero_header_is_advice_not_a_day_off": "never silent 5: one stale `X-RateLimit-Remaining: 0`: "
    "polling blocked only until a probe 10 minutes later, /healthz 503 with the reason meanwhile, one quota_exhausted "
    "and one quota_restored, then the change alerted",
    "test_a_reload_to_a_broken_channel_keeps_the_running_one": "never silent 8: SIGHUP to a config with an empty bot "
    "token file, then to a template that cannot render: each refused in one log line naming the key or the "
    "file:line, the running channels keep delivering",
    "test_a_template_that_cannot_work_fails_check_and_run": "never silent 9: a template override that does not "
    "compile, or compiles but cannot render a sample of every event: `check` fails naming file:line, `run` exits 2 "
    "in one line",
    "test_sigterm_during_a_send_lets_it_finish_instead_of_sending_it_twice": "never silent 13: SIGTERM while "
    "Telegram slowly answers a send: the send finishes within the drain deadline, the receiver gets one copy",
    "test_a_send_whose_result_cannot_be_recorded_is_not_sent_again": "never silent 11: the disk fills while a "
    "delivery is in flight (recording it as sent fails 3 times): held as sent in memory, the record retried, "
    "one copy sent",
    "test_a_digest_cut_short_records_the_parts_that_went_out": "never silent 12: a digest in several Telegram "
    "messages with a 429 or a block on part 3: the parts that went out are recorded, nothing sent twice, only the "
    "rest retried or dead-lettered",
    "test_telegram_unreachable_at_start_does_not_stop_the_service": "never silent 7: [bot] set and Telegram "
    "unreachable at start: the service runs without the bot, polls, alerts by e-mail, tells the operator there, "
    "retries the bot in the background; no traceback",
    "test_every_start_up_failure_is_one_line_and_exit_2": "never silent 10: a state path that is a folder, a state "
    "folder that cannot be written, a metrics port taken: exit 2 with one line, no traceback",
    "test_a_state_file_that_cannot_be_written_turns_health_503": "never silent 10: the state file cannot be written "
    "under a running service: /healthz 503 with the reason, one log line, healthy again once it saves",
    "test_the_heartbeat_url_hears_of_healthy_rounds_at_most_once_a_minute": "health: `heartbeat_url` gets a GET "
    "after a healthy round, once a minute however many rounds run",
    "test_a_channel_that_delivers_nothing_while_due_is_unhealthy": "health: a channel retried for over "
    "`channel_stuck_after_s` with nothing delivered: /healthz 503, one WARNING when it starts failing, one line "
    "when it delivers again",
    "test_on_demand_reads_are_capped_at_the_reserve": "never silent 15: on-demand reads of 50 ids that do not "
    "exist with a 200-request day: 10 spent (the 5 % reserve), 190 left to the planner",
    "test_a_second_instance_on_one_state_is_refused": "never silent 6: a second `run` on the same state: exit 2 with one "
    "line naming the first one's PID; `status` works beside it; the lock goes with the process",
    "test_idle_and_vanishing_http_clients_hold_nothing_and_log_only_json": "never silent 14: 400 idle half-open "
    "connections to /metrics and 200 clients that reset before the answer: no thread per connection, /healthz "
    "answers at once, the oldest idle ones are closed beyond 100, a silent client is cut after 10 s, every log line "
    "is JSON",
    "test_a_wall_clock_step_neither_freezes_polling_nor_turns_health_red": "never silent 4: the wall clock steps "
    "back 10 minutes, then forward across midnight, under a running service: a change after each alerted within "
    "seconds (a step back used to freeze polling for its length), /healthz stays 200, the new day has a fresh quota",
    "test_a_message_held_up_on_the_way_does_not_crowd_the_next": "never silent 16: a Telegram message held up "
    "0.4 s on the way: the next one to that chat still arrives a second after it, no 429 (each turn counts from "
    "when the previous send finished)",
    "test_a_configuration_error_met_at_run_time_is_named_and_not_retried_blindly": "health: configuration errors "
    "met at run time (a wrong account, 0004; an SMTP server without AUTH while `username` is set; a bot token "
    "Telegram refuses, 401): one log line naming the key, /healthz 503 with the cause, the operator told through "
    "the channel that works, no blind retry, the deliveries kept (not dead letters)",
}
RESULTS = Path("bench/results")


def figures(name: str) -> str:
    """The last run's figures from the tests that write them, to show in their row."""
    path = RESULTS / {"test_kill_9_at_random_moments_loses_nothing": "crashes.json",
                      "test_two_hours_of_polling_leave_memory_and_descriptors_flat": "soak.json"
                      }.get(name, "-")  # fmt: skip
    if not path.is_file():
        return ""
    run = json.loads(path.read_text())
    if "kills" in run:
        return (
            f" — last run: {run['changes']} changes made, {run['recorded']} recorded by the service, "
            f"{run['alerted']} alerted, {_count(run['duplicates'], 'duplicate')}"
        )
    rss, fds = run["rss_mb"], run["fds"]
    return (
        f" — last run: {run['requests']} requests in {run['minutes']} min, {run['changes']} changes; "
        f"RSS {rss[0]} → {rss[1]} MB, descriptors {fds[0]} → {fds[1]} after the warm-up"
    )


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def rows(xml: Path) -> list[tuple[str, int, int]]:
    tried: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for case in ElementTree.parse(xml).iter("testcase"):  # noqa: S314 - see the import
        name = re.sub(r"\[.*\]$", "", case.get("name", ""))
        tried[name] += 1
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            held[name] += 1
    return [(WHAT.get(name, name) + figures(name), tried[name], held[name]) for name in tried]


def table(found: list[tuple[str, int, int]]) -> str:
    lines = ["| what was tried | times | held |", "|---|---|---|"]
    lines += [f"| {what} | {times} | {ok} |" for what, times, ok in found]
    return "\n".join(lines)


def main() -> None:
    xml, readme = Path(sys.argv[1]), Path(sys.argv[2])
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    readme.write_text(text[:start] + "\n" + table(rows(xml)) + "\n" + text[end:], encoding="utf-8")


if __name__ == "__main__":
    main()
