"""Few-shot head: lattice features, the metric head (train, save, load), online operator
labels and their record in the daemon's session."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from emauto.agent.daemon import Daemon
from emauto.agent.plans import DaemonConfig, SurveyTask
from emauto.drivers.sim.survey import CLASSES, SurveyConfig, SurveyMicroscope
from emauto.errors import AnalysisError, LabelError, ModelFileError
from emauto.microscope import ImageRequest, RasterScan
from emauto.models.classifier import (
    FewShotClassifier,
    FewShotHeadMetadata,
    PatchClassifier,
    load_classifier,
)
from emauto.models.classifier_training import (
    FewShotHeadConfig,
    PatchTrainingConfig,
    train_fewshot_head,
    train_to_file,
)
from emauto.models.labels import LabelSession, OnlineLabels
from emauto.models.patches import (
    LATTICE_FEATURE_NAMES,
    PATCH_PIXEL_M,
    PATCH_PX,
    lattice_features,
    make_patch_dataset,
)
from emauto.sessions import Session


@pytest.fixture(scope="module")
def backbone() -> PatchClassifier:
    return load_classifier()


@pytest.fixture(scope="module")
def held_out() -> tuple[np.ndarray, np.ndarray]:
    """Patches of fields no training, calibration or benchmark used (seeds 7000+)."""
    x, y, _ = make_patch_dataset((7002, 7003), 30, sample_seed=4)
    return x, y


def _fringes(angle_rad: float, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """{111}-spacing fringes at ``angle_rad`` (features-like: about 1 plus 0.3 cos)."""
    g = PATCH_PIXEL_M / 0.2355e-9  # cycles per pixel
    phase = xx * math.cos(angle_rad) + yy * math.sin(angle_rad)
    return 1.0 + 0.3 * np.cos(2 * math.pi * g * phase)


def test_lattice_features_tell_a_twin_boundary_from_one_lattice() -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:PATCH_PX, 0:PATCH_PX].astype(float)
    single = _fringes(0.3, xx, yy)
    twin = np.where(yy > PATCH_PX / 2, single, _fringes(1.5, xx, yy))  # boundary along x
    noise = rng.normal(0, 0.05, (2, PATCH_PX, PATCH_PX))
    f = lattice_features(np.stack([single, twin]) + noise)
    assert f.shape == (2, len(LATTICE_FEATURE_NAMES)) and f.dtype == np.float32
    col = {name: i for i, name in enumerate(LATTICE_FEATURE_NAMES)}
    assert f[1, col["angular_entropy_12"]] > f[0, col["angular_entropy_12"]] + 0.3
    assert f[1, col["half_similarity_min"]] < 0.5 < f[0, col["half_similarity_min"]]
    assert f[1, col["window_similarity_min"]] < f[0, col["window_similarity_min"]]
    # one patch (2-D) gives one row, identical to its row in a batch
    assert np.allclose(lattice_features(single + noise[0])[0], f[0], atol=1e-5)


def test_lattice_features_reject_bad_patches() -> None:
    with pytest.raises(AnalysisError, match="expected patches"):
        lattice_features(np.zeros((2, 16, 16)))
    with pytest.raises(AnalysisError, match="pixel_m"):
        lattice_features(np.zeros((1, PATCH_PX, PATCH_PX)), pixel_m=0.0)


def _episode_accuracy(
    classifier: PatchClassifier, x: np.ndarray, y: np.ndarray, episodes: int = 5
) -> float:
    names = np.array(CLASSES)
    rng = np.random.default_rng(1)
    correct = []
    for _ in range(episodes):
        support = np.concatenate(
            [rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(len(CLASSES))]
        )
        queries = np.setdiff1d(np.arange(len(y)), support)
        fewshot = FewShotClassifier(classifier)
        fewshot.add_labels(x[support], names[y[support]].tolist())
        predicted, _ = fewshot.predict(x[queries])
        correct.append(np.mean(np.array(predicted) == names[y[queries]]))
    return float(np.mean(correct))


def test_shipped_head_beats_the_plain_embedding_on_held_out_fields(
    backbone: PatchClassifier, held_out: tuple[np.ndarray, np.ndarray]
) -> None:
    assert backbone.fewshot_head is not None
    assert backbone.metadata.fewshot_head is not None
    x, y = held_out
    with_head = _episode_accuracy(backbone, x, y)
    plain = _episode_accuracy(PatchClassifier(backbone.net, backbone.metadata), x, y)
    assert with_head >= 0.85
    assert with_head > plain + 0.03


def test_head_training_is_reproducible_and_round_trips(
    backbone: PatchClassifier, tmp_path: Path
) -> None:
    x, y, _ = make_patch_dataset((7010,), 20, sample_seed=2)
    config = FewShotHeadConfig(hidden=16, dim=8, steps=30, shots=3, queries=5, seed=3)
    heads = [train_fewshot_head(backbone, x, y, config) for _ in range(2)]
    for a, b in zip(heads[0].state_dict().values(), heads[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)
    spec = FewShotHeadMetadata(hidden=16, dim=8)
    trained = PatchClassifier(
        backbone.net, backbone.metadata.model_copy(update={"fewshot_head": spec}), heads[0]
    )
    path = trained.save(tmp_path / "c.pt")
    loaded = load_classifier(path)
    assert np.allclose(loaded.fewshot_embed(x[:4]), trained.fewshot_embed(x[:4]), atol=1e-6)
    assert loaded.fewshot_embed(x[:4]).shape == (4, 8)
    # a file whose head does not match its metadata is refused
    blob = torch.load(path, weights_only=True)
    blob["fewshot_state_dict"] = {}
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="few-shot head"):
        load_classifier(tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="come together"):
        PatchClassifier(backbone.net, trained.metadata).save(tmp_path / "no-head.pt")


def _patch_counts(seed: int = 7004) -> tuple[np.ndarray, float]:
    """A raw-count 32x32 patch on the largest particle of a survey field, and its dose."""
    scope = SurveyMicroscope(SurveyConfig(seed=seed))
    centre = scope.field.centres_m[int(np.argmax(scope.field.radii_m))]
    scope.set({"scan_fov": PATCH_PX * PATCH_PIXEL_M, "stage_x": float(centre[0]),
               "stage_y": float(centre[1])})  # fmt: skip
    frame = scope.acquire(ImageRequest(scan=RasterScan(shape=(PATCH_PX, PATCH_PX)), dwell_s=4e-6))
    return frame.data, frame.dose_e / frame.data.size


def test_online_labels_update_the_head_and_the_store(
    backbone: PatchClassifier, tmp_path: Path
) -> None:
    counts, dose = _patch_counts()
    store = tmp_path / "labels.npz"
    labels = OnlineLabels(store, backbone)
    records: list[dict[str, object]] = []
    entry = labels.add(counts, dose, "particle", x_m=1e-9, y_m=2e-9, record=records.append)
    assert records == [entry] and entry["counts"] == {"particle": 1}
    labels.add(counts * 0.2, dose, "support")
    before = labels.fewshot.prototypes().copy()
    labels.add(counts, dose, "support")  # the support prototype moves at once
    after = labels.fewshot.prototypes()
    assert np.allclose(after[0], before[0]) and not np.allclose(after[1], before[1])
    for bad, error in (
        ({"label": " "}, LabelError),
        ({"electrons_per_pixel": -1.0}, LabelError),
        ({"counts": np.zeros((8, 8))}, AnalysisError),
        ({"counts": np.full((PATCH_PX, PATCH_PX), np.nan)}, AnalysisError),
    ):
        args = {"counts": counts, "electrons_per_pixel": dose, "label": "particle", **bad}
        with pytest.raises(error):
            labels.add(args["counts"], args["electrons_per_pixel"], args["label"])
    assert labels.fewshot.counts == {"particle": 1, "support": 2}  # bad input changed nothing
    assert LabelSession(store).counts() == {"particle": 1, "support": 2}
    restarted = OnlineLabels(store, backbone)
    assert restarted.fewshot.counts == {"particle": 1, "support": 2}
    names, confidence = restarted.predict(counts[None], dose)
    assert names == ["particle"] and 0 < confidence[0] <= 1
    (tmp_path / "junk.npz").write_bytes(b"junk")
    broken = OnlineLabels(tmp_path / "junk.npz", backbone)  # a bad file fails the labels only
    with pytest.raises(ModelFileError, match="not a label session"):
        broken.add(counts, dose, "particle")


def test_daemon_records_operator_labels_in_the_session(tmp_path: Path, tiny_sim_uri: str) -> None:
    config = DaemonConfig(
        microscope=tiny_sim_uri,
        plan=(SurveyTask(shape=(32, 32), fov_m=2e-9),),
        heartbeat_s=None,
        sessions=tmp_path / "sessions",
    )
    daemon = Daemon(config, session=tmp_path / "s", progress=False)
    counts, dose = _patch_counts()
    with pytest.raises(LabelError, match="class name"):
        daemon.handle("label", {"counts": counts.tolist(), "electrons_per_pixel": dose})
    with pytest.raises(LabelError, match="x_m"):
        daemon.handle("label", {"counts": counts.tolist(), "electrons_per_pixel": dose,
                                "label": "particle", "x_m": "left"})  # fmt: skip
    reply = daemon.handle(
        "label",
        {"counts": counts.tolist(), "electrons_per_pixel": dose, "label": "particle",
         "x_m": 3e-9, "y_m": -1e-9},
    )  # fmt: skip
    assert reply["label"]["counts"] == {"particle": 1}
    result = daemon.run()
    assert result.exit_status == "success"
    events = Session(tmp_path / "s").operator
    assert [(e["kind"], e["choice"]) for e in events] == [("label", "particle")]
    where = json.loads(events[0]["text"])
    assert where["x_m"] == pytest.approx(3e-9) and where["electrons_per_pixel"] == pytest.approx(
        dose
    )
    assert LabelSession(tmp_path / "sessions" / "labels.npz").counts() == {"particle": 1}


def test_tiny_training_writes_a_loadable_file_with_its_head(tmp_path: Path) -> None:
    config = PatchTrainingConfig(
        train_seeds=(7020,),
        calibration_seeds=(7021,),
        per_class=10,
        epochs=1,
        batch_size=24,
        width=4,
        embedding_dim=8,
        head=FewShotHeadConfig(hidden=8, dim=4, steps=5, shots=2, queries=3),
    )
    trained = train_to_file(config, tmp_path / "full.pt", progress=False)
    loaded = load_classifier(tmp_path / "full.pt")
    assert loaded.metadata.fewshot_head is not None and loaded.fewshot_head is not None
    assert loaded.metadata.fewshot_head.training["steps"] == 5
    assert "fewshot_5shot_accuracy" in loaded.metadata.validation
    assert loaded.metadata.fewshot_temperature == trained.metadata.fewshot_temperature
    # --head-only: the CNN is kept bit for bit, only the head is retrained
    again = train_to_file(
        config, tmp_path / "head.pt", progress=False, head_only_from=tmp_path / "full.pt"
    )
    for a, b in zip(again.net.state_dict().values(), loaded.net.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    points = load_classifier(tmp_path / "head.pt").fewshot_embed(np.zeros((1, 32, 32)))
    assert points.shape == (1, 4)
