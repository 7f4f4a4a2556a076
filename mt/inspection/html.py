"""Self-contained HTML pages: one file, inline CSS, no script, no external resource.

Heatmaps are plain tables whose cells carry their colour as an inline style, so a page opens in any
browser (and prints) without matplotlib. Pages are written atomically.
"""

import html
import math

from mt.atomic import atomic_open

# Sequential ramp for weights in [0, 1]: white to deep blue.
SEQUENTIAL = ((255, 255, 255), (198, 220, 239), (99, 160, 207), (30, 96, 164), (8, 44, 98))
# Diverging ramp for activations in [-1, 1]: blue (negative), white (0), red (positive).
DIVERGING = ((34, 94, 168), (120, 170, 210), (255, 255, 255), (235, 130, 105), (180, 20, 40))

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 24px;
       color: #1d1d1f; background: #ffffff; line-height: 1.4; }
h1 { font-size: 1.35em; margin: 0 0 0.3em 0; }
h2 { font-size: 1.05em; margin: 1.6em 0 0.4em 0; }
p.meta, p.note { color: #555; font-size: 0.9em; margin: 0.2em 0; }
section { margin-bottom: 1.6em; }
table.heat { border-collapse: collapse; font-size: 12px; }
table.heat td.w { width: 22px; min-width: 22px; height: 22px; padding: 0; text-align: center;
                  font-size: 9px; border: 1px solid #f2f2f2; }
table.heat th { font-weight: normal; white-space: nowrap; padding: 1px 6px; }
table.heat th.row { text-align: right; }
table.heat th.col { vertical-align: bottom; padding: 4px 0; }
table.heat th.col span { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
.legend { display: flex; align-items: center; gap: 6px; font-size: 0.85em; color: #555; margin: 0.6em 0; }
.legend .bar { display: flex; border: 1px solid #d0d0d0; }
.legend .bar span { display: inline-block; width: 14px; height: 12px; }
.text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; white-space: pre-wrap;
        line-height: 1.9; }
.text span { padding: 2px 0; }
table.list { border-collapse: collapse; font-size: 0.9em; }
table.list th, table.list td { border-bottom: 1px solid #e4e4e4; padding: 3px 10px; text-align: left; }
table.list td.num { text-align: right; font-variant-numeric: tabular-nums; }
code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
"""


def escape(text) -> str:
    return html.escape(str(text), quote=True)


def ramp(value, anchors) -> tuple:
    """The colour at `value` in [0, 1] along evenly spaced anchor colours (linear in RGB)."""
    if value is None or math.isnan(value):
        value = 0.0
    value = min(1.0, max(0.0, float(value)))
    position = value * (len(anchors) - 1)
    low = min(int(position), len(anchors) - 2)
    frac = position - low
    return tuple(round(a + (b - a) * frac) for a, b in zip(anchors[low], anchors[low + 1]))


def css_colour(rgb) -> str:
    return "#%02x%02x%02x" % rgb


def ink_for(rgb) -> str:
    """Black or white text, whichever reads better on the background `rgb`."""
    r, g, b = rgb
    return "#000" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "#fff"


def weight_colour(weight) -> tuple:
    return ramp(weight, SEQUENTIAL)


def activation_colour(activation) -> tuple:
    return ramp((float(activation) + 1.0) / 2.0, DIVERGING)


def legend(anchors, low_label, high_label, steps=11) -> str:
    cells = "".join(f'<span style="background:{css_colour(ramp(i / (steps - 1), anchors))}"></span>'
                    for i in range(steps))
    return (f'<div class="legend"><span>{escape(low_label)}</span><span class="bar">{cells}</span>'
            f'<span>{escape(high_label)}</span></div>')


def heatmap_table(row_labels, col_labels, matrix, show_values=False) -> str:
    """A table heatmap: one row per row label, one column per column label, cells coloured by weight.

    `matrix` is indexable as matrix[row][col] with values in [0, 1]; each cell's tooltip gives its value.
    """
    head = "".join(f'<th class="col"><span>{escape(label)}</span></th>' for label in col_labels)
    rows = [f"<tr><th></th>{head}</tr>"]
    for r, label in enumerate(row_labels):
        cells = []
        for c, col in enumerate(col_labels):
            weight = float(matrix[r][c])
            rgb = weight_colour(weight)
            text = f"{weight:.2f}"[1:] if show_values and weight >= 0.005 else ""
            cells.append(f'<td class="w" style="background:{css_colour(rgb)};color:{ink_for(rgb)}" '
                         f'title="{escape(label)} &#8594; {escape(col)}: {weight:.3f}">{text}</td>')
        rows.append(f'<tr><th class="row">{escape(label)}</th>{"".join(cells)}</tr>')
    return '<table class="heat">' + "".join(rows) + "</table>"


def page(title, body) -> str:
    """A whole HTML document around `body` (already HTML)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def write_page(path, title, body):
    """Write a self-contained page to `path`, atomically."""
    with atomic_open(path) as f:
        f.write(page(title, body))
