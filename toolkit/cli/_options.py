"""Options shared by several commands, defined once (as pip-tools' scripts/options.py)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from toolkit import env

__all__ = [
    "AllowModuleOpt",
    "AnyRegistryOpt",
    "ArtifactArg",
    "ArtifactRefArg",
    "AuthorOpt",
    "CertificationsOpt",
    "ConfigOpt",
    "CvFoldsOpt",
    "DatasetOpt",
    "IdOpt",
    "InsecureOpt",
    "IntendedUseOpt",
    "JsonOpt",
    "LimitationsOpt",
    "ModelOpt",
    "NameOpt",
    "OutOpt",
    "ParamOpt",
    "Policy",
    "PolicyOpt",
    "RegisterOpt",
    "RegistryOpt",
    "ScalerOpt",
    "ScriptArgOpt",
    "ScriptOpt",
    "SeedOpt",
    "SignKeyOpt",
    "StoreOpt",
    "TargetOpt",
    "TaskOpt",
    "TestSizeOpt",
    "TrustedKeyOpt",
    "VerifyPredictionsOpt",
    "VersionOpt",
]


class Policy(str, Enum):
    """toolkit.policy.POLICIES, as a choice typer can validate."""

    strict = "strict"
    compatible = "compatible"
    certified = "certified"


ArtifactArg = Annotated[Path, typer.Argument(help="The artifact's .joblib path (its card sits beside it).")]
# Commands that read an artifact also take a registry reference (toolkit.registry.refs); resolve it
# with _common.artifact_arg(value, registry) and give the command a RegistryOpt.
ArtifactRefArg = Annotated[
    str,
    typer.Argument(
        metavar="ARTIFACT",
        help="The artifact's .joblib path, or NAME@production, NAME@staging, NAME:X.Y.Z in --registry.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON value on stdout instead of text.")]
PolicyOpt = Annotated[
    Policy,
    typer.Option(
        help="strict: everything equal; compatible: Python minor and what the pickle needs; "
        "certified: strict, or a certification for this model and this very runtime (--certifications)."
    ),
]
CertificationsOpt = Annotated[
    Path | None,
    typer.Option(
        "--certifications",
        metavar="DIR",
        help="The folder of certifications (upgrade-check --certify) --policy certified honours "
        "(default $TOOLKIT_CERTIFICATIONS); under strict, one that would apply is named in the remedy.",
        show_default=False,
    ),
]
VerifyPredictionsOpt = Annotated[
    bool, typer.Option("--verify-predictions", help="Also load (guarded) and re-check the probe predictions.")
]
TrustedKeyOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--trusted-key",
        metavar="PUB",
        help="Require a signature by this public key (repeatable; adds to $TOOLKIT_TRUSTED_KEYS).",
        show_default=False,
    ),
]
TrustOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--trust",
        metavar="MODULE.NAME",
        help="Let the guarded load resolve this callable (a FunctionTransformer's function, a custom "
        "scorer), beyond the types it trusts by default (repeatable).",
        show_default=False,
    ),
]
SignKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--sign-key",
        envvar=env.SIGNING_KEY,
        metavar="PREFIX.key",
        help="Sign the new artifact on this host with this private key (default $TOOLKIT_SIGNING_KEY).",
        show_default=False,
    ),
]
InsecureOpt = Annotated[
    bool, typer.Option("--insecure", help="Plain HTTP to a registry that is not loopback (loopback always is).")
]
RegistryOpt = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry root (default: $TOOLKIT_REGISTRY, else ./models).", show_default=False),
]
# The registry commands also take a team registry; `train` registers into a directory.
AnyRegistryOpt = Annotated[
    str | None,
    typer.Option(
        "--registry",
        help="Registry: a directory, or postgresql://USER@HOST:PORT/DB for a team's (default: $TOOLKIT_REGISTRY, "
        "else ./models).",
        show_default=False,
    ),
]
StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="oci://HOST[:PORT]/REPO",
        help="A team registry's artifact store (default: $TOOLKIT_STORE).",
        show_default=False,
    ),
]

# `toolkit train` and `toolkit image train` take the same training options.
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="TOML file with the same options as these flags; flags win.")
]
DatasetOpt = Annotated[
    str | None, typer.Option(help="builtin:credit, builtin:wine, builtin:diabetes, or a PATH.csv / PATH.parquet.")
]
TargetOpt = Annotated[str | None, typer.Option(help="Target column (required for a CSV/Parquet file).")]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        help="gradient_boosting, random_forest, hist_gradient_boosting, logistic_regression (classification), "
        "ridge (regression), or a scikit-learn estimator's import path."
    ),
]
TaskOpt = Annotated[
    str | None,
    typer.Option(
        "--task", metavar="classification|regression", help="What the target is (default: from the model or target)."
    ),
]
ScriptOpt = Annotated[
    Path | None,
    typer.Option("--script", help="Your own training script, run instead of the built-in recipe."),
]
NameOpt = Annotated[str | None, typer.Option(help="Artifact name (default: from the dataset).")]
VersionOpt = Annotated[str | None, typer.Option(help="Semantic version X.Y.Z (default 1.0.0).")]
OutOpt = Annotated[
    Path | None, typer.Option("--out", help="With --no-register: where the artifact goes (default ./out).")
]
IdOpt = Annotated[
    str | None,
    typer.Option("--id", metavar="COLUMN", help="Pass this input column through, first, to identify each row."),
]
RegisterOpt = Annotated[
    bool | None, typer.Option("--register/--no-register", help="Register the result (default: the config's, yes).")
]

# The rest of the config's keys: every key has a flag (flags win over the config file).
SeedOpt = Annotated[int | None, typer.Option(help="Seeds the split, the CV folds and the model (default 42).")]
TestSizeOpt = Annotated[float | None, typer.Option(help="Held-out share, between 0 and 1 (default 0.2).")]
CvFoldsOpt = Annotated[int | None, typer.Option(help="Cross-validation folds on the training part, 2-20 (default 5).")]
ScalerOpt = Annotated[str | None, typer.Option(help="Numeric columns: standard or power (Yeo-Johnson).")]
IntendedUseOpt = Annotated[str | None, typer.Option(help="The card's intended use.")]
LimitationsOpt = Annotated[str | None, typer.Option(help="The card's limitations.")]
AuthorOpt = Annotated[str | None, typer.Option(help="The card's author (default $TOOLKIT_AUTHOR, else login).")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        metavar="KEY=VALUE",
        help="A hyperparameter (repeatable), on top of the config's [params]; VALUE as in TOML.",
        show_default=False,
    ),
]
AllowModuleOpt = Annotated[
    list[str] | None,
    typer.Option("--allow-module", help="A package besides scikit-learn that --model may come from (repeatable)."),
]
ScriptArgOpt = Annotated[
    list[str] | None,
    typer.Option("--script-arg", help="An argument for --script (repeatable, in order)."),
]
