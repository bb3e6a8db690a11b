"""How torch's OpenMP threads wait, set before torch loads its OpenMP runtime.

By default OpenMP threads spin (busy-wait) between parallel regions. On a machine where another
process holds a core, the spinning threads take CPU time from the thread doing the work, and
every run gets several times slower; sleeping threads (``PASSIVE``) keep the default thread
count's idle speed and lose little under load (``benchmarks/RESULTS.md``: ``threads.py``).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

# Read once, when libgomp initialises (at `import torch`): setting them later has no effect.
THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_thread_defaults(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Set each of :data:`THREAD_DEFAULTS` the environment does not set already; return what it set.

    Call it before ``import torch`` (the entry point, a test's conftest); a value the user exported,
    e.g. ``OMP_WAIT_POLICY=ACTIVE`` or ``OMP_NUM_THREADS=1``, is kept.
    """
    applied = {key: value for key, value in THREAD_DEFAULTS.items() if key not in environ}
    environ.update(applied)
    return applied
