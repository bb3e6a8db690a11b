"""Cost of the weight-update spectrum and the representation drift (issue 16).

    python benchmarks/bench_why.py svd                  # svdvals at Llama-3-8B's matrix shapes, on this CPU
    python benchmarks/bench_why.py svd --device cuda    # the same on a GPU (in gpu_suite.sh)
    python benchmarks/bench_why.py tiny                 # both callbacks in demo fits of the tiny model (CPU)

``svd``: median seconds of ``svdvals`` (float32) on a random 4096 x 4096 (q/o_proj), 1024 x 4096 (k/v_proj,
8 KV heads), 14336 x 4096 (gate/up/down_proj) and 16384 x 4096 matrix (the 128256 x 4096 embedding matrix
extrapolated from it: for a tall matrix the cost grows linearly with its height), then the full_all total
of one evaluation: 32 blocks x (2 x 4096^2 + 2 x 1024x4096 + 3 x 14336x4096) + the embeddings.
LoRA's spectrum is a QR of two [4096, r] matrices and an r x r SVD per matrix: timed too, per matrix.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch


def _median_s(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, MKL's first call)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def svd(device: str = "cpu", repeats: int = 3) -> dict:
    generator = torch.Generator().manual_seed(0)
    shapes = {"4096x4096": (4096, 4096), "1024x4096": (1024, 4096), "14336x4096": (14336, 4096)}
    shapes["16384x4096"] = (16384, 4096)
    seconds = {}
    for name, shape in shapes.items():
        matrix = torch.randn(*shape, generator=generator).to(device)
        seconds[name] = _median_s(lambda m=matrix: (torch.linalg.svdvals(m), _sync(device)), repeats)
    embedding = seconds["16384x4096"] * 128256 / 16384
    per_block = 2 * seconds["4096x4096"] + 2 * seconds["1024x4096"] + 3 * seconds["14336x4096"]
    b, a = torch.randn(4096, 16, generator=generator).to(device), torch.randn(16, 4096, generator=generator).to(device)
    from tli_lightning.weight_update import low_rank_singular_values

    lora = _median_s(lambda: (low_rank_singular_values(b, a, 2.0), _sync(device)), 20)
    return {
        "device": torch.cuda.get_device_name()
        if device.startswith("cuda")
        else f"cpu, {torch.get_num_threads()} threads",
        "svdvals_s": {k: round(v, 3) for k, v in seconds.items()},
        "embedding_128256x4096_s_extrapolated": round(embedding, 1),
        "full_early_2_blocks_s": round(2 * per_block, 1),
        "full_all_32_blocks_plus_embeddings_s": round(32 * per_block + embedding, 1),
        "lora_r16_per_matrix_s": round(lora, 5),
        "lora_all_64_matrices_s": round(64 * lora, 3),
    }


def tiny() -> dict:
    """Both callbacks' cost per evaluation in a 2-epoch demo fit of the tiny model, as the run records it."""
    import subprocess
    import tempfile
    from pathlib import Path

    results = {}
    with tempfile.TemporaryDirectory() as root:
        for adaptation in ("lora", "full"):
            args = [sys.executable, "-m", "tli_lightning", "fit", "--trainer.max_epochs", "2"]
            args += ["--trainer.logger.init_args.save_dir", f"{root}/logs", "--trainer.enable_progress_bar", "false"]
            args += ["--trainer.logger.init_args.name", adaptation]
            if adaptation == "full":
                args += ["--model.adaptation", "full", "--model.quantization", "none", "--model.compute_dtype"]
                args += ["float32"]
            subprocess.run(args, cwd=root, check=True, capture_output=True)
            summary = json.loads(next(Path(root, "logs", adaptation).glob("version_*/summary.json")).read_text())
            results[adaptation] = summary["provenance"]["timings"]
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("svd", "tiny"), nargs="?", default="svd")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(json.dumps(svd(args.device) if args.what == "svd" else tiny(), indent=2))
