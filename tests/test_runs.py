"""Each `fit` is its own run; interruptions of every kind resume bit for bit; failures leave nothing to resume."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from tli_lightning import runs
from tli_lightning.errors import TLIError

from cli_helpers import QUICK, cli, load, run_main, scalars

EPOCHS = ["--trainer.max_epochs=2"]


def _run_dir(root: Path, version: int = 0, tree: str = "logs") -> Path:
    return root / tree / "demo" / f"version_{version}"


def _assert_same_training(resumed_root: Path, reference_root: Path) -> None:
    """Same weights bit for bit, same optimizer step, the same logged steps and evaluations, none twice."""
    final, expected = (
        load(_run_dir(resumed_root, tree="checkpoints") / "last.ckpt"),
        load(_run_dir(reference_root, tree="checkpoints") / "last.ckpt"),
    )
    assert final["global_step"] == expected["global_step"]
    assert final["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    for name, state in expected["optimizer_states"][0]["state"].items():
        assert torch.equal(final["optimizer_states"][0]["state"][name]["exp_avg"], state["exp_avg"])
    for key in ("weight_update", "drift"):  # their base (LoRA aside) came back from the checkpoint
        for name in ("epoch_01", "epoch_02"):
            a = json.loads((_run_dir(resumed_root) / key / f"{name}.json").read_text())
            assert a == json.loads((_run_dir(reference_root) / key / f"{name}.json").read_text()), (key, name)
    got, want = scalars(_run_dir(resumed_root)), scalars(_run_dir(reference_root))
    # Every training step logged once, with the same loss: no batch skipped or repeated.
    assert got["train/loss_step"] == want["train/loss_step"]
    assert (
        got["train/loss_epoch"] == want["train/loss_epoch"]
    )  # epoch means count the batches before the interruption too
    # Every evaluation once (baseline + each epoch), with the same numbers.
    assert got["reasoning/xnli_sw/acc"] == want["reasoning/xnli_sw/acc"] and len(want["reasoning/xnli_sw/acc"]) == 3
    assert got["lm/sw/token_loglikelihood"] == want["lm/sw/token_loglikelihood"]
    assert got["align/control/gap/layer_02"] == want["align/control/gap/layer_02"]
    for name in ("baseline", "epoch_01", "epoch_02"):
        for folder, part in (("reasoning", "tasks"), ("lm", "languages")):
            a = json.loads((_run_dir(resumed_root) / folder / f"{name}.json").read_text())
            b = json.loads((_run_dir(reference_root) / folder / f"{name}.json").read_text())
            assert a[part] == b[part], (folder, name)
    # Each evaluation's cost, kept in the checkpoint across the interruption: every evaluation once, in order.
    timings = json.loads((_run_dir(resumed_root) / "summary.json").read_text())["provenance"]["timings"]
    for measurement in ("alignment", "reasoning", "lm"):
        evaluations = timings["evaluations"][measurement]
        assert [e["name"] for e in evaluations] == ["baseline", "epoch_01", "epoch_02"], measurement
        assert all(e["wall_s"] > 0 for e in evaluations)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_dir) -> Path:
    """An uninterrupted 2-epoch demo run."""
    root = tmp_path_factory.mktemp("reference")
    result = cli(["fit", *QUICK, *EPOCHS], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_fit_twice_in_one_folder_makes_two_independent_runs(tmp_path, reference):
    for _ in range(2):
        result = cli(["fit", *QUICK, *EPOCHS], tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "logs" / "demo").iterdir()) == ["version_0", "version_1"]
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "demo").iterdir()) == ["version_0", "version_1"]
    first, second = (
        load(_run_dir(tmp_path, 0, "checkpoints") / "last.ckpt"),
        load(_run_dir(tmp_path, 1, "checkpoints") / "last.ckpt"),
    )
    assert first["global_step"] == second["global_step"] == 82  # the second trained from scratch, not 0 steps
    assert all(torch.equal(first["state_dict"][k], v) for k, v in second["state_dict"].items())  # same seed, same run
    summary = json.loads((_run_dir(tmp_path, 1) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["version"] == 1 and summary["resumed_from"] is None
    assert "run demo/version_1 finished at step 82" in result.stdout
    assert (_run_dir(tmp_path, 1, "checkpoints") / "adapter_epoch02" / "tli_settings.json").is_file()
    assert list((_run_dir(tmp_path, 1) / "figures").glob("*.png"))


FAULTS = {
    # kind: (exit code of the interrupted run, checkpoint it leaves in the run directory)
    "sigkill": (-signal.SIGKILL, "last.ckpt"),  # resumes from the first epoch's end and replays
    "sigint": (130, "interrupted.ckpt"),  # finishes the step, saves, exits
    "sigterm": (143, "interrupted.ckpt"),
    "step": (1, "interrupted.ckpt"),  # saved with the RNG state the step started from
    "epoch_start": (1, "last.ckpt"),  # nothing new to save: the epoch end is the latest consistent state
    "evaluation": (1, "last.ckpt"),  # the second epoch is replayed, its evaluation runs once
    "sigterm_in_evaluation": (143, "last.ckpt"),  # the evaluation finishes, the epoch's checkpoint is written
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(FAULTS))
def test_every_interruption_resumes_bit_for_bit(tmp_path, reference, kind):
    code, newest = FAULTS[kind]
    fault = ["--trainer.callbacks+=faults.Fault", f"--trainer.callbacks.kind={kind}", "--trainer.callbacks.epoch=1"]
    interrupted = cli(["fit", *QUICK, *EPOCHS, *fault], tmp_path)
    assert interrupted.returncode == code, interrupted.stderr[-3000:]
    assert "Traceback" not in interrupted.stderr or code == 1
    found = runs.newest_checkpoint(_run_dir(tmp_path, tree="checkpoints"))
    assert found is not None and found[0].name == newest
    if code in (130, 143):
        assert "resume with: python -m tli_lightning fit" in interrupted.stderr
        assert json.loads((_run_dir(tmp_path) / "summary.json").read_text())["status"] == "interrupted"
    finished_evaluation = _run_dir(tmp_path) / "reasoning" / "epoch_02.json"
    if kind == "sigterm_in_evaluation":  # the evaluation the signal arrived in was finished, not cut short
        written = finished_evaluation.stat().st_mtime_ns

    resumed = cli(["fit", *QUICK, *EPOCHS, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if kind == "sigterm_in_evaluation":  # and is not run again
        assert finished_evaluation.stat().st_mtime_ns == written
    assert not (tmp_path / "logs" / "demo" / "version_1").exists()  # written into the run it resumed
    _assert_same_training(tmp_path, reference)
    assert not (_run_dir(tmp_path, tree="checkpoints") / "interrupted.ckpt").exists()  # superseded by the finished run


@pytest.mark.slow
def test_a_run_resumed_and_interrupted_again_resumes_again(tmp_path, reference):
    # Fails in epoch 1, is resumed, fails again later in the same epoch, and is resumed once more.
    def fault(batch: int) -> list[str]:
        return [
            "--trainer.callbacks+=faults.Fault",
            "--trainer.callbacks.kind=step",
            "--trainer.callbacks.epoch=1",
            f"--trainer.callbacks.batch={batch}",
        ]

    assert cli(["fit", *QUICK, *EPOCHS, *fault(5)], tmp_path).returncode == 1
    assert cli(["fit", *QUICK, *EPOCHS, *fault(20), "--ckpt_path", "last"], tmp_path).returncode == 1
    resumed = cli(["fit", *QUICK, *EPOCHS, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_training(tmp_path, reference)
    configs = sorted(p.name for p in _run_dir(tmp_path).glob("config*.yaml"))
    assert configs == ["config.resumed1_at_step46.yaml", "config.resumed2_at_step61.yaml", "config.yaml"]


@pytest.mark.slow
def test_a_failed_fit_leaves_nothing_to_resume(tmp_path, tiny_dir):
    # Fails after its run directory was claimed (the model path is read when the model loads).
    failed = cli(["fit", *QUICK, "--model.model_name_or_path", str(tmp_path / "no-model")], tmp_path)
    assert failed.returncode == 2 and "error: model directory not found" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (
        not list(tmp_path.glob("checkpoints/demo/*/*.ckpt")) and not (tmp_path / "logs" / "demo" / "version_0").exists()
    )
    again = cli(["fit", *QUICK, "--ckpt_path", "last"], tmp_path)
    assert (
        again.returncode == 2
        and "error: --ckpt_path last: no checkpoint under checkpoints/demo/version_*" in again.stderr
    )
    # Ctrl-C during the baseline evaluation (after the alignment baseline was written): nothing to resume either.
    fault = ["--trainer.callbacks+=faults.Fault", "--trainer.callbacks.kind=sigint_in_baseline"]
    stopped = cli(["fit", *QUICK, *fault], tmp_path)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "interrupted before its first checkpoint: nothing to resume" in stopped.stderr
    assert not list(tmp_path.glob("logs/demo/version_*")) and not list(tmp_path.glob("checkpoints/demo/version_*"))


def test_resuming_with_other_settings_is_refused(tmp_path, monkeypatch, reference):
    import shutil

    shutil.copytree(reference / "logs", tmp_path / "logs")
    shutil.copytree(reference / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run_main(["fit", *QUICK, *EPOCHS, "--model.learning_rate", "0.01", "--ckpt_path", "last"])
    assert code == 2
    assert "belongs to a run with other settings: model.learning_rate: 0.01 (run: 0.0002)" in err
    assert "--config logs/demo/version_0/config.yaml --ckpt_path checkpoints/demo/version_0" in err
    assert "resume with" not in err  # the refused command is not suggested again
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # the run is untouched


def test_resuming_a_finished_run_says_so_and_changes_nothing(tmp_path, monkeypatch, reference):
    import shutil

    shutil.copytree(reference / "logs", tmp_path / "logs")
    shutil.copytree(reference / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run_main(["fit", *QUICK, *EPOCHS, "--ckpt_path", "last"])
    assert code == 0, err
    assert "run demo/version_0 already finished at step 82 (2 epochs): nothing left to train" in out
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_runs_started_at_once_get_different_versions(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        claimed = list(pool.map(lambda _: runs.claim_run(tmp_path / "l", tmp_path / "c", "x").version, range(8)))
    assert sorted(claimed) == list(range(8))
    assert all((tmp_path / "c" / f"version_{v}").is_dir() for v in claimed)


def test_last_means_the_newest_checkpoint_of_the_newest_run_that_has_one(tmp_path):
    def checkpoint(path: Path, step: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": step, "epoch": 0}, path)

    logs, ckpts = tmp_path / "logs" / "demo", tmp_path / "checkpoints" / "demo"
    checkpoint(ckpts / "version_0" / "last.ckpt", 500)
    checkpoint(ckpts / "version_1" / "last.ckpt", 84)
    checkpoint(ckpts / "version_1" / "interrupted.ckpt", 94)
    (ckpts / "version_2").mkdir()  # a run that failed before saving anything
    (ckpts / "version_1" / "broken.ckpt").write_bytes(b"")  # unreadable files are skipped
    run = runs.resolve_resume("last", logs, ckpts, "demo")
    assert (run.version, run.resumed_from.name, run.resumed_step) == (1, "interrupted.ckpt", 94)
    assert any("broken.ckpt: not a readable" in note for note in run.notes)  # skipped, and said so
    assert any("have no checkpoint" in note for note in run.notes)
    assert (
        runs.resolve_resume(str(logs / "version_0"), logs, ckpts, "demo").resumed_from
        == ckpts / "version_0" / "last.ckpt"
    )
    assert runs.resolve_resume(str(ckpts / "version_1" / "last.ckpt"), logs, ckpts, "demo").version == 1
    elsewhere = tmp_path / "copied.ckpt"
    checkpoint(elsewhere, 7)
    moved = runs.resolve_resume(str(elsewhere), logs, ckpts, "demo")
    assert moved.version == 3 and moved.resumed_from == elsewhere  # a checkpoint from elsewhere goes on in a new run
    with pytest.raises(TLIError, match=r"broken.ckpt: not a readable Lightning checkpoint"):
        runs.resolve_resume(str(ckpts / "version_1" / "broken.ckpt"), logs, ckpts, "demo")
    with pytest.raises(TLIError, match=r"is a directory, not a checkpoint file"):
        runs.read_progress(ckpts / "version_2")
    with pytest.raises(TLIError, match=r"is not a run of 'demo'"):  # another name's run directory
        runs.resolve_resume(str(tmp_path / "logs" / "other" / "version_1"), logs, ckpts, "demo")
    (ckpts / "version_4").mkdir()
    (ckpts / "version_4" / "last.ckpt").write_bytes(b"truncated")
    with pytest.raises(TLIError, match=r"run demo/version_4 has no readable checkpoint \(unreadable: .*last.ckpt"):
        runs.resolve_resume("last", logs, ckpts, "demo")  # never silently an older run


def test_unwritable_output_folders_are_found_before_the_model_loads(tmp_path, monkeypatch):
    (tmp_path / "checkpoints").write_text("a file where a folder should be")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["fit", *QUICK])
    assert code == 2 and "error: cannot write to checkpoints/demo" in err
    assert "adapting blocks" not in err  # the model was never loaded


def test_checkpoints_are_written_beside_their_destination_then_renamed(tmp_path, monkeypatch):
    # A checkpoint is never seen half-written, even if the process dies during the write: the rename
    # happens on one filesystem, after the bytes are on disk.
    import os

    replaced: list[tuple[Path, Path, bool]] = []
    real_replace = os.replace

    def recording_replace(src, dst):
        replaced.append((Path(src), Path(dst), Path(dst).exists()))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    io = runs.atomic_checkpoint_io()
    target = tmp_path / "run" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "epoch": 0, "weights": torch.zeros(1000)}, target)
    io.save_checkpoint({"global_step": 2, "epoch": 0, "weights": torch.ones(1000)}, target)
    assert [(src.parent, dst, existed) for src, dst, existed in replaced] == [
        (target.parent, target, False),
        (target.parent, target, True),
    ]
    assert load(target)["global_step"] == 2 and list(target.parent.iterdir()) == [target]  # no temporary left
