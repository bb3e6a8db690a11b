"""``python -m tli_lightning compare``: finished runs side by side, with paired statistics and a verdict.

Reads only what runs wrote (``summary.json`` and each measurement's folder, e.g. ``alignment/``,
``reasoning/``, ``lm/``, in ``logs/<name>/version_<n>/``, discovered by the kind their files name); nothing
is loaded or re-measured. The run's name is its comparison arm; runs of one arm with different seeds are
aggregated (one arm per learning rate when a name was swept).
Writes ``report.md``, ``report.json`` (every number of the report) and three PNG figures into ``--output``.
The primary alignment endpoint is CSLS retrieval over a shared pool (:mod:`tli_lightning.alignment`); every
answer comes from a two-stage bootstrap CI under the rules of :mod:`tli_lightning.compare.verdict`.

The parts: ``reading`` (run directories and their files), ``numbers`` (per run and per arm),
``verdict`` (the answers in words), ``report`` (the dict and writing it), ``markdown``, ``figures``, ``cli``.

From Python::

    from tli_lightning.compare import build_report, write_report
    report = build_report(["logs/demo", "logs/full_early/version_0"])
    write_report(report, "comparison")
"""

from tli_lightning.compare.cli import compare
from tli_lightning.compare.markdown import format_markdown
from tli_lightning.compare.reading import find_runs, load_run
from tli_lightning.compare.report import build_report, write_report

__all__ = ["build_report", "compare", "find_runs", "format_markdown", "load_run", "write_report"]
