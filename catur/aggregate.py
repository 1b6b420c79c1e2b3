"""Old home of the exact aggregation; kept as an alias for one release (see docs/explanation/architecture.md).

The arithmetic moved to :mod:`catur.exact` and :class:`SummaryAccumulator` to
:mod:`catur.metrics` (next to :func:`~catur.metrics.summarize`, its one-batch case), which
removed the import circle between the two modules. Import from there in new code.
"""

from catur.exact import ExactSum, TopValues, percentile_from_top, top_needed
from catur.metrics import SummaryAccumulator

__all__ = ["ExactSum", "SummaryAccumulator", "TopValues", "percentile_from_top", "top_needed"]
