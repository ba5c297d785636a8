"""Figures for reports, written atomically with the Agg canvas (no global matplotlib state).

* :func:`save_panel`: image / ground truth / probability / TP-FP-FN overlay panel;
  :func:`save_panels` writes many of them in parallel processes.
* :func:`plot_training_curves`: losses, validation metrics and learning rate from a Lightning
  ``CSVLogger`` ``metrics.csv``.
* :func:`save_kernel_positions`: DSConv sampling positions drawn over the image.
* :func:`save_figure`: atomic writer used by all of them.
* :func:`write_report`: a run's static HTML report (``RUN/report.html``).
* :func:`compare_runs`, :func:`format_comparison`, :func:`write_comparison`: several runs'
  headline numbers side by side (terminal text, CSV and a static HTML page).
"""

from medseg.viz.curves import plot_training_curves
from medseg.viz.kernels import save_kernel_positions
from medseg.viz.panels import save_figure, save_panel, save_panels
from medseg.viz.report import compare_runs, format_comparison, write_comparison, write_report

__all__ = [
    "compare_runs",
    "format_comparison",
    "plot_training_curves",
    "save_figure",
    "save_kernel_positions",
    "save_panel",
    "save_panels",
    "write_comparison",
    "write_report",
]
