"""Figures of the reports (matplotlib, Agg backend)."""

import matplotlib

matplotlib.use("Agg")
