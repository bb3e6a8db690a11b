"""SLURM and torchrun on a CPU, with the fake scheduler of tests/fake_slurm (sbatch, srun, scontrol on PATH).

Every multi-process run is checked against one process accumulating 2 batches per step (what 2 processes
train per step), as test_distributed does; the requeued job against the same run uninterrupted, bitwise.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tli_lightning import grid, slurm

from cli_helpers import QUICK, REPO, TESTS, cli, load, run_main

FAKE = TESTS / "fake_slurm"
ARM = REPO / "configs" / "lugha_llama_8b" / "tli_lora_early.yaml"
ON_TINY = REPO / "configs" / "demo" / "on_tiny_model.yaml"
# 4 optimizer steps of 2 batches each, no dropout: processes draw different masks, a single one other ones again.
COMMON = [
    "--config",
    str(ON_TINY),
    *QUICK,
    "--data.reasoning_limit=3",
    "--trainer.max_steps=4",
    "--model.lora_dropout=0",
    "--trainer.accelerator=cpu",
]
RUN = Path("checkpoints") / "tli_lora_early" / "version_0"


# Set in this process by an earlier in-process Lightning DDP setup (whose TCPStore may still hold the port): a
# launched job must choose its own, as on a fresh login node.
_LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


def _clean_environ() -> dict:
    return {
        k: v
        for k, v in os.environ.items()
        if k not in _LAUNCHER_VARIABLES and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))
    }


def _fake_slurm_env(root: Path) -> dict:
    # Lightning's port under SLURM is 15000 + the job id's last 4 digits: random, for tests running at once.
    return {
        "PATH": os.pathsep.join([str(FAKE), str(Path(sys.executable).parent), os.environ["PATH"]]),
        "FAKE_SLURM_DIR": str(root / "fake_slurm_state"),
        "FAKE_SLURM_FIRST_JOB": str(random.randint(1000, 9000) * 10),
        "PYTHONPATH": str(TESTS),
        "PARALLEL": str(REPO / "configs" / "multi_gpu" / "ddp.yaml"),
    }


def _sbatch(root: Path, args: list[str], env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(FAKE / "sbatch"), *args],
        cwd=root,
        env={**_clean_environ(), **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _calls(root: Path) -> list[dict]:
    lines = (root / "fake_slurm_state" / "calls.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _job_output(root: Path, call: dict) -> str:
    return Path(call["output"]).read_text()


def _assert_same_training(reference: Path, other: Path, atol: float) -> None:
    first, second = (
        load(reference / "checkpoints" / "demo" / "version_0" / "last.ckpt"),
        load(other / RUN / "last.ckpt"),
    )
    assert first["global_step"] == second["global_step"] == 4
    assert first["state_dict"].keys() == second["state_dict"].keys()
    for name, tensor in first["state_dict"].items():
        if not name.startswith("train_means."):
            torch.testing.assert_close(second["state_dict"][name], tensor, atol=atol, rtol=0, msg=name)
    moments = [c["optimizer_states"][0]["state"] for c in (first, second)]
    for index, state in moments[0].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(moments[1][index][key], state[key], atol=atol, rtol=0)
    assert sorted(p.name for p in (other / "logs" / "tli_lora_early").iterdir()) == ["version_0"]  # one run


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, 2 batches per step, never interrupted: what every run below must train. Without a logger
    (which changes nothing in training; its run is then logs/demo/version_0)."""
    root = tmp_path_factory.mktemp("reference")
    single = ["--trainer.devices=1", "--trainer.accumulate_grad_batches=2", "--trainer.logger=false"]
    result = cli(["fit", "--config", str(ARM), *COMMON, *single], root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.mark.slow
def test_a_run_without_a_logger_keeps_its_directories_and_checkpoints_without_event_files(reference):
    run = reference / "logs" / "demo" / "version_0"
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    assert (run / "config.yaml").is_file() and (run / "alignment" / "epoch_01.json").is_file()
    assert (reference / "checkpoints" / "demo" / "version_0" / "last.ckpt").is_file()
    assert not list(reference.rglob("events.out.tfevents*")) and not (reference / "lightning_logs").exists()


@pytest.mark.slow
def test_a_two_task_srun_job_trains_as_one_process_accumulating_two_batches(tmp_path, reference):
    # The shipped one-node script, its 4 tasks per node made 2 on the command line (sbatch's options win).
    env = _fake_slurm_env(tmp_path)
    _sbatch(tmp_path, ["--ntasks-per-node=2", str(REPO / "slurm" / "fit_node.sbatch"), str(ARM), *COMMON], env)
    calls = _calls(tmp_path)
    (job,) = [c for c in calls if c["command"] == "job"]
    output = _job_output(tmp_path, job)
    assert job["exit_code"] == 0, output[-3000:]
    (step,) = [c for c in calls if c["command"] == "srun"]
    assert step["args"][step["args"].index("--trainer.devices") + 1] == "2"
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in output
    assert output.count("run tli_lora_early/version_0 finished at step 4") == 1  # rank 0 speaks for the run
    _assert_same_training(reference, tmp_path, atol=2e-5)


@pytest.mark.slow
def test_sigusr1_requeues_the_job_which_continues_its_own_run_bitwise(tmp_path, reference):
    env = _fake_slurm_env(tmp_path)
    # SLURM's warning before the time limit, mid-epoch, inside the 3rd optimizer step (batch 5 of 8); only in the
    # job's first start (faults.Fault skips a requeued job).
    fault = [
        "--trainer.callbacks+=faults.Fault",
        "--trainer.callbacks.kind=sigusr1",
        "--trainer.callbacks.epoch=0",
        "--trainer.callbacks.batch=5",
    ]
    args = [*COMMON, "--trainer.accumulate_grad_batches=2", *fault]
    _sbatch(tmp_path, [str(REPO / "slurm" / "fit_1gpu.sbatch"), str(ARM), *args], env)
    calls = _calls(tmp_path)
    jobs = [c for c in calls if c["command"] == "job"]
    key = jobs[0]["args"][0]
    assert [c["args"] for c in calls if c["command"] == "scontrol"] == [["requeue", key]]
    assert [(j["restart"], j["exit_code"]) for j in jobs] == [(0, 0), (1, 0)], _job_output(tmp_path, jobs[-1])[-3000:]
    first, second = (_job_output(tmp_path, j) for j in jobs)
    assert "SIGUSR1 received" in first and f"requeued SLURM job {key} (restart 1 of at most 10)" in first
    assert "interrupted.ckpt (step 3)" in second and f"SLURM job {key} requeued (restart 1)" in second
    assert "finished at step 4" in second
    _assert_same_training(reference, tmp_path, atol=0)
    assert not list(tmp_path.rglob("hpc_ckpt*")), "Lightning's own requeue checkpoint"
    assert not (tmp_path / RUN / "interrupted.ckpt").exists()
    assert json.loads((tmp_path / "logs/tli_lora_early/version_0/slurm_job.json").read_text())["job"] == key


@pytest.mark.slow
def test_torchrun_on_two_nodes_trains_as_one_process_accumulating_two_batches(tmp_path, reference):
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ddp = REPO / "configs" / "multi_gpu" / "ddp.yaml"
    fit = ["fit", "--config", str(ARM), "--config", str(ddp), *COMMON, "--trainer.devices=1", "--trainer.num_nodes=2"]
    nodes = []
    for node in (1, 0):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
        command += ["--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port)]
        env = {**_clean_environ(), "PYTHONPATH": str(TESTS)}
        out = open(tmp_path / f"node{node}.out", "w")  # noqa: SIM115  (closed below)
        nodes.append(
            (
                out,
                subprocess.Popen(
                    [*command, "-m", "tli_lightning", *fit], cwd=tmp_path, env=env, stdout=out, stderr=out
                ),
            )
        )
    codes = [proc.wait(timeout=600) for _, proc in nodes]
    for out, _ in nodes:
        out.close()
    assert codes == [0, 0], (tmp_path / "node0.out").read_text()[-3000:] + (tmp_path / "node1.out").read_text()[-3000:]
    assert "finished at step 4" in (tmp_path / "node0.out").read_text()
    _assert_same_training(reference, tmp_path, atol=2e-5)


@pytest.mark.slow
def test_the_grid_as_a_job_array_ends_in_a_compare_report(tmp_path):
    env = _fake_slurm_env(tmp_path)
    command = ["grid", "--arms", "tli_lora_early", "full_early", "--seeds", "1-2", "--config", str(ON_TINY)]
    command += ["--submit", "slurm", "--output", str(tmp_path / "grid"), "--", "--trainer.max_steps=2"]
    command += ["--data.reasoning_limit=3", "--trainer.enable_model_summary=false"]
    result = cli(command, tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    calls = _calls(tmp_path)
    jobs = [c for c in calls if c["command"] == "job"]
    assert [j["exit_code"] for j in jobs] == [0, 0, 0, 0], _job_output(tmp_path, jobs[-1])[-3000:]
    array = [c for c in calls if c["command"] == "sbatch"][0]["args"][-1]
    assert "#SBATCH --array=0-3" in Path(array).read_text()
    runs = sorted(str(p.relative_to(tmp_path / "grid" / "logs")) for p in (tmp_path / "grid").glob("logs/*/version_*"))
    assert runs == [f"{arm}/version_{v}" for arm in ("full_early", "tli_lora_early") for v in (0, 1)]
    compare = shlex.split(result.stdout.strip().splitlines()[-1])
    assert compare[:4] == ["python", "-m", "tli_lightning", "compare"]
    code, _, err = run_main(compare[3:])  # in this process: one interpreter start less
    assert code == 0, err[-3000:]
    report = json.loads((tmp_path / "grid" / "comparison" / "report.json").read_text())
    assert sorted(report["arms"]) == ["full_early", "tli_lora_early"]
    assert sorted(report["arms"]["tli_lora_early"]["seeds"]) == [1, 2]


@pytest.mark.parametrize(
    ("option", "variable"),
    [("--trainer.num_nodes=2", "SLURM_NNODES=1"), ("--trainer.devices=1", "SLURM_NTASKS_PER_NODE=2")],
    ids=["nodes", "devices"],
)
def test_a_mismatch_with_the_allocation_is_one_error_line(tmp_path, monkeypatch, option, variable):
    monkeypatch.chdir(tmp_path)
    for name, value in {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_NNODES": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLURM_JOB_NAME", "tli-fit")
    monkeypatch.setenv("SLURM_PROCID", "0")
    code, out, err = run_main(["fit", "--trainer.accelerator=cpu", "--trainer.devices=2", option])
    assert code == 2
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and variable in errors[0], err
    assert not (tmp_path / "logs").exists()  # refused before a run was claimed


def test_a_requeued_job_finds_only_its_own_run(tmp_path, monkeypatch):
    logs, checkpoints = tmp_path / "logs" / "arm", tmp_path / "checkpoints" / "arm"
    for version, job in ((0, "77_1"), (1, "77_2"), (2, "78")):
        (logs / f"version_{version}").mkdir(parents=True)
        (logs / f"version_{version}" / slurm.MARKER).write_text(json.dumps({"job": job}))
        (checkpoints / f"version_{version}").mkdir(parents=True)
        (checkpoints / f"version_{version}" / "last.ckpt").write_bytes(b"")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_ID", "SLURM_RESTART_COUNT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "78")
    assert slurm.own_run(logs, checkpoints) is None  # not requeued: a plain fit never resumes
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert slurm.own_run(logs, checkpoints) == 2
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert slurm.job_key() == "77_2" and slurm.own_run(logs, checkpoints) == 1  # the array task, not the job id
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm.own_run(logs, checkpoints) is None
    (checkpoints / "version_1" / "last.ckpt").unlink()
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert slurm.own_run(logs, checkpoints) is None  # nothing to continue: a new run


def test_requeue_stops_after_the_limit_and_after_a_session_that_trained_nothing(tmp_path, monkeypatch):
    env = _fake_slurm_env(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("FAKE_SLURM_DIR", env["FAKE_SLURM_DIR"])
    monkeypatch.setenv("SLURM_JOB_ID", "91")
    for name in ("SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    monkeypatch.setenv("TLI_MAX_REQUEUES", "2")
    assert "requeued 2 times already (TLI_MAX_REQUEUES=2)" in slurm.requeue(trained=True)
    monkeypatch.setenv("TLI_MAX_REQUEUES", "3")
    assert "trained nothing" in slurm.requeue(trained=False)
    assert not (tmp_path / "fake_slurm_state" / "calls.jsonl").exists()  # scontrol never called
    assert slurm.requeue(trained=True).startswith("requeued SLURM job 91 (restart 3 of at most 3)")
    assert _calls(tmp_path) == [{"command": "scontrol", "args": ["requeue", "91"]}]


def test_the_grid_plans_arms_by_rates_by_seeds_and_writes_one_array_task_each(tmp_path):
    assert grid.parse_seeds("1-3,7 2") == [1, 2, 3, 7]
    tasks = grid.plan([ARM], grid.parse_seeds("1-2"), [1e-4, 2e-4], [ON_TINY], ["--trainer.max_steps=2"])
    assert [(t.seed, t.learning_rate) for t in tasks] == [(1, 1e-4), (2, 1e-4), (1, 2e-4), (2, 2e-4)]
    script = grid.write_array(tasks, tmp_path, jobs=2).read_text()
    assert "#SBATCH --array=0-3%2" in script and "#SBATCH --signal=USR1@90" in script
    assert "--seed_everything 2 --model.learning_rate 0.0002 --trainer.max_steps=2" in script
    command = grid.compare_command(tasks, tmp_path)
    assert command[4:] == [str(tmp_path / "logs" / "tli_lora_early"), "--output", str(tmp_path / "comparison")] + [
        "--min-seeds",
        "2",
    ]
