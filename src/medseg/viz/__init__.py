"""Figures for reports, written atomically with the Agg canvas (no global matplotlib state).

* :func:`save_panel`: image / ground truth / probability / TP-FP-FN overlay panel.
* :func:`plot_training_curves`: losses, validation metrics and learning rate from a Lightning
  ``CSVLogger`` ``metrics.csv``.
* :func:`save_kernel_positions`: DSConv sampling positions drawn over the image.
* :func:`save_figure`: atomic writer used by all of them.
"""

from medseg.viz.curves import plot_training_curves
from medseg.viz.kernels import save_kernel_positions
from medseg.viz.panels import save_figure, save_panel

__all__ = ["plot_training_curves", "save_figure", "save_kernel_positions", "save_panel"]
