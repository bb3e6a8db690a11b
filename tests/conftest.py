"""Shared fixtures: a tiny Llama built offline by the package's own recipe, real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tli_lightning.threads import apply_thread_defaults

# Before any test module imports torch: the tests' own OpenMP threads (and the CLI subprocesses, which
# inherit the environment) sleep instead of spinning while they wait, as the CLI's do.
apply_thread_defaults()
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    # The embedded "tiny" model is built into a per-session cache, never into the user's home.
    os.environ["TLI_CACHE_DIR"] = str(tmp_path_factory.mktemp("tli_cache"))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_dir(_isolated_cache) -> Path:
    from tli_lightning.tiny_model import build_tiny_model

    return build_tiny_model()


@pytest.fixture(scope="session")
def tiny_float(tiny_dir):
    from tli_lightning.loading import load_causal_lm

    return load_causal_lm(str(tiny_dir), quantization="none", compute_dtype="float32")


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "xnli_sw_validation.jsonl").is_file():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
