"""TLIDataModule's data seed (fixed, or following the run's seed) and its held-out text."""

from __future__ import annotations

import pytest

from tli_lightning.data import TLIDataModule
from tli_lightning.errors import TLIError
from tli_lightning.tiny_model import demo_data_path
from tli_lightning.xnli import read_xnli_file


def _measured(seed: int | None) -> TLIDataModule:
    data = TLIDataModule(control_path=None, reasoning_limit=12, seed=seed)
    data.setup("fit")
    return data


def _rows(data: TLIDataModule) -> tuple:
    return sorted(data.control_pairs), data.lm_texts["sw"]


def test_a_null_data_seed_follows_the_run_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")  # what seed_everything(7) sets
    following = _measured(None)
    assert following.data_seed() == 7
    assert _rows(following) == _rows(_measured(7))
    # Another run seed draws another control split and XNLI sample.
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    other = _measured(None)
    assert _rows(other)[0] != _rows(following)[0] and _rows(other)[1] != _rows(following)[1]
    assert other.fingerprint() != following.fingerprint()
    assert following.seed_varies() == ["control split", "task samples"]


def test_a_fixed_data_seed_ignores_the_run_seed(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    fixed = _measured(42)
    monkeypatch.setenv("PL_GLOBAL_SEED", "8")
    assert _rows(_measured(42)) == _rows(fixed) and fixed.seed_varies() == []
    # Only what a seed actually draws: the bundled control set and every XNLI row are not sampled.
    bundled = TLIDataModule(seed=None)
    bundled.setup("fit")
    assert bundled.seed_varies() == []


def test_a_null_data_seed_without_a_run_seed_is_refused(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with pytest.raises(TLIError, match="seed_everything"):
        _measured(None)


def test_held_out_text_is_the_measured_xnli_premises_or_a_file(tmp_path):
    data = TLIDataModule(reasoning_limit=5)
    data.setup("fit")
    assert len(data.lm_texts["sw"]) == len(data.reasoning["xnli_sw"]) == 5 and set(data.lm_texts) == {"sw", "en"}
    premises = {e.premise for e in read_xnli_file(demo_data_path("xnli_sw.jsonl"))}
    assert set(data.lm_texts["sw"]) <= premises
    (tmp_path / "sw.txt").write_text("Habari ya asubuhi.\n\nWatoto walikwenda shule.\n", encoding="utf-8")
    own = TLIDataModule(reasoning_limit=5, lm_texts={"sw": str(tmp_path / "sw.txt")})
    own.setup("fit")
    assert own.lm_texts == {"sw": ["Habari ya asubuhi.", "Watoto walikwenda shule."]}
    assert own.fingerprint()["lm_texts_sw"] != data.fingerprint()["lm_texts_sw"]
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TLIError, match="empty.txt: no text found"):
        TLIDataModule(lm_texts={"sw": str(tmp_path / "empty.txt")}).setup("fit")
