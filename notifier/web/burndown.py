"""The day's requests per hour as an SVG bar chart, against the even pace
(the daily quota over 24 hours): drawn on the server, so the page needs no
script or chart library to show it."""

from __future__ import annotations

from ..ops.overview import QuotaView

WIDTH, HEIGHT = 720, 180
LEFT, BOTTOM, TOP = 44, 22, 10  # room for the axis labels


def burndown_svg(quota: QuotaView) -> str:
    hours = quota.hours[: quota.hour_now + 1]
    pace = quota.even_per_hour
    top = max([*hours, pace * 1.25, 1])
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / 24

    def y(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    parts = [
        f'<svg class="burndown" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="requests per hour today against the even pace" '
        f'xmlns="http://www.w3.org/2000/svg">'
    ]
    for hour, count in enumerate(hours):
        x = LEFT + hour * slot + 2
        over = " over" if count > pace else ""
        parts.append(
            f'<rect class="bar{over}" data-hour="{hour}" x="{x:.1f}" y="{y(count):.1f}" '
            f'width="{slot - 4:.1f}" height="{plot_h * count / top:.1f}">'
            f"<title>{hour:02d}:00–{hour + 1:02d}:00: {count} requests</title></rect>"
        )
    for hour in range(0, 24, 3):
        x = LEFT + hour * slot + slot / 2
        parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - 6}">{hour:02d}</text>')
    parts.append(
        f'<line class="pace" x1="{LEFT}" x2="{WIDTH}" y1="{y(pace):.1f}" y2="{y(pace):.1f}">'
        f"<title>even pace: {pace:.0f} requests an hour</title></line>"
        f'<text class="axis" x="2" y="{y(pace) + 4:.1f}">{pace:.0f}/h</text>'
        f'<line class="base" x1="{LEFT}" x2="{WIDTH}" y1="{y(0)}" y2="{y(0)}"/></svg>'
    )
    return "".join(parts)
