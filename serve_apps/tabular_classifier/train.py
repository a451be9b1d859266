"""Train the breast-cancer classifier and write its artifact.

Runs at image build (`python -m serve_apps.tabular_classifier.train`) and on the first
`make run` (`--if-missing`). The dataset ships with scikit-learn: no download.
"""

import json
import sys
from pathlib import Path
from typing import Any

import joblib
import sklearn
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from serve_apps.common.artifacts import builder_args, model_dir

ARTIFACT_NAME = "breast_cancer_classifier.joblib"
SEED = 0


def artifact_path(directory: Path | None = None) -> Path:
    return (directory or model_dir()) / ARTIFACT_NAME


def train() -> dict[str, Any]:
    """Fit a scaler + logistic regression; returns the artifact (model and metadata)."""
    data = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=0.2, stratify=data.target, random_state=SEED
    )
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=2000))])
    pipeline.fit(x_train, y_train)
    proba = pipeline.predict_proba(x_test)
    return {
        "pipeline": pipeline,
        "feature_names": [str(n) for n in data.feature_names],
        "class_names": [str(n) for n in data.target_names],  # index = model class
        "sklearn_version": sklearn.__version__,
        "metrics": {
            "test_accuracy": float(accuracy_score(y_test, pipeline.predict(x_test))),
            "test_roc_auc": float(roc_auc_score(y_test, proba[:, 1])),
            "test_rows": len(y_test),
        },
    }


def write_artifact(path: Path) -> dict[str, Any]:
    artifact = train()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    joblib.dump(artifact, tmp)
    tmp.replace(path)  # atomic: a replica never loads half a file
    meta = {k: v for k, v in artifact.items() if k != "pipeline"}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    args = builder_args(__doc__, argv)
    path = artifact_path(args.model_dir)
    if args.if_missing and path.is_file():
        print(f"classifier artifact present: {path}")
        return 0
    meta = write_artifact(path)
    print(
        f"wrote {path} (test accuracy {meta['metrics']['test_accuracy']:.3f}, "
        f"ROC AUC {meta['metrics']['test_roc_auc']:.3f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
