"""Plain-text and markdown tables for the CLI's reports."""


def _cell(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def format_table(rows, columns, markdown=False):
    """rows: dicts; columns: keys to show, in order."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(r) + " |" for r in cells]
        return "\n".join(lines)
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
