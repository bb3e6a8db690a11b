"""A fake SLURM for the tests: ``sbatch``, ``srun`` and ``scontrol`` that record their calls and run jobs here.

State in ``$FAKE_SLURM_DIR``: ``calls.jsonl`` (every call), ``job_<key>_<restart>.out`` (each job's output),
``requeue/<key>`` (asked by ``scontrol requeue``; the fake ``sbatch`` then runs the job again with
``SLURM_RESTART_COUNT`` + 1, as SLURM starts a requeued job). ``sbatch`` runs the job (array tasks
``$FAKE_SLURM_PARALLEL`` at a time, default 2) before returning, so a test sees it finished. Job ids start
at ``$FAKE_SLURM_FIRST_JOB`` (Lightning's port under SLURM is 15000 + the id's last 4 digits: tests running
at once pick different ones).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

STATE = Path(os.environ.get("FAKE_SLURM_DIR", "fake_slurm_state"))
MAX_RESTARTS = 5


_LOCK = threading.Lock()


def record(command: str, args: list[str], **extra) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    with _LOCK, open(STATE / "calls.jsonl", "a", encoding="utf-8") as calls:
        calls.write(json.dumps({"command": command, "args": args, **extra}) + "\n")


def _options(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """sbatch/srun options (``--name=value``, ``--name value``, ``-N 2``) and what follows them."""
    short = {"-N": "nodes", "-J": "job-name", "-a": "array", "-n": "ntasks"}
    options, rest = {}, list(words)
    while rest and rest[0].startswith("-"):
        word = rest.pop(0)
        if word in short:
            options[short[word]] = rest.pop(0)
        elif word.startswith("--") and "=" in word:
            name, value = word[2:].split("=", 1)
            options[name] = value
        elif word in ("--parsable", "--requeue", "--no-requeue", "--wait"):
            options[word[2:]] = "1"
        else:
            options[word[2:]] = rest.pop(0)
    return options, rest


def _next_job_id(tasks: int) -> int:
    """The job's id; an array's tasks take the next ``tasks`` ids as their own SLURM_JOB_ID, as in SLURM."""
    counter = STATE / "next_job_id"
    job = int(counter.read_text()) if counter.is_file() else int(os.environ.get("FAKE_SLURM_FIRST_JOB", "4242"))
    counter.write_text(str(job + 1 + tasks))
    return job


def _tasks(spec: str | None) -> list[int | None]:
    if not spec:
        return [None]
    spec = spec.split("%")[0]
    found: list[int] = []
    for part in spec.split(","):
        first, _, last = part.partition("-")
        found += list(range(int(first), int(last or first) + 1))
    return found


def sbatch(argv: list[str]) -> int:
    record("sbatch", argv)
    options, rest = _options(argv)
    script, script_args = Path(rest[0]), rest[1:]
    lines = script.read_text().splitlines()
    directives = [line[len("#SBATCH") :].split("#")[0].split() for line in lines if line.startswith("#SBATCH")]
    file_options, _ = _options([word for words in directives for word in words])
    settings = {**file_options, **options}  # the command line wins, as with SLURM
    tasks = _tasks(settings.get("array"))
    job = _next_job_id(len(tasks))
    nodes = int(settings.get("nodes", "1"))
    per_node = settings.get("ntasks-per-node")

    def run(task: int | None) -> None:
        key = f"{job}_{task}" if task is not None else str(job)
        env = {
            **os.environ,
            "SLURM_JOB_ID": str(job if task is None else job + 1 + task),
            "SLURM_JOB_NAME": settings.get("job-name", script.name),
            "SLURM_NNODES": str(nodes),
            "SLURM_JOB_NUM_NODES": str(nodes),
            "SLURM_NODELIST": "localhost",
            "SLURM_SUBMIT_DIR": os.getcwd(),
        }
        if per_node is not None:
            env["SLURM_NTASKS_PER_NODE"] = per_node
            env["SLURM_NTASKS"] = str(nodes * int(per_node))
        if task is not None:
            env["SLURM_ARRAY_JOB_ID"], env["SLURM_ARRAY_TASK_ID"] = str(job), str(task)
        for restart in range(MAX_RESTARTS + 1):
            if restart:
                env["SLURM_RESTART_COUNT"] = str(restart)
            out = STATE / f"job_{key}_{restart}.out"
            with open(out, "w") as log:
                code = subprocess.run(["bash", str(script), *script_args], env=env, stdout=log, stderr=log).returncode
            record("job", [key], restart=restart, exit_code=code, output=str(out))
            asked = STATE / "requeue" / key
            if not asked.exists():
                break
            asked.unlink()

    # Array tasks run at once, as on a cluster (FAKE_SLURM_PARALLEL at a time, default 2).
    with ThreadPoolExecutor(int(os.environ.get("FAKE_SLURM_PARALLEL", "2"))) as pool:
        list(pool.map(run, tasks))
    print(job if "parsable" in options else f"Submitted batch job {job}")
    return 0


def srun(argv: list[str]) -> int:
    record("srun", argv, job=os.environ.get("SLURM_JOB_ID"), restart=os.environ.get("SLURM_RESTART_COUNT"))
    options, command = _options(argv)
    nodes = int(options.get("nodes", os.environ.get("SLURM_NNODES", "1")))
    per_node = int(options.get("ntasks-per-node", os.environ.get("SLURM_NTASKS_PER_NODE", "1")))
    procs = []
    for rank in range(nodes * per_node):
        env = {
            **os.environ,
            "SLURM_NTASKS": str(nodes * per_node),
            "SLURM_NTASKS_PER_NODE": str(per_node),
            "SLURM_PROCID": str(rank),
            "SLURM_LOCALID": str(rank % per_node),
            "SLURM_NODEID": str(rank // per_node),
            "SLURM_STEP_ID": "0",
        }
        procs.append(subprocess.Popen(command, env=env))

    def forward(signum, frame):  # srun passes signals on to every task
        for proc in procs:
            proc.send_signal(signum)

    for signum in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    return max(proc.wait() for proc in procs)


def scontrol(argv: list[str]) -> int:
    record("scontrol", argv)
    if argv[:1] == ["requeue"] and len(argv) == 2 and re.fullmatch(r"[0-9_]+", argv[1]):
        (STATE / "requeue").mkdir(parents=True, exist_ok=True)
        (STATE / "requeue" / argv[1]).write_text("")
        return 0
    print(f"scontrol: fake: unsupported {shlex.join(argv)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit({"sbatch": sbatch, "srun": srun, "scontrol": scontrol}[sys.argv[1]](sys.argv[2:]))
