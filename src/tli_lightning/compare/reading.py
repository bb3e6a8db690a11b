"""Reading what runs wrote: run directories, their files checked, runs whose data differ refused."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tli_lightning.errors import TLIError
from tli_lightning.runs import _versions

_EPOCH = re.compile(r"^epoch_(\d+)\.json$")
_MODEL_IGNORED = ("_instantiator",)
_NO_RUNS = "compare needs at least one run directory (logs/<name>/version_<n>, or logs/<name> for all its runs)"


@dataclass
class _Run:
    path: Path
    summary: dict[str, Any]
    alignment: tuple[dict[str, Any], dict[str, Any]]  # baseline, final
    xnli: tuple[dict[str, Any], dict[str, Any]]
    files: dict[str, str]


def find_runs(specs: Iterable[str | Path], warnings: list[str] | None = None) -> list[Path]:
    """Run directories from ``logs/<name>/version_<n>`` paths, or ``logs/<name>`` meaning all its versions.

    Of a ``logs/<name>``, the versions that are not finished and complete (a run that failed, was interrupted or
    is still running) are skipped with a line in ``warnings``; a run directory named itself is always kept, and
    :func:`load_run` says what it lacks.
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for spec in specs:
        path = Path(spec)
        if not path.is_dir():
            raise TLIError(f"{path}: no such directory (expected a run directory logs/<name>/version_<n>)")
        versions = [] if (path / "summary.json").is_file() else [path / f"version_{v}" for v in _versions(path)]
        why = {v: _unusable(v) for v in versions}
        skipped = [
            f"{v}: skipped, not a finished and complete run ({reasons})" for v, reasons in why.items() if reasons
        ]
        if versions and len(skipped) == len(versions):
            raise TLIError(f"{path}: none of its runs can be compared: {'; '.join(skipped)}")
        if warnings is not None:
            warnings += skipped
        for candidate in [v for v, reasons in why.items() if not reasons] or [path]:
            key = candidate.resolve()
            if key not in seen:  # the same run named twice (logs/demo and logs/demo/version_0) counts once
                seen.add(key)
                found.append(candidate)
    if not found:
        raise TLIError(_NO_RUNS)
    return found


def _read_json(path: Path) -> dict[str, Any]:
    try:
        # Runs write strict JSON (an undefined retention is null); Python's json also reads the NaN older runs wrote.
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise TLIError(f"{path}:{error.lineno}: not valid JSON ({error.msg})") from None
    except OSError as error:
        raise TLIError(f"{path}: cannot read: {error.strerror or error}") from None
    if not isinstance(data, dict):
        raise TLIError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _last_epoch_file(directory: Path) -> Path | None:
    if not directory.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _EPOCH.match(p.name))]
    return max(found)[1] if found else None


def _missing(path: Path) -> list[str]:
    """The evaluation files a run directory lacks for a comparison."""
    return [
        f"{kind}/{name}"
        for kind in ("alignment", "xnli")
        for name, present in (
            ("baseline.json", (path / kind / "baseline.json").is_file()),
            ("epoch_NN.json", _last_epoch_file(path / kind) is not None),
        )
        if not present
    ]


def _unusable(path: Path) -> str:
    """Why a version found under ``logs/<name>`` is left out (empty: it is finished and complete)."""
    if not (path / "summary.json").is_file():
        return "no summary.json"
    status = _read_json(path / "summary.json").get("status")
    reasons = [] if status == "finished" else [f"status {status!r}"]
    return ", ".join(reasons + [f"no {m}" for m in _missing(path)])


def load_run(path: Path) -> _Run:
    """One run's summary and its baseline and last evaluations; a clear error naming what is missing."""
    if not (path / "summary.json").is_file():
        names = sorted(p.name for p in path.iterdir() if _versions(p)) if path.is_dir() else []
        hint = ""
        if names:
            hint = f"; it holds the runs of {', '.join(names)}: pass {path / names[0]} (all its runs) or a version_<n>"
        raise TLIError(
            f"{path}: not a run directory: no summary.json (expected logs/<name>/version_<n> as written by "
            f"`python -m tli_lightning fit`, or a directory of such version_<n> runs){hint}"
        )
    missing = _missing(path)
    if missing:
        raise TLIError(
            f"{path}: cannot compare this run: missing {', '.join(missing)} (written by the LayerwiseAlignment and "
            "ZeroShotRetention callbacks before training and after each evaluated epoch)"
        )
    files = {"summary": str(path / "summary.json")}
    for kind in ("alignment", "xnli"):
        files[f"{kind}_baseline"] = str(path / kind / "baseline.json")
        files[f"{kind}_final"] = str(_last_epoch_file(path / kind))
    summary = _read_json(path / "summary.json")
    fingerprint = (summary.get("data") or {}).get("fingerprint")
    if not isinstance(fingerprint, dict) or "name" not in summary:
        raise TLIError(
            f"{path}/summary.json: no name or data.fingerprint: cannot tell which arm it is or check that "
            "the runs measured the same data"
        )
    run = _Run(
        path,
        summary,
        (_read_json(Path(files["alignment_baseline"])), _read_json(Path(files["alignment_final"]))),
        (_read_json(Path(files["xnli_baseline"])), _read_json(Path(files["xnli_final"]))),
        files,
    )
    _check_run(run)
    return run


def _check_run(run: _Run) -> None:
    """Baseline and final evaluations of a run must pair up item by item."""
    (a0, a1), (x0, x1) = run.alignment, run.xnli
    for report, name in ((a0, "alignment_baseline"), (a1, "alignment_final")):
        for set_name, entry in (report.get("sets") or {}).items():
            if "per_pair_cos" not in entry or "per_pair_random" not in entry:
                raise TLIError(
                    f"{run.files[name]}: set {set_name!r} has no per_pair_cos/per_pair_random (written by "
                    "an older tli_lightning); paired statistics need them: rerun"
                )
            if "per_query_rank" not in entry:
                raise TLIError(
                    f"{run.files[name]}: set {set_name!r} has no per_query_rank: written by tli_lightning 0.2 or "
                    "older, before the primary endpoint (CSLS retrieval over a shared pool); rerun the run, or "
                    "measure its adapters again with `python -m tli_lightning scan --adapter DIR`"
                )
    if a0.get("layers") != a1.get("layers"):
        raise TLIError(f"{run.path}: the baseline and final alignment measured different layers")
    for set_name in set(a0.get("sets", {})) & set(a1.get("sets", {})):
        if a0["sets"][set_name]["pairs"] != a1["sets"][set_name]["pairs"]:
            raise TLIError(f"{run.path}: the baseline and final alignment of {set_name!r} measured different pairs")
    if sorted(x0.get("languages", {})) != sorted(x1.get("languages", {})):
        raise TLIError(f"{run.path}: the baseline and final XNLI evaluations cover different languages")
    for lang, entry in x1["languages"].items():
        if entry.get("labels") != x0["languages"][lang].get("labels"):
            raise TLIError(f"{run.path}: the baseline and final XNLI {lang} evaluations scored different examples")


def _check_same_data(runs: Sequence[_Run]) -> bool:
    """Arms may differ in any model setting, never in what was measured. Returns whether every run measured the
    same items (pairs, XNLI rows), so that statistics can pair them: True unless every run follows its own seed
    for the data (``data.seed: null``), in which case their samples differ by design but their sources must not."""
    first = runs[0]
    languages = sorted(first.xnli[1]["languages"])
    for run in runs[1:]:
        theirs = sorted(run.xnli[1]["languages"])
        if theirs != languages:
            raise TLIError(
                f"runs differ in XNLI languages: {first.path} has {', '.join(languages)} vs {run.path} has "
                f"{', '.join(theirs)}"
            )
    reference = first.summary["data"]["fingerprint"]
    fields = ["trained_pairs", "control_pairs", *[f"xnli_{lang}" for lang in languages]]
    same = all(run.summary["data"]["fingerprint"].get(f) == reference.get(f) for run in runs for f in fields)
    if same:
        return True
    if all(run.summary["data"].get("seed", 0) is None for run in runs):
        # Seeds vary the sample: the files and every data setting but the seed must still agree.
        for run in runs[1:]:
            for key, value in _data_settings(first).items():
                if _data_settings(run).get(key) != value:
                    raise TLIError(
                        f"runs differ in data.{key}: {first.path} vs {run.path}; compare only runs measured on the "
                        "same data"
                    )
        return False
    for field in fields:
        for run in runs:
            if run.summary["data"]["fingerprint"].get(field) != reference.get(field):
                raise TLIError(
                    f"runs differ in data.fingerprint.{field}: {first.path} vs {run.path}; compare only "
                    "runs measured on the same pairs and XNLI examples"
                )
    return True


def _data_settings(run: _Run) -> dict[str, Any]:
    """What must agree between runs whose seeds vary their data sample: every data setting, and the files' hashes."""
    settings = {k: v for k, v in run.summary["data"].items() if k not in ("fingerprint", "counts", "seed_resolved")}
    files = ((run.summary.get("provenance") or {}).get("data_files")) or {}
    settings.update({f"files.{k}": (v or {}).get("sha256") for k, v in files.items()})
    return settings


def check_same_base(runs: Sequence[_Run], allow: bool, warnings: list[str]) -> bool:
    """Runs put in one verdict must share the base model (name and recorded revision or fingerprint): a verdict
    across bases compares models, not methods. ``allow``: warn instead of refusing. Returns whether they agree."""
    from tli_lightning.compare.numbers import base_model

    identities = {}
    for run in runs:
        identities.setdefault(base_model(run.summary)["identity"], run.path)
    if len(identities) == 1:
        return True
    listed = "; ".join(f"{identity} ({path})" for identity, path in identities.items())
    if not allow:
        raise TLIError(
            f"runs differ in base model: {listed}. Compare runs of one base model, or pass --allow-different-bases "
            "to compare them anyway (the report then says so at the top)"
        )
    warnings.append(f"THE RUNS DIFFER IN BASE MODEL ({listed}): every comparison below mixes base models")
    return False
