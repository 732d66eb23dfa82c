"""Is a runtime safe for a model? One verdict per artifact, decided inside the candidate runtime.

``check_artifact`` runs where the candidate packages are installed (in the candidate image,
for ``toolkit upgrade-check``): the environment diff against the card, a guarded load with
the mismatch allowed (the checksum still checked, only the card's globals importable, every
warning recorded: scikit-learn's ``InconsistentVersionWarning`` says which estimators were
pickled by another release), then the outputs on the card's reference set (card schema 3,
the same batches and thread limit as at save), else on its probe rows. Verdicts:

- ``safe``: loads, and every output on every reference row is within the card's tolerance;
  When the library warned that the unpickle is unsupported (``InconsistentVersionWarning``),
  the verdict stays ``safe`` (the documented rule: the reference rows are the evidence, and a
  control pickled by an older release that agrees everywhere is safe) and its reason carries
  the warning's text, so nobody reads "safe" without seeing it;
- ``drift``: loads, but the outputs moved (the silent kind of break), with how much;
- ``broken``: does not load, or raises when it predicts.

The records here are also what the host reads back from the container (``from_dict``), and
what the CLI prints (``to_dict``, ``junit_xml``). Nothing here talks to Docker.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

__all__ = [
    "VERDICTS",
    "ModelCheck",
    "PackageChange",
    "RetrainOutcome",
    "UpgradeReport",
    "check_artifact",
    "junit_xml",
]

VERDICTS = ("safe", "drift", "broken")
_REASON_CHARS = 400  # a reason is one line; a library's message can be a page
_SELF = "toolkit"  # the checker, not the payload (see toolkit.policy)


@dataclass(frozen=True, kw_only=True, slots=True)
class PackageChange:
    """A distribution whose version differs between the card and the candidate runtime."""

    name: str
    card: str | None  # None: not installed when the model was saved
    candidate: str | None  # None: not in the candidate runtime

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "card": self.card, "candidate": self.candidate}

    def __str__(self) -> str:
        return f"{self.name} {self.card or '(absent)'} -> {self.candidate or '(absent)'}"


@dataclass(frozen=True, kw_only=True, slots=True)
class RetrainOutcome:
    """A model retrained from its card's recipe in the candidate runtime (``--retrain``)."""

    version: str | None  # the new version; None when it could not be retrained
    metrics: Mapping[str, Mapping[str, float]]  # the new model's, as its card records them
    parent_metrics: Mapping[str, Mapping[str, float]]
    registered: bool = False  # set on the host once the registry took it (as staging)
    path: str | None = None  # where the new artifact is (host path once registered)
    error: str | None = None  # why it could not be retrained (schema 1, no recipe, ...)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "metrics": {k: dict(v) for k, v in self.metrics.items()},
            "parent_metrics": {k: dict(v) for k, v in self.parent_metrics.items()},
            "registered": self.registered,
            "path": self.path,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RetrainOutcome:
        return cls(
            version=raw.get("version"),
            metrics=_metrics(raw.get("metrics")),
            parent_metrics=_metrics(raw.get("parent_metrics")),
            registered=bool(raw.get("registered", False)),
            path=raw.get("path"),
            error=raw.get("error"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelCheck:
    """One model's verdict in the candidate runtime, with the evidence."""

    name: str
    version: str
    status: str | None  # its registry stage, when it came from a registry
    verdict: str  # one of VERDICTS
    reason: str  # one line
    packages: tuple[PackageChange, ...] = ()
    warnings: tuple[str, ...] = ()  # raised while unpickling (InconsistentVersionWarning, ...)
    probe: Mapping[str, Any] | None = None  # toolkit.probe.ProbeResult.to_dict(), once it ran
    seconds: float = 0.0
    retrain: RetrainOutcome | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "status": self.status,
            "verdict": self.verdict,
            "reason": self.reason,
            "packages": [p.to_dict() for p in self.packages],
            "warnings": list(self.warnings),
            "probe": None if self.probe is None else dict(self.probe),
            "seconds": round(self.seconds, 3),
            "retrain": None if self.retrain is None else self.retrain.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ModelCheck:
        """Read back what the container wrote. Raises: ValueError on a record it never writes."""
        verdict = raw["verdict"]
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        return cls(
            name=str(raw["name"]),
            version=str(raw["version"]),
            status=raw.get("status"),
            verdict=verdict,
            reason=str(raw["reason"]),
            packages=tuple(
                PackageChange(name=str(p["name"]), card=p.get("card"), candidate=p.get("candidate"))
                for p in raw.get("packages") or ()
            ),
            warnings=tuple(str(w) for w in raw.get("warnings") or ()),
            probe=raw.get("probe"),
            seconds=float(raw.get("seconds") or 0.0),
            retrain=None if raw.get("retrain") is None else RetrainOutcome.from_dict(raw["retrain"]),
        )

    def with_retrain(self, retrain: RetrainOutcome | None) -> ModelCheck:
        return ModelCheck(
            name=self.name,
            version=self.version,
            status=self.status,
            verdict=self.verdict,
            reason=self.reason,
            packages=self.packages,
            warnings=self.warnings,
            probe=self.probe,
            seconds=self.seconds,
            retrain=retrain,
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class UpgradeReport:
    """Every selected model's verdict against one candidate lock."""

    lock: str  # the candidate lock as given
    lock_sha256: str
    image: str  # the candidate image's tag
    image_id: str
    cached: bool  # the candidate image was already built for this lock, base and toolkit
    base_image: str
    registry: str
    stage: str
    models: tuple[ModelCheck, ...]
    # The candidate runtime as the check saw it from inside (a toolkit.fingerprint.Fingerprint):
    # what --certify records, so a certification names this very runtime, not only its lock.
    runtime: Any = None
    seconds: float = 0.0
    timings: Mapping[str, float] = field(default_factory=dict)  # build, run, register

    @property
    def ok(self) -> bool:
        return all(m.ok for m in self.models)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {v: sum(m.verdict == v for m in self.models) for v in VERDICTS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "candidate": {
                "lock": self.lock,
                "lock_sha256": self.lock_sha256,
                "image": self.image,
                "image_id": self.image_id,
                "cached": self.cached,
                "base_image": self.base_image,
            },
            "registry": self.registry,
            "stage": self.stage,
            "summary": {**self.counts(), "total": len(self.models)},
            "models": [m.to_dict() for m in self.models],
            "seconds": round(self.seconds, 2),
            "timings": {k: round(v, 2) for k, v in self.timings.items()},
        }


def check_artifact(path: Path, *, status: str | None = None) -> ModelCheck:
    """The verdict for one artifact in *this* runtime (the candidate's). Never raises for the
    model's own faults: a model that cannot be read, loaded or run is ``broken``, with why."""
    from toolkit.artifact import Loaded, check_outputs, read_card, runtime_differences
    from toolkit.errors import ToolkitError

    started = time.monotonic()
    try:
        card = read_card(path)
    except ToolkitError as e:
        name, _, version = path.name.removesuffix(".joblib").rpartition("-")
        return ModelCheck(
            name=name or path.name,
            version=version,
            status=status,
            verdict="broken",
            reason=_line(f"unreadable card: {e}"),
            seconds=time.monotonic() - started,
        )
    changes = _package_changes(card.environment.packages)

    def verdict(kind: str, reason: str, *, recorded: Sequence[str] = (), probe: Any = None) -> ModelCheck:
        return ModelCheck(
            name=card.name,
            version=card.version,
            status=status,
            verdict=kind,
            reason=_line(reason),
            packages=changes,
            warnings=tuple(recorded),
            probe=None if probe is None else probe.to_dict(),
            seconds=time.monotonic() - started,
        )

    try:
        differences = runtime_differences(card, policy="strict")
        pipeline, recorded = _guarded_load(path, card)
    except _LoadFailed as e:
        return verdict("broken", f"does not load: {e.reason}", recorded=e.recorded)
    except ToolkitError as e:
        return verdict("broken", f"does not load: {e}")
    try:
        result = check_outputs(path, Loaded(pipeline=pipeline, card=card, differences=differences))
    except ToolkitError as e:  # the reference file fails its card
        return verdict("broken", f"reference set refused: {e}", recorded=recorded)
    # The probe's wording stays as it was; a reference set says how many rows it checked.
    agree = "probe predictions agree" if card.reference is None else f"reference outputs agree on {result.rows} rows"
    if result.error is not None:
        return verdict("broken", f"loads, but predict raises {result.error}", recorded=recorded, probe=result)
    if not result.ok:
        return verdict("drift", f"loads, but predictions moved: {_moved(result)}", recorded=recorded, probe=result)
    if not differences:
        reason = f"same runtime as the card; {agree}"
    else:
        reason = (
            f"loads despite {len(differences)} runtime difference(s); {agree} (max |diff| {result.max_abs_diff:.3g})"
        )
    unsupported = [w for w in recorded if w.startswith("InconsistentVersionWarning")]
    if unsupported:
        # Agreement on the rows checked, while the library says this unpickle is unsupported:
        # still safe (the rule), with the library's own words in the reason.
        more = f" (and {len(recorded) - 1} more warning(s))" if len(recorded) > 1 else ""
        reason += f"; but scikit-learn warns the unpickle is unsupported: {unsupported[0]}{more}"
        return verdict("safe", reason, recorded=recorded, probe=result)
    if recorded:
        reason += f"; {len(recorded)} warning(s) while loading"
    return verdict("safe", reason, recorded=recorded, probe=result)


def _moved(result: Any) -> str:
    """How much moved, per output for a reference set; a regressor's values never say "label"."""
    outputs = getattr(result, "outputs", None)
    if outputs is not None:
        return "; ".join(str(o) for o in outputs if o.differing) or "lengths differ"
    moved = (
        f"{result.label_mismatches} of {result.rows} probe predictions changed"
        if result.label_mismatches
        else "no probe label changed"
    )
    diff = "inf" if not math.isfinite(result.max_abs_diff) else f"{result.max_abs_diff:.3g}"
    return f"{moved}, max |diff| {diff} > tolerance {result.tolerance:g}"


def junit_xml(report: UpgradeReport) -> bytes:
    """One JUnit test case per model: a failure for ``drift`` or ``broken``, with its reason."""
    counts = report.counts()
    suite = ElementTree.Element(
        "testsuite",
        {
            "name": "toolkit upgrade-check",
            "tests": str(len(report.models)),
            "failures": str(counts["drift"] + counts["broken"]),
            "errors": "0",
            "skipped": "0",
            "time": f"{report.seconds:.3f}",
        },
    )
    properties = ElementTree.SubElement(suite, "properties")
    for key, value in (
        ("lock", report.lock),
        ("lock_sha256", report.lock_sha256),
        ("image", report.image),
        ("base_image", report.base_image),
        ("registry", report.registry),
        ("stage", report.stage),
    ):
        ElementTree.SubElement(properties, "property", {"name": key, "value": value})
    for check in report.models:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            {
                "classname": f"upgrade-check.{check.name}",
                "name": f"{check.name} {check.version}",
                "time": f"{check.seconds:.3f}",
            },
        )
        details = [f"verdict: {check.verdict}", f"reason: {check.reason}"]
        details += [f"package: {p}" for p in check.packages]
        details += [f"warning: {w}" for w in check.warnings]
        if check.retrain is not None:
            details.append(f"retrain: {_retrain_line(check.retrain)}")
        if not check.ok:
            failure = ElementTree.SubElement(case, "failure", {"type": check.verdict, "message": check.reason})
            failure.text = "\n".join(details)
        else:
            ElementTree.SubElement(case, "system-out").text = "\n".join(details)
    root = ElementTree.Element("testsuites", {"name": "toolkit upgrade-check"})
    root.append(suite)
    ElementTree.indent(root)
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return body + b"\n"


# --- helpers -------------------------------------------------------------------------------


class _LoadFailed(Exception):
    def __init__(self, reason: str, recorded: Sequence[str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.recorded = tuple(recorded)


def _guarded_load(path: Path, card: Any) -> tuple[Any, list[str]]:
    """Unpickle exactly the bytes whose sha256 the card records, importing only the card's
    globals, with the runtime mismatch allowed and every warning recorded.

    Raises: IntegrityError (checksum, a global the card does not list), _LoadFailed.
    """
    from toolkit import _files, pickle_audit, trust
    from toolkit.artifact import artifact_paths, check_companions
    from toolkit.errors import IntegrityError, ToolkitError

    paths = artifact_paths(path)
    check_companions(paths, card)
    blob, digest = _files.read_and_hash(paths.model, "artifact", card.artifact.size)
    if digest != card.artifact.sha256:
        raise IntegrityError(f"{paths.model}: sha256 {digest[:12]}… does not match the card's; refused")
    guard = trust.policy_for(card.references)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            pipeline = pickle_audit.load(blob, guard, where=str(paths.model))
        except ToolkitError:
            raise
        except Exception as e:
            raise _LoadFailed(f"{type(e).__name__}: {e}", _warning_lines(caught)) from e
    return pipeline, _warning_lines(caught)


def _warning_lines(caught: Sequence[warnings.WarningMessage]) -> list[str]:
    lines: list[str] = []
    for w in caught:
        line = _line(f"{w.category.__name__}: {w.message}")
        if line not in lines:
            lines.append(line)
    return lines


def _package_changes(recorded: Mapping[str, str]) -> tuple[PackageChange, ...]:
    from toolkit.fingerprint import installed_distributions

    here = installed_distributions()
    names = sorted((set(recorded) | set(here)) - {_SELF})
    return tuple(
        PackageChange(name=n, card=recorded.get(n), candidate=here.get(n))
        for n in names
        if recorded.get(n) != here.get(n)
    )


def _metrics(raw: Any) -> dict[str, dict[str, float]]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(k): {str(m): float(v) for m, v in section.items()}
        for k, section in raw.items()
        if isinstance(section, Mapping)
    }


def _retrain_line(outcome: RetrainOutcome) -> str:
    if outcome.error:
        return f"not retrained: {outcome.error}"
    shown = []
    for key in ("accuracy", "roc_auc", "r2", "rmse"):
        new = outcome.metrics.get("test", {}).get(key)
        old = outcome.parent_metrics.get("test", {}).get(key)
        if new is not None:
            shown.append(f"{key} {'-' if old is None else f'{old:.4f}'} -> {new:.4f}")
    return f"{outcome.version}: " + (", ".join(shown) or "no test metrics")


def _line(text: str) -> str:
    one = " ".join(str(text).split())
    return one if len(one) <= _REASON_CHARS else one[: _REASON_CHARS - 1] + "…"
