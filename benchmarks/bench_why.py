"""Cost of the weight-update spectrum and the representation drift (issue 16).

    python benchmarks/bench_why.py svd      # torch.linalg.svdvals at Llama-3-8B's matrix shapes, this machine
    python benchmarks/bench_why.py tiny     # both callbacks on the tiny demo model (CPU), per evaluation

``svd``: median seconds of ``svdvals`` (float32) on a random 4096 x 4096 (q/o_proj), 1024 x 4096 (k/v_proj,
8 KV heads), 14336 x 4096 (gate/up/down_proj) and 16384 x 4096 matrix (the 128256 x 4096 embedding matrix
extrapolated from it: for a tall matrix the cost grows linearly with its height), then the full_all total
of one evaluation: 32 blocks x (2 x 4096^2 + 2 x 1024x4096 + 3 x 14336x4096) + the embeddings.
LoRA's spectrum is a QR of two [4096, r] matrices and an r x r SVD per matrix: timed too, per matrix.
"""

from __future__ import annotations

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


def svd(repeats: int = 3) -> dict:
    generator = torch.Generator().manual_seed(0)
    shapes = {"4096x4096": (4096, 4096), "1024x4096": (1024, 4096), "14336x4096": (14336, 4096)}
    shapes["16384x4096"] = (16384, 4096)
    seconds = {}
    for name, shape in shapes.items():
        matrix = torch.randn(*shape, generator=generator)
        seconds[name] = _median_s(lambda m=matrix: torch.linalg.svdvals(m), repeats)
    embedding = seconds["16384x4096"] * 128256 / 16384
    per_block = 2 * seconds["4096x4096"] + 2 * seconds["1024x4096"] + 3 * seconds["14336x4096"]
    b, a = torch.randn(4096, 16, generator=generator), torch.randn(16, 4096, generator=generator)
    from tli_lightning.weight_update import low_rank_singular_values

    lora = _median_s(lambda: low_rank_singular_values(b, a, 2.0), 20)
    return {
        "threads": torch.get_num_threads(),
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
    what = sys.argv[1] if len(sys.argv) > 1 else "svd"
    print(json.dumps(svd() if what == "svd" else tiny(), indent=2))
