"""Train a regressor with our own feature step and save it with the toolkit.

In the pinned image, from this folder:   toolkit image run -- python train.py [VERSION]
It saves into $TOOLKIT_OUT (``/out`` in the image; ``./out`` when run by hand).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from features import BodyRatios
from sklearn.datasets import load_diabetes
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

import toolkit
from toolkit.training.train import score


def main(argv: list[str]) -> int:
    version = argv[1] if len(argv) > 1 else "1.0.0"
    out = Path(os.environ.get("TOOLKIT_OUT", "out"))
    # Ships with scikit-learn: no download, so it runs with the network off.
    X, y = load_diabetes(return_X_y=True, as_frame=True, scaled=False)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    model = HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05, early_stopping=False, random_state=0)
    pipeline = Pipeline([("ratios", BodyRatios()), ("model", model)]).fit(X_train, y_train)
    card = toolkit.save(
        pipeline,
        out / f"diabetes-custom-{version}.joblib",
        name="diabetes-custom",
        version=version,
        held_out=(X_test, y_test),  # the held-out rows and target: compare and card --plots score on them
        metrics={"test": score(pipeline, X_test, y_test)},
        params=model.get_params(),
        preprocessing=("BodyRatios (features.py): bmi/bp and s1/s2 ratios",),
        intended_use="An example of a user's own training code in the pinned image.",
    )
    print(f"saved {card.name} {card.version}: test rmse {card.metrics['test']['rmse']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
