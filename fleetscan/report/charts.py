"""Inline SVG charts: the report must open offline, with no script or font from anywhere."""

from __future__ import annotations

from html import escape

SEVERITY_COLORS = {"critical": "#7f1d1d", "high": "#dc2626", "medium": "#f59e0b", "low": "#3b82f6", "none": "#9ca3af"}
OUTCOME_COLORS = {"passed": "#16a34a", "failed": "#dc2626", "error": "#f59e0b", "skipped": "#9ca3af"}


def _svg(kind: str, width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg class="chart" data-chart="{kind}" role="img" aria-label="{escape(title)}" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(title)}</title>{body}</svg>"
    )


def hbars(
    kind: str, title: str, rows: list[tuple[str, float, str]], maximum: float | None = None, unit: str = ""
) -> str:
    """Horizontal bars: (label, value, color)."""
    if not rows:
        return '<p class="empty">nothing to show</p>'
    top = maximum or max(v for _, v, _ in rows) or 1
    label_w, bar_w, row_h = 260, 360, 22
    parts = []
    for i, (label, value, color) in enumerate(rows):
        y = i * row_h
        w = max(1, int(bar_w * value / top))
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{escape(label[:40])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w}" height="{row_h - 6}" fill="{color}">'
            f"<title>{escape(label)}: {value:g}{unit}</title></rect>"
            f'<text x="{label_w + w + 4}" y="{y + 15}">{value:g}{unit}</text>'
        )
    return _svg(kind, label_w + bar_w + 60, len(rows) * row_h + 4, "".join(parts), title)


def stacked(kind: str, title: str, rows: list[tuple[str, dict[str, int]]], colors: dict[str, str]) -> str:
    if not rows:
        return '<p class="empty">nothing to show</p>'
    label_w, bar_w, row_h = 120, 460, 24
    total_max = max(sum(v.values()) for _, v in rows) or 1
    parts = []
    for i, (label, values) in enumerate(rows):
        y, x = i * row_h, label_w
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(label)}</text>')
        for key, color in colors.items():
            count = values.get(key, 0)
            if not count:
                continue
            w = max(1, int(bar_w * count / total_max))
            parts.append(
                f'<rect class="bar" x="{x}" y="{y + 3}" width="{w}" height="{row_h - 6}" fill="{color}">'
                f"<title>{escape(label)} {key}: {count}</title></rect>"
            )
            x += w
    legend = "".join(
        f'<rect x="{label_w + i * 90}" y="{len(rows) * row_h + 6}" width="10" height="10" '
        f'fill="{c}"/><text x="{label_w + i * 90 + 14}" y="{len(rows) * row_h + 15}">{k}</text>'
        for i, (k, c) in enumerate(colors.items())
    )
    return _svg(kind, label_w + bar_w + 20, len(rows) * row_h + 26, "".join(parts) + legend, title)


def heatmap(kind: str, title: str, rows: list[str], columns: list[str], values: dict[tuple[str, str], int]) -> str:
    if not rows:
        return '<p class="empty">nothing to show</p>'
    label_w, cell_w, cell_h = 160, 80, 24
    top = max(values.values(), default=0) or 1
    parts = [
        f'<text x="{label_w + j * cell_w + cell_w / 2}" y="14" text-anchor="middle">{escape(c)}</text>'
        for j, c in enumerate(columns)
    ]
    for i, row in enumerate(rows):
        y = 20 + i * cell_h
        parts.append(f'<text x="{label_w - 6}" y="{y + 16}" text-anchor="end">{escape(row)}</text>')
        for j, column in enumerate(columns):
            count = values.get((row, column), 0)
            alpha = 0.08 + 0.92 * count / top if count else 0.03
            color = SEVERITY_COLORS.get(column, "#dc2626")
            parts.append(
                f'<rect class="cell" x="{label_w + j * cell_w}" y="{y}" width="{cell_w - 2}" '
                f'height="{cell_h - 2}" fill="{color}" fill-opacity="{alpha:.2f}">'
                f"<title>{escape(row)} / {escape(column)}: {count} failed</title></rect>"
                f'<text x="{label_w + j * cell_w + cell_w / 2}" y="{y + 16}" text-anchor="middle">'
                f"{count or ''}</text>"
            )
    return _svg(kind, label_w + len(columns) * cell_w + 10, 24 + len(rows) * cell_h, "".join(parts), title)


def line(kind: str, title: str, points: list[tuple[str, float]]) -> str:
    """A line over runs (oldest first) of values 0-100."""
    if not points:
        return '<p class="empty">no earlier runs yet</p>'
    width, height, pad = 620, 180, 30
    step = (width - 2 * pad) / max(1, len(points) - 1)
    coords = [(pad + i * step, height - pad - (height - 2 * pad) * v / 100) for i, (_, v) in enumerate(points)]
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    dots = "".join(
        f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="#2563eb">'
        f"<title>{escape(label)}: {v:g}%</title></circle>"
        for (x, y), (label, v) in zip(coords, points, strict=True)
    )
    axis = (
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>'
        f'<text x="4" y="{pad}">100%</text><text x="4" y="{height - pad}">0%</text>'
    )
    body = axis + f'<path d="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>' + dots
    return _svg(kind, width, height, body, title)
