"""summary.json's provenance: what a run was made of, read cheaply and never failing the run."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess

import pytest

import tli_lightning
from tli_lightning import provenance
from tli_lightning.provenance import CHUNK, base_model, directory_fingerprint

from cli_helpers import QUICK, REPO, cli


def test_the_fingerprint_tells_two_random_tiny_models_apart(tiny_dir, tmp_path):
    from tli_lightning.tiny_model import build_tiny_aligned_model

    aligned = build_tiny_aligned_model()
    assert directory_fingerprint(tiny_dir) != directory_fingerprint(aligned)
    copy = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert directory_fingerprint(copy) == directory_fingerprint(tiny_dir)  # content, not location
    (copy / "README.md").write_text("a model card")  # documentation is not the model
    assert directory_fingerprint(copy) == directory_fingerprint(tiny_dir)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-6}))
    assert directory_fingerprint(copy) != directory_fingerprint(tiny_dir)


def test_a_large_weight_file_is_read_by_its_ends_only(tmp_path):
    weights = bytearray(3 * CHUNK)
    (tmp_path / "model.safetensors").write_bytes(weights)
    before = directory_fingerprint(tmp_path)
    weights[CHUNK + 5] = 1  # the middle: not read (what makes an 8B model cheap)
    (tmp_path / "model.safetensors").write_bytes(weights)
    assert directory_fingerprint(tmp_path) == before
    for where in (0, len(weights) - 1):  # the header, the last weights
        changed = bytearray(weights)
        changed[where] = 7
        (tmp_path / "model.safetensors").write_bytes(changed)
        assert directory_fingerprint(tmp_path) != before
    (tmp_path / "model.safetensors").write_bytes(weights + b"\0")  # the size
    assert directory_fingerprint(tmp_path) != before


def test_a_hub_model_is_found_in_the_local_cache_with_its_revision(tmp_path, monkeypatch, tiny_dir):
    import huggingface_hub.constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--Owner--model"
    shutil.copytree(tiny_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    found = base_model("Owner/model")
    assert found["resolved_path"] == str(repo / "snapshots" / commit) and found["revision"] == commit
    assert found["fingerprint"] == directory_fingerprint(tiny_dir)
    missing = base_model("Owner/not-downloaded")  # never an error: the run's summary must be written
    assert missing["resolved_path"] is None and missing["fingerprint"] is None
    assert missing["fingerprint_method"].startswith("not computed")


def test_the_package_commit_is_the_checkout_it_runs_from():
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    found = provenance.package()
    assert found["version"] == tli_lightning.__version__ and found["git_commit"] == head.stdout.strip()
    assert isinstance(found["git_dirty"], bool)


@pytest.mark.slow
def test_a_run_records_its_provenance_and_what_its_seed_varied(tmp_path, tiny_dir):
    args = ["fit", *QUICK, "--trainer.max_epochs=1", "--seed_everything=7", "--data.seed=null"]
    result = cli([*args, "--data.control_path=null"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "demo" / "version_0" / "summary.json").read_text())
    assert summary["data"]["seed_resolved"] == 7
    assert summary["seed_varies"] == ["batch order", "LoRA initialisation and dropout", "control split", "task samples"]
    found = summary["provenance"]
    assert set(found) == {"package", "libraries", "hardware", "base_model", "data_files", "timings"}
    assert found["libraries"]["torch"] and found["libraries"]["python"]
    assert found["hardware"]["accelerator"] == "cpu" and found["hardware"]["devices"] == []
    assert found["hardware"]["world_size"] == 1
    assert found["base_model"]["name_or_path"] == "tiny" and found["base_model"]["resolved_path"] == str(tiny_dir)
    assert found["base_model"]["fingerprint"] == directory_fingerprint(tiny_dir)
    lexicon = REPO / "src" / "tli_lightning" / "demo_data" / "lexicon_trained.tsv"
    assert found["data_files"]["lexicon"]["path"] == str(lexicon) and found["data_files"]["control"] is None
    assert {"xnli_sw", "xnli_en", "xcopa_sw", "xstorycloze_sw"} <= set(found["data_files"])
    assert found["data_files"]["lexicon"]["sha256"] == hashlib.sha256(lexicon.read_bytes()).hexdigest()
    timings = found["timings"]
    assert timings["fit_wall_s"] > sum(e["wall_s"] for m in timings["evaluations"].values() for e in m) > 0
    assert timings["peak_memory_kind"] == "process_max_rss" and timings["peak_memory_bytes"] > 2**20
    assert [e["name"] for e in timings["evaluations"]["reasoning"]] == ["baseline", "epoch_01"]

    # A fixed data seed: a seed varies only the training; full-rank training has no LoRA to initialise.
    full = ["--model.adaptation=full", "--model.quantization=none", "--model.compute_dtype=float32"]
    fixed = cli(["fit", *QUICK, "--trainer.max_epochs=1", *full], tmp_path)
    assert fixed.returncode == 0, fixed.stderr[-3000:]
    summary = json.loads((tmp_path / "logs" / "demo" / "version_1" / "summary.json").read_text())
    assert summary["seed_varies"] == ["batch order"] and summary["data"]["seed_resolved"] == 42
