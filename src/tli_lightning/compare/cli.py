"""``python -m tli_lightning compare RUN_DIR [RUN_DIR ...] --output DIR``."""

from __future__ import annotations

import argparse
import sys

from tli_lightning.commands import _positive
from tli_lightning.compare._shared import PAPER_LAYER
from tli_lightning.compare.reading import _NO_RUNS
from tli_lightning.compare.report import build_report, write_report
from tli_lightning.errors import OneLineArgumentParser, TLIError
from tli_lightning.layers import LAYERS_NOTE


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a hidden_states index >= 0, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="python -m tli_lightning compare",
        description=(
            "Compare runs side by side, baseline -> final, from what they wrote (nothing is re-measured), and answer "
            "in plain words, each answer from a 95% CI that counts seed and example noise (yes / no / inconclusive "
            "/ not answerable, rules printed in the report): does early-layer LoRA preserve zero-shot reasoning "
            "(each task: XNLI, XCOPA, XStoryCloze, ...) better than full fine-tuning, and does it retrieve "
            "never-trained (control) translations above chance and better than before training? Primary alignment "
            "endpoint: CSLS P@1 over one candidate pool shared by every set and run, on mean-centered vectors (a "
            "shift or rescaling of the space cannot move it). A run's name (--trainer.logger.init_args.name) is its "
            "arm; runs of one arm with different seeds are aggregated. Arms may differ in any model setting; runs "
            "must share their data (pairs, task examples, held-out texts) and their base model. "
            f"{LAYERS_NOTE}"
        ),
    )
    parser.add_argument(
        "run_dirs",
        nargs="*",
        metavar="RUN_DIR",
        help="a run directory logs/<name>/version_<n>, or logs/<name> for all of its version_<n> runs (those not "
        "finished and complete are skipped with a warning)",
    )
    parser.add_argument(
        "--output",
        default="comparison",
        metavar="DIR",
        help="directory to write report.md, report.json and the PNG figures into (created if needed; "
        "existing report files are overwritten; default: comparison)",
    )
    parser.add_argument(
        "--layer",
        type=_nonnegative,
        default=PAPER_LAYER,
        help="hidden_states index of the paired statistics, of figure 1 and of the alignment verdict, "
        "besides each run's own target layer (default: 2, the TLI paper's layer)",
    )
    parser.add_argument(
        "--resamples",
        type=_positive,
        default=10_000,
        help="bootstrap resamples for the confidence intervals (default: 10000)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the bootstrap's numpy default_rng: the same seed gives the same intervals (default: 0)",
    )
    parser.add_argument(
        "--min-seeds",
        type=_positive,
        default=5,
        help="distinct seeds an arm needs before the verdict answers; with fewer the answer is 'not answerable', "
        "as seed noise cannot be estimated (default: 5)",
    )
    parser.add_argument(
        "--allow-different-bases",
        action="store_true",
        help="compare runs whose base models differ (name, revision or content fingerprint); without it they are "
        "refused, since a verdict across bases compares models, not methods; with it the report warns at the top",
    )
    return parser


def _print_answers(answers: dict) -> None:
    unanswered = [name for name, a in answers.items() if a["answer"] == "not answerable"]
    for name, a in answers.items():
        if a["answer"] != "not answerable":
            print(f"  {name}: {a['answer']}: {a['words']}")
    if unanswered:
        print(f"  not answerable (report.md says why): {', '.join(unanswered)}")


def compare(argv: list[str]) -> None:
    """``python -m tli_lightning compare RUN_DIR [RUN_DIR ...] --output DIR``."""
    args = _parser().parse_args(argv)
    if not args.run_dirs:
        raise TLIError(_NO_RUNS)
    report = build_report(
        args.run_dirs,
        stats_layer=args.layer,
        resamples=args.resamples,
        seed=args.seed,
        min_seeds=args.min_seeds,
        allow_different_bases=args.allow_different_bases,
    )
    paths = write_report(report, args.output)
    for warning in report["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    retention, alignment = report["verdict"]["retention"], report["verdict"]["alignment"]
    print(f"{retention['question']} {retention['answer']}")
    _print_answers({f"{c['early_lora']} vs {c['full']}": c for c in retention["comparisons"]})
    for key, question in alignment["questions"].items():
        print(f"{question} {alignment['answer_' + key]}")
        _print_answers({arm: v[key] for arm, v in alignment["arms"].items()})
    print(f"wrote {', '.join(str(p) for p in paths)}")
