"""Reading what runs wrote: run directories, their files checked, runs whose data differ refused.

A run's measurements are discovered, not named: every folder of a run directory holding a ``baseline.json``
is one measurement, whose files say their ``measurement`` kind (see :mod:`tli_lightning.callbacks.measurement`).
Runs written before the measurement seam (tli_lightning 0.2: ``alignment/`` and ``xnli/`` without a kind) are
read too: their ``xnli/`` files become the tasks ``xnli_<lang>``.
"""

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


# What a comparison needs of a run: one alignment measurement and at least one zero-shot task measurement.
NEEDED = {"alignment": "alignment", "multiple_choice": "reasoning"}
_WRITTEN_BY = {"alignment": "LayerwiseAlignment", "multiple_choice": "ZeroShotRetention"}
_LEGACY_KINDS = {"alignment": "alignment", "xnli": "multiple_choice"}  # folder -> kind, for runs without kinds


@dataclass
class Measured:
    """One measurement of a run: its kind, its folder (``key``), its baseline and newest evaluation."""

    kind: str
    key: str
    baseline: dict[str, Any]
    final: dict[str, Any]
    files: dict[str, str]


@dataclass
class _Run:
    path: Path
    summary: dict[str, Any]
    measurements: dict[str, Measured]
    files: dict[str, str]

    @property
    def alignment(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (first) alignment measurement: baseline, final."""
        found = next(m for m in self.measurements.values() if m.kind == "alignment")
        return found.baseline, found.final

    @property
    def tasks(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Every zero-shot task of every multiple-choice measurement: ``{task: (baseline entry, final entry)}``."""
        out = {}
        for m in self.measurements.values():
            if m.kind == "multiple_choice":
                for name, entry in m.final["tasks"].items():
                    out[name] = (m.baseline["tasks"][name], entry)
        return out

    @property
    def lm(self) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
        """Held-out text likelihood per language (empty for runs without it): ``{lang: (baseline, final)}``."""
        out = {}
        for m in self.measurements.values():
            if m.kind == "lm_likelihood":
                for lang, entry in m.final["languages"].items():
                    out[lang] = (m.baseline["languages"][lang], entry)
        return out

    def of_kind(self, kind: str) -> list[Measured]:
        return [m for m in self.measurements.values() if m.kind == kind]


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


def _measurement_dirs(path: Path) -> dict[str, str | None]:
    """The run's measurement folders and their kinds (None: a folder of evaluations whose baseline is missing)."""
    found: dict[str, str | None] = {}
    if not path.is_dir():
        return found
    for folder in sorted(p for p in path.iterdir() if p.is_dir()):
        baseline = folder / "baseline.json"
        if baseline.is_file():
            kind = _read_json(baseline).get("measurement") or _LEGACY_KINDS.get(folder.name)
            if kind is not None:
                found[folder.name] = kind
        elif _last_epoch_file(folder) is not None:
            found[folder.name] = None
    return found


def _complete(path: Path, name: str, kind: str | None) -> bool:
    return kind is not None and _last_epoch_file(path / name) is not None


def _missing(path: Path) -> list[str]:
    """The evaluation files a run directory lacks for a comparison: those of the measurements it needs (an optional
    measurement without an evaluation after training is left out of the comparison by :func:`load_run`)."""
    folders = _measurement_dirs(path)
    needed_folders = set(NEEDED.values()) | set(_LEGACY_KINDS)
    missing = [f"{name}/baseline.json" for name, kind in folders.items() if kind is None and name in needed_folders]
    missing += [
        f"{name}/epoch_NN.json"
        for name, kind in folders.items()
        if kind in NEEDED and _last_epoch_file(path / name) is None
    ]
    for kind, folder in NEEDED.items():
        if kind not in folders.values() and not any(m.startswith(f"{folder}/") for m in missing):
            missing.append(f"a {kind} measurement (e.g. {folder}/baseline.json and {folder}/epoch_NN.json)")
    return missing


def _unusable(path: Path) -> str:
    """Why a version found under ``logs/<name>`` is left out (empty: it is finished and complete)."""
    if not (path / "summary.json").is_file():
        return "no summary.json"
    status = _read_json(path / "summary.json").get("status")
    reasons = [] if status == "finished" else [f"status {status!r}"]
    return ", ".join(reasons + [f"no {m}" for m in _missing(path)])


def load_run(path: Path, warnings: list[str] | None = None) -> _Run:
    """One run's summary and its baseline and last evaluations; a clear error naming what is missing. An optional
    measurement (not alignment or zero-shot tasks) with no evaluation after training is left out, with a line in
    ``warnings``; so is a measurement whose last evaluation is at another epoch than the alignment's."""
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
            f"{path}: cannot compare this run: missing {', '.join(missing)} (written by the "
            f"{' and '.join(_WRITTEN_BY.values())} callbacks before training and after each evaluated epoch)"
        )
    files = {"summary": str(path / "summary.json")}
    measured = {}
    for key, kind in _measurement_dirs(path).items():
        if not _complete(path, key, kind):  # an optional one (the needed ones are complete, checked above)
            if warnings is not None:
                what = "no baseline.json" if kind is None else "no evaluation after training (epoch_NN.json)"
                warnings.append(f"{path}: {key}/ left out of the comparison: {what}")
            continue
        baseline_file, final_file = path / key / "baseline.json", _last_epoch_file(path / key)
        baseline, final = _read_json(baseline_file), _read_json(final_file)
        if kind == "multiple_choice" and "tasks" not in baseline:  # written before the seam: XNLI per language
            baseline, final = _legacy_xnli(baseline), _legacy_xnli(final)
        files[f"{key}_baseline"], files[f"{key}_final"] = str(baseline_file), str(final_file)
        measured[key] = Measured(kind, key, baseline, final, {"baseline": str(baseline_file), "final": str(final_file)})
    summary = _read_json(path / "summary.json")
    fingerprint = (summary.get("data") or {}).get("fingerprint")
    if not isinstance(fingerprint, dict) or "name" not in summary:
        raise TLIError(
            f"{path}/summary.json: no name or data.fingerprint: cannot tell which arm it is or check that "
            "the runs measured the same data"
        )
    run = _Run(path, summary, measured, files)
    reference = run.alignment[1].get("epoch")
    for m in measured.values():
        if m.final.get("epoch") != reference and warnings is not None:
            warnings.append(
                f"{path}: {m.key}/ was last evaluated at epoch {m.final.get('epoch')}, the alignment at epoch "
                f"{reference} (every_n_epochs): each is compared at its own last evaluation"
            )
    _check_run(run)
    return run


def _legacy_xnli(evaluation: dict[str, Any]) -> dict[str, Any]:
    """An ``xnli/`` evaluation of tli_lightning 0.2 (``languages``) as tasks ``xnli_<lang>``."""
    tasks = {
        f"xnli_{lang}": {**entry, "chance": 1 / 3, "language": lang, "benchmark": "xnli"}
        for lang, entry in evaluation.get("languages", {}).items()
    }
    return {
        **{k: v for k, v in evaluation.items() if k != "languages"},
        "measurement": "multiple_choice",
        "tasks": tasks,
    }


def _check_run(run: _Run) -> None:
    """Baseline and final evaluations of a run must pair up item by item."""
    for m in run.of_kind("alignment"):
        a0, a1 = m.baseline, m.final
        for report, which in ((a0, "baseline"), (a1, "final")):
            for set_name, entry in (report.get("sets") or {}).items():
                if "per_pair_cos" not in entry or "per_pair_random" not in entry:
                    raise TLIError(
                        f"{m.files[which]}: set {set_name!r} has no per_pair_cos/per_pair_random (written by "
                        "an older tli_lightning); paired statistics need them: rerun"
                    )
                if "per_query_rank" not in entry:
                    raise TLIError(
                        f"{m.files[which]}: set {set_name!r} has no per_query_rank: written by tli_lightning 0.2 or "
                        "older, before the primary endpoint (CSLS retrieval over a shared pool); rerun the run, or "
                        "measure its adapters again with `python -m tli_lightning scan --adapter DIR`"
                    )
        if a0.get("layers") != a1.get("layers"):
            raise TLIError(f"{run.path}: the baseline and final alignment measured different layers")
        for set_name in set(a0.get("sets", {})) & set(a1.get("sets", {})):
            if a0["sets"][set_name]["pairs"] != a1["sets"][set_name]["pairs"]:
                raise TLIError(f"{run.path}: the baseline and final alignment of {set_name!r} measured different pairs")
    seen: dict[str, str] = {}
    for m in run.of_kind("multiple_choice"):
        if sorted(m.baseline.get("tasks", {})) != sorted(m.final.get("tasks", {})):
            raise TLIError(f"{run.path}: the baseline and final evaluations of {m.key}/ cover different tasks")
        for name, entry in m.final["tasks"].items():
            if name in seen:
                raise TLIError(f"{run.path}: task {name} is measured twice ({seen[name]}/ and {m.key}/)")
            seen[name] = m.key
            if entry.get("labels") != m.baseline["tasks"][name].get("labels"):
                raise TLIError(f"{run.path}: the baseline and final {name} evaluations scored different examples")
    for m in run.of_kind("lm_likelihood"):
        for lang, entry in m.final["languages"].items():
            if entry.get("per_text_tokens") != m.baseline["languages"].get(lang, {}).get("per_text_tokens"):
                raise TLIError(f"{run.path}: the baseline and final {m.key}/ {lang} evaluations scored different texts")


def _check_same_data(runs: Sequence[_Run]) -> bool:
    """Arms may differ in any model setting, never in what was measured. Returns whether every run measured the
    same items (pairs, task examples, texts), so that statistics can pair them: True unless every run follows its
    own seed for the data (``data.seed: null``), in which case their samples differ by design but their sources
    must not."""
    first = runs[0]
    tasks = list(first.tasks)  # in the order measured: a refusal names the first that differs
    for run in runs[1:]:
        theirs = list(run.tasks)
        if sorted(theirs) != sorted(tasks):
            raise TLIError(
                f"runs differ in zero-shot tasks: {first.path} has {', '.join(tasks)} vs {run.path} has "
                f"{', '.join(theirs)}"
            )
    reference = first.summary["data"]["fingerprint"]
    # A run of tli_lightning 0.2 fingerprinted task xnli_<lang> under the same name.
    fields = ["trained_pairs", "control_pairs", *tasks, *(k for k in reference if k.startswith("lm_texts_"))]
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
                    "runs measured on the same pairs and task examples"
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
