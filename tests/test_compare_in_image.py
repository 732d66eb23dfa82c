"""``registry compare`` re-scores in the models' image when this host cannot load them.

The decision is the one promote's gate takes (``toolkit.docker.jobs.model_image``: the card's
image, else toolkit.toml's), made before anything is unpickled; the container is a stubbed seam
here (``compare_in_container``), the real one runs in tests/test_project_e2e.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import toolkit
from toolkit.card import card_from_dict
from toolkit.cli import app
from toolkit.names import artifact_paths

IMAGE_ID = "sha256:" + "b" * 64


@pytest.fixture(scope="module")
def iris() -> tuple[Any, Any, Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    X, y = load_iris(return_X_y=True, as_frame=True)
    return tuple(train_test_split(X, y, test_size=0.3, random_state=0, stratify=y))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def saved(iris: tuple[Any, Any, Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """iris 1.0.0 and 1.1.0 fitted and saved (with their held-out rows) once for the module; each
    test registers copies, so the fits and saves are not repeated for every registry."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_train, X_test, y_train, y_test = iris
    where = tmp_path_factory.mktemp("saved")
    for version, C in (("1.0.0", 0.01), ("1.1.0", 1.0)):
        pipeline = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=500)).fit(X_train, y_train)
        toolkit.save(
            pipeline, where / f"iris-{version}.joblib", name="iris", version=version, held_out=(X_test, y_test)
        )
    return where


def _versions(saved: Path, where: Path, images: tuple[str | None, str | None] | None) -> Path:
    """iris 1.0.0 and 1.1.0 registered in ``where/models``; with ``images``, their cards say they
    need a scikit-learn this host lacks and were trained in those images (None: no image)."""
    root = where / "models"
    (where / "src").mkdir(parents=True)
    for version, image in zip(("1.0.0", "1.1.0"), images or (None, None), strict=True):
        path = where / "src" / f"iris-{version}.joblib"
        for file in saved.glob(f"iris-{version}.*"):  # the model, its card (.json, .md), its reference set
            shutil.copy2(file, where / "src" / file.name)
        if images is not None:
            paths = artifact_paths(path)
            raw = json.loads(paths.card_json.read_text())
            raw["environment"]["packages"]["scikit-learn"] = "0.1.0"
            raw["environment"]["image"] = None if image is None else {"ref": image, "id": IMAGE_ID}
            card = card_from_dict(raw)
            paths.card_json.write_bytes(card.to_json())
            paths.card_md.write_text(card.to_markdown())
        added = CliRunner().invoke(app, ["registry", "add", str(path), "--registry", str(root)])
        assert added.exit_code == 0, added.output
    return root


@pytest.fixture(scope="module")
def here(saved: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _versions(saved, tmp_path_factory.mktemp("here"), None)


class Seam:
    """The container: records each call and answers ``answer`` (what a real image would print)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Path, list[str], Any]] = []
        self.answer: dict[str, Any] = {}

    def __call__(self, image: str, root: Path, args: list[str], **kwargs: Any) -> dict[str, Any]:
        self.calls.append((image, root, list(args), kwargs.get("inputs")))
        return self.answer


@pytest.fixture
def container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Seam:
    monkeypatch.chdir(tmp_path)  # no toolkit.toml above: only the cards name an image
    seam = Seam()
    monkeypatch.setattr("toolkit.docker.jobs.compare_in_container", seam)
    return seam


def _compare(root: Path, *extra: str) -> Any:
    args = ["registry", "compare", "iris", "1.0.0", "1.1.0", "--registry", str(root), "--resamples", "50", *extra]
    return CliRunner().invoke(app, args)


def test_a_host_that_loads_both_compares_on_the_host(here: Path, container: Seam) -> None:
    result = _compare(here)
    assert result.exit_code == 0, result.output
    assert "compared in image" not in result.stderr
    assert container.calls == []  # the seam was never asked


def test_a_host_that_cannot_load_them_compares_in_the_cards_image_and_prints_as_the_host(
    here: Path, saved: Path, container: Seam, tmp_path: Path
) -> None:
    elsewhere = _versions(saved, tmp_path / "project", ("proj:1", "proj:1"))
    host_json, host_text = _compare(here, "--json"), _compare(here)
    container.answer = json.loads(host_json.stdout)  # the image answers what the host would
    in_image = _compare(elsewhere, "--json")
    assert in_image.exit_code == 0, in_image.output
    assert in_image.stdout == host_json.stdout  # --json: the same object, byte for byte
    assert in_image.stderr.strip() == "compared in image proj:1 (this host cannot load the versions)"
    text = _compare(elsewhere)
    assert text.exit_code == 0, text.output
    assert text.stdout == host_text.stdout  # the table: as the host prints it
    (image, root, args, inputs), _ = container.calls  # --json, then the table
    assert (image, root, inputs) == ("proj:1", elsewhere, [])
    assert args == ["iris", "1.0.0", "1.1.0", "--policy", "compatible", "--resamples", "50", "--seed", "0"]


def test_an_answer_that_is_not_a_comparison_is_one_line(saved: Path, container: Seam, tmp_path: Path) -> None:
    elsewhere = _versions(saved, tmp_path / "project", ("proj:1", "proj:1"))
    container.answer = {"name": "iris", "versions": ["1.0.0", "1.1.0"], "data": "rows"}
    result = _compare(elsewhere)
    assert result.exit_code == 5, result.output
    assert (
        result.stderr.strip()
        == "error: compare in proj:1: its answer is not a comparison (data: not source, sha256, rows, how)"
    )


def test_two_images_are_refused_naming_both(saved: Path, container: Seam, tmp_path: Path) -> None:
    elsewhere = _versions(saved, tmp_path / "project", ("proj:1", "proj:2"))
    result = _compare(elsewhere)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert "proj:1" in line and "proj:2" in line and "different images" in line, line
    assert container.calls == []


def test_no_image_known_is_the_hosts_own_error(saved: Path, container: Seam, tmp_path: Path) -> None:
    elsewhere = _versions(saved, tmp_path / "project", (None, None))
    result = _compare(elsewhere)
    assert result.exit_code == 1, result.output  # loading under compatible: the environment mismatch
    assert "scikit-learn" in result.stderr and "compared in image" not in result.stderr
    assert container.calls == []


def test_a_team_registry_is_refused_in_one_line_with_the_remedy() -> None:
    from types import SimpleNamespace

    from toolkit.errors import UsageError
    from toolkit.workflows import compare

    def never(*_: Any) -> dict[str, Any]:
        raise AssertionError("a team registry cannot be mounted: the container must not be asked")

    team: Any = SimpleNamespace(root=None, trusted_keys=None)
    with pytest.raises(UsageError) as caught:
        compare._compare_in("proj:1", never, team, "iris", ("1.0.0", "1.1.0"), None, None, "compatible", 0, 0, None)
    (line,) = str(caught.value).splitlines()
    assert "team registry" in line and "proj:1" in line and "requirements.lock is installed" in line
