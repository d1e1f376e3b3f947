"""Execute the documentation's notebooks as CI does: ``python docs/notebooks/run.py [NOTEBOOK ...]``.

Every cell of each notebook (default: every ``docs/notebooks/*.ipynb``) runs in a fresh ``python3`` kernel
started in the notebook's own folder, as Jupyter would start it, with this checkout first on ``PYTHONPATH``.
A cell that raises fails the command (exit 1, the cell and its traceback printed); outputs are not written
back (the notebooks are committed without them). Prints each notebook's wall time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[2]


def run(path: Path, timeout_s: int = 600) -> tuple[float, list[str]]:
    """Execute every cell of ``path``: (seconds it took, ``"cell N: first line"`` of each cell output written to
    stderr). Raises CellExecutionError on a failing cell."""
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - t0
    stderr = [f"cell {i}: {out.text.strip().splitlines()[0] if out.text.strip() else '(blank)'}"
              for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "stream" and out.name == "stderr"]
    return seconds, stderr


def main(argv: list[str]) -> int:
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    paths = [Path(a).resolve() for a in argv] or sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
    for path in paths:
        try:
            seconds, stderr = run(path)
        except CellExecutionError as exc:
            print(f"{path.relative_to(ROOT)}: a cell failed\n{exc}", file=sys.stderr)
            return 1
        print(f"{path.relative_to(ROOT)}: every cell ran in {seconds:.1f} s")
        for line in stderr:  # the API is quiet by default: anything here came from elsewhere (a library, the plot)
            print(f"  note: {line} (written to stderr)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
