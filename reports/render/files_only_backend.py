"""A matplotlib backend that only writes files: Agg without the redraw after ``pyplot.savefig``.

``pyplot.savefig`` saves the figure, then calls ``fig.canvas.draw_idle()`` to refresh a window;
Agg has no window but still redraws the whole figure (a second full render per chart). quantstats
saves every tear-sheet chart through ``pyplot.savefig``, so under Agg each chart was rendered twice.
Here ``draw_idle`` does nothing; what is saved is unchanged (the redraw wrote nowhere).
Selected by :mod:`reports.render.tearsheet` as ``module://reports.render.files_only_backend``.
"""

from __future__ import annotations

from matplotlib.backend_bases import _Backend
from matplotlib.backends.backend_agg import FigureCanvasAgg, _BackendAgg


class FigureCanvasFilesOnly(FigureCanvasAgg):
    """Agg's canvas; ``draw_idle`` is a no-op (nothing is shown, so nothing needs a redraw)."""

    def draw_idle(self, *args, **kwargs) -> None:
        return None


@_Backend.export
class _BackendFilesOnly(_BackendAgg):
    FigureCanvas = FigureCanvasFilesOnly
