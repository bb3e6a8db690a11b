"""OpenMP wait policy and thread count, idle and with one core busy: the demo and a CI-like test subset.

    python benchmarks/threads.py --repeats 3 --json threads.json

Three settings, each a whole process, alternated (the order rotates each round) so that the other
users of a shared machine weigh on every setting alike; medians of ``--repeats`` rounds:

- ``spin``: libgomp's own default (threads spin a while before they sleep), what every command did
  before ``tli_lightning.threads`` (``OMP_WAIT_POLICY`` set to an empty value, which libgomp ignores
  with a warning, and which the CLI's and conftest's defaults leave alone);
- ``passive``: the new default (``OMP_WAIT_POLICY=PASSIVE``, set by the entry point and conftest);
- ``1 thread``: ``OMP_NUM_THREADS=1``.

Each under two loads: ``idle`` (nothing of ours besides the command) and ``busy`` (one
``python -c 'while True: pass'`` process holding a core for the whole round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {
    "spin": {"OMP_WAIT_POLICY": ""},
    "passive": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}
WORKLOADS = {
    # The demo for one epoch (41 steps, baseline and one evaluation), as the issue timed it.
    "demo, 1 epoch": [sys.executable, "-m", "tli_lightning", "fit", "--trainer.max_epochs=1",
                      "--trainer.enable_progress_bar=false"],
    # Unit tests that run torch (losses, sampling, alignment, the module's step), CI's way.
    "test subset": [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
                    str(REPO / "tests" / "test_losses.py"), str(REPO / "tests" / "test_alignment.py"),
                    str(REPO / "tests" / "test_module.py")],
}  # fmt: skip


def environment(setting: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(SETTINGS[setting])
    env["PYTHONPATH"] = str(REPO / "src")
    return env


def timed(command: list[str], setting: str, cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=environment(setting), capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command} under {setting} failed:\n{result.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    times: dict[str, dict[str, dict[str, list[float]]]] = {
        w: {load: {s: [] for s in SETTINGS} for load in ("idle", "busy")} for w in WORKLOADS
    }
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as root:
        # The tiny model is built once, outside the timings.
        os.environ["TLI_CACHE_DIR"] = str(Path(root) / "cache")
        subprocess.run([sys.executable, "-c", "from tli_lightning.tiny_model import build_tiny_model as b; b()"],
                       env=environment("passive"), check=True)  # fmt: skip
        order = list(SETTINGS)
        for round_ in range(args.repeats):
            for load in ("idle", "busy"):
                hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load == "busy" else None
                try:
                    for workload, command in WORKLOADS.items():
                        for setting in order:
                            cwd = Path(tempfile.mkdtemp(dir=root))
                            elapsed = timed(command, setting, cwd)
                            times[workload][load][setting].append(elapsed)
                            print(f"round {round_ + 1} {load:4} {workload:13} {setting:8} {elapsed:6.1f} s", flush=True)
                finally:
                    if hog is not None:
                        hog.kill()
                        hog.wait()
                loads.append(os.getloadavg()[0])
            order = order[1:] + order[:1]
    print(f"\n1-minute load average during the runs: {min(loads):.1f} - {max(loads):.1f} ({os.cpu_count()} cores)")
    for workload in WORKLOADS:
        print(f"\n{workload}: median wall time, s (runs)")
        for load in ("idle", "busy"):
            cells = []
            for setting in SETTINGS:
                runs = times[workload][load][setting]
                cells.append(f"{setting} {statistics.median(runs):5.1f} ({', '.join(f'{t:.1f}' for t in runs)})")
            print(f"  {load:4}  " + "   ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"times": times, "load_average": loads}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
