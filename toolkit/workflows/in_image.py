"""``image check`` and ``image predict``: the gate or a prediction in the image the model was trained in.

Each chooses the image (``--image``, else the one the card records, else the project's), checks
the signature on the host when trust is configured (the keys never enter the image), runs the
container job and says what came of it; the CLI parses, calls one of these and prints.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.docker.client import OutputCallback
from toolkit.docker.images import recorded_image
from toolkit.signing import TrustedKeys, trusted_keys_from_env

__all__ = ["ImageCheck", "ImagePrediction", "check_in_image", "image_for", "predict_in_image"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ImageCheck:
    """What the gate said in the image: its exit code, the image's ID, and (``as_json``) its JSON."""

    exit_code: int
    image_id: str | None
    report: bytes  # the gate's stdout with ``as_json`` (one JSON object), else empty


@dataclass(frozen=True, kw_only=True, slots=True)
class ImagePrediction:
    """What ``toolkit predict`` did in the image; ``csv`` is published already when ``out`` was given."""

    exit_code: int  # not 0: the container said why in one line (already passed on); nothing written
    csv: bytes
    image_id: str

    def rows(self) -> int:
        """How many predictions the CSV holds (its lines but the header)."""
        text = self.csv.decode("utf-8", errors="replace")
        return max(sum(1 for _ in csv.reader(io.StringIO(text))) - 1, 0)


def image_for(model: Path, image: str | None) -> str:
    """The image to run ``model`` in: ``image``, else ``$TOOLKIT_IMAGE``, else the one its card records,
    else the project's."""
    from toolkit.docker import resolve_image

    return resolve_image(image, recorded=recorded_image(model))


def check_in_image(
    model: Path,
    tag: str,
    *,
    policy: str,
    as_json: bool,
    verify_predictions: bool,
    trusted_keys: TrustedKeys,
    on_output: OutputCallback,
) -> ImageCheck:
    """Run the check-env gate on ``model`` in ``tag``. Its stderr (and, without ``as_json``, its
    stdout) reaches ``on_output``; with ``as_json`` its one JSON object is kept for the caller,
    which adds the image to it.

    Raises: as ``verify`` (with trust) and ``check_in_container``.
    """
    from toolkit.docker import check_in_container, stdout_into

    captured = bytearray()  # the gate's one JSON object gets the image added before it is printed
    image_ids: list[str] = []

    _verify_on_host(model, trusted_keys)
    code = check_in_container(
        tag,
        model,
        policy=policy,
        as_json=as_json,
        verify_predictions=verify_predictions,
        on_output=stdout_into(captured, on_output) if as_json else on_output,
        on_image=image_ids.append,
    )
    image_id = image_ids[0] if image_ids and image_ids[0] else None
    return ImageCheck(exit_code=code, image_id=image_id, report=bytes(captured))


def predict_in_image(
    model: Path,
    input_file: Path,
    *,
    out: Path | None,
    image: str | None,
    id_column: str | None,
    policy: str,
    trusted_keys: TrustedKeys,
    on_output: OutputCallback,
) -> tuple[str, ImagePrediction]:
    """Predict ``input_file`` with ``model`` in its image; with ``out``, publish the CSV there
    atomically (checked before the container starts, never over an input). Returns the image's
    tag and what came of it.

    Raises: UsageError (a bad ``out``), as ``verify`` (with trust) and ``predict_in_container``.
    """
    from toolkit.artifact import artifact_paths
    from toolkit.docker import predict_in_container
    from toolkit.prediction import check_output, publish_csv

    paths = artifact_paths(model)
    inputs: Sequence[Path] = (input_file, paths.model, paths.card_json, paths.card_md)
    if out is not None:
        check_output(out, sources=inputs)  # before starting a container
    _verify_on_host(model, trusted_keys)
    tag = image_for(model, image)
    result = predict_in_container(tag, model, input_file, id_column=id_column, policy=policy, on_output=on_output)
    prediction = ImagePrediction(exit_code=result.exit_code, csv=result.csv, image_id=result.image_id)
    if result.exit_code == 0 and out is not None:
        publish_csv(result.csv, out, sources=inputs)
    return tag, prediction


def _verify_on_host(model: Path, trusted_keys: TrustedKeys) -> None:
    if trusted_keys_from_env(trusted_keys):  # on the host: the keys never enter the image
        from toolkit.artifact import verify

        verify(model, trusted_keys=trusted_keys)
