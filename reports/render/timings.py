"""The ``--timings`` table: seconds per step of one or several runs (metrics.json's ``timings``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["timings_table"]


def timings_table(columns: Mapping[str, Mapping[str, float]], order: Sequence[str] = ()) -> str:
    """Plain-text table of seconds per step, one column per run, and each step's share of ``total``.

    Args:
        columns: run label -> ``{step: seconds}`` (e.g. metrics.json's ``timings``, whose
            ``total`` is the run's whole time). A step a run did not do shows ``-``.
        order: steps in this order first; the others follow as they first appear.

    Returns:
        Lines ``step  seconds...``, ``total`` last, seconds with 2 decimals; for one run also each
        step's share of its ``total``.

    Raises:
        ValueError: no columns, or a value that is not a finite number >= 0.
    """
    if not columns:
        raise ValueError("columns is empty; pass e.g. {'run': metrics['timings']}")
    steps = [s for s in order if any(s in c for c in columns.values())]
    for c in columns.values():
        for step, value in c.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0 or value == float("inf"):
                raise ValueError(f"timings[{step!r}] = {value!r} must be seconds >= 0")
            if step not in steps:
                steps.append(step)
    if "total" in steps:
        steps.remove("total")
        steps.append("total")
    first = next(iter(columns.values()))
    total = first.get("total") if len(columns) == 1 else None
    labels = list(columns)
    width = max(len(s) for s in [*steps, "step"])
    widths = [max(8, len(label)) for label in labels]
    head = f"  {'step':<{width}}  " + "  ".join(f"{label:>{w}}" for label, w in zip(labels, widths))
    lines = [head + ("   share" if total else "")]
    for step in steps:
        cells = "  ".join(f"{c[step]:>{w}.2f}" if step in c else f"{'-':>{w}}" for c, w in zip(columns.values(), widths))
        share = f"  {first[step] / total:>6.1%}" if total and step in first else ""
        lines.append(f"  {step:<{width}}  {cells}{share}")
    return "\n".join(lines)
