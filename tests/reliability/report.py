"""Turn the reliability run's JUnit XML into the README's "Reliability" table.

python -m tests.reliability.report bench/results/reliability.xml README.md
"""

from __future__ import annotations

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
    "test_kill_9_at_random_moments_loses_nothing": "kill -9 at 30 seeded random moments during a stream of changes: every change alerted, duplicates ≤ messages in flight",
}


def rows(xml: Path) -> list[tuple[str, int, int]]:
    tried: Counter[str] = Counter()
    held: Counter[str] = Counter()
    for case in ElementTree.parse(xml).iter("testcase"):  # noqa: S314 - see the import
        name = re.sub(r"\[.*\]$", "", case.get("name", ""))
        tried[name] += 1
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            held[name] += 1
    return [(WHAT.get(name, name), tried[name], held[name]) for name in tried]


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
