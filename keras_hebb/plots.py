"""The plot helper of every report (robustness, results, sweep): a figure
drawn without a display, then laid out and written.

Example:

```python
from keras_hebb import plots

fig, ax = plots.figure(size=(5, 3.5))
ax.plot([0.0, 0.1, 0.2], [0.9, 0.7, 0.4], marker="o")
plots.save(fig, "noise.png", dpi=120)
```
"""


def figure(rows=1, columns=1, size=(5, 3.5), **kwargs):
    """A new matplotlib `(figure, axes)` drawn by the Agg canvas (no display
    needed); `kwargs` go to `Figure.subplots`. matplotlib's object API: no
    backend switch and no pyplot state, so a notebook's plotting is left
    as it was."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, columns, **kwargs)


def save(fig, path, dpi=120, tight_box=False):
    """Writes `fig` to `path`; returns `path`.

    The layout is `fig.tight_layout()`, or with `tight_box` the saved area
    shrunk to the drawing (`bbox_inches="tight"`, for figures with a
    suptitle over many small axes).
    """
    if tight_box:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    else:
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    return path
