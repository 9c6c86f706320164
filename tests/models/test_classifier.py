"""Patch CNN and few-shot classifier on held-out survey-twin patches; labels and errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emauto.cli import main
from emauto.drivers.sim.survey import CLASSES, SurveyConfig, SurveyMicroscope
from emauto.errors import LabelError, ModelFileError
from emauto.microscope import ImageRequest, RasterScan
from emauto.models.classifier import FewShotClassifier, PatchClassifier, load_classifier
from emauto.models.patches import PATCH_PIXEL_M, PATCH_PX, make_patch_dataset


@pytest.fixture(scope="module")
def backbone() -> PatchClassifier:
    return load_classifier()


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """Patches of fields no training or calibration used (seeds 7000+)."""
    x, y, _ = make_patch_dataset((7000, 7001), 25, sample_seed=9)
    return x, y


def test_cnn_classifies_held_out_twin_patches(
    backbone: PatchClassifier, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = held_out
    p = backbone.predict_proba(x)
    assert np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert float((p.argmax(axis=1) == y).mean()) >= 0.7
    coarse = {"vacuum": 0, "support": 1, "contamination": 2}  # easy classes: near perfect
    for name, index in coarse.items():
        assert float((p[y == index].argmax(axis=1) == index).mean()) >= 0.9, name


def test_fewshot_update_changes_predictions_as_labels_arrive(
    backbone: PatchClassifier, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    x, y = held_out
    names = np.array(CLASSES)
    fewshot = FewShotClassifier(backbone)
    first = [c for c in range(len(CLASSES)) if c != CLASSES.index("vacuum")]
    support = np.concatenate([np.flatnonzero(y == c)[:5] for c in first])
    fewshot.add_labels(x[support], names[y[support]].tolist())
    vacuum = np.flatnonzero(y == CLASSES.index("vacuum"))[5:]
    before, _ = fewshot.predict(x[vacuum])
    assert "vacuum" not in before  # an unknown class cannot be predicted
    new = np.flatnonzero(y == CLASSES.index("vacuum"))[:5]
    fewshot.add_labels(x[new], ["vacuum"] * 5)
    after, confidence = fewshot.predict(x[vacuum])
    assert np.mean(np.array(after) == "vacuum") >= 0.9
    assert fewshot.counts["vacuum"] == 5
    assert np.all((confidence > 0) & (confidence <= 1))
    queries = np.setdiff1d(np.arange(len(y)), np.concatenate([support, new]))
    predicted, _ = fewshot.predict(x[queries])
    assert np.mean(np.array(predicted) == names[y[queries]]) >= 0.6


def test_bad_labels_are_clear_errors(backbone: PatchClassifier) -> None:
    fewshot = FewShotClassifier(backbone)
    patch = np.zeros((1, PATCH_PX, PATCH_PX), dtype=np.float32)
    with pytest.raises(LabelError, match="no labels yet"):
        fewshot.predict(patch)
    with pytest.raises(LabelError, match="empty label set"):
        fewshot.add_labels(patch, [])
    with pytest.raises(LabelError, match="one label per patch"):
        fewshot.add_labels(np.zeros((2, PATCH_PX, PATCH_PX)), ["support"])
    with pytest.raises(LabelError, match="non-empty class names"):
        fewshot.add_labels(patch, [""])
    assert fewshot.classes == ()


def test_bad_weights_file(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such classifier"):
        load_classifier(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelFileError, match="not a readable"):
        load_classifier(tmp_path / "junk.pt")


def test_cli_label_session(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scope = SurveyMicroscope(SurveyConfig(seed=7002))
    field = scope.field
    centre = field.centres_m[int(np.argmax(field.radii_m))]
    scope.set({"scan_fov": 128 * PATCH_PIXEL_M, "stage_x": float(centre[0]),
               "stage_y": float(centre[1])})  # fmt: skip
    frame = scope.acquire(ImageRequest(scan=RasterScan(shape=(128, 128)), dwell_s=4e-6))
    np.save(tmp_path / "frame.npy", frame.data)
    e_per_px = str(frame.dose_e / frame.data.size)
    session = str(tmp_path / "session.npz")
    common = ["--session", session, "--image", str(tmp_path / "frame.npy")]
    assert main(["label", "predict", *common, "--electrons-per-pixel", e_per_px]) == 2
    assert "no labels yet" in capsys.readouterr().err
    for x, label in ((64, "particle"), (70, "particle")):
        args = ["label", "add", *common, "--x", str(x), "--y", "64", "--label", label]
        assert main([*args, "--electrons-per-pixel", e_per_px]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["counts"] == {"particle": 2}
    assert main(["label", "add", *common, "--x", "2", "--y", "2", "--label", "support",
                 "--electrons-per-pixel", e_per_px]) == 2  # fmt: skip
    assert "does not fit" in capsys.readouterr().err
    assert main(["label", "predict", *common, "--electrons-per-pixel", e_per_px, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["patches"]) == 16
    assert {p["label"] for p in out["patches"]} == {"particle"}
