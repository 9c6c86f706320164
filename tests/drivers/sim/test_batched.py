"""The batched twin: `BatchedRonchigramEngine` equals `FastRonchigramEngine` frame by frame,
and `BatchedTwin` equals N sequential twins (same seeds, same RNG stream, same frames)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from emauto import optics
from emauto.drivers.sim import SimulatedMicroscope
from emauto.drivers.sim.batched import MAX_FRAMES, BatchedRonchigramEngine, resolve_device
from emauto.drivers.sim.batched_twin import BatchedTwin
from emauto.drivers.sim.config import EffectsConfig, RonchigramCameraConfig, SimConfig
from emauto.drivers.sim.fast import PaddedTransmission
from emauto.drivers.sim.probe import ProbeOptics
from emauto.errors import BeamBlankedError, ConfigError, InvalidRequestError
from emauto.microscope import Frame, RonchigramRequest

#: Largest error of a batched frame against the fast engine's, relative to the frame's peak
#: (measured: at most 5.4e-7 over 40 random probes with one slab, 2e-6 with three: float32
#: round-off of the FFTs).
PEAK_TOLERANCE = 1e-5
#: ... and of the whole frame in the L2 norm (measured: at most 8e-7).
L2_TOLERANCE = 1e-5
SMALL_CAMERA = {"shape": (32, 32)}  # a 96-pixel grid: fast tests


def small_config(tiny_carbon: Path, cache: Path, **overrides: Any) -> SimConfig:
    return SimConfig.model_validate(
        {
            "specimen": str(tiny_carbon),
            "cache_dir": cache,
            "ronchigram": SMALL_CAMERA,
            **overrides,
        }
    )


def random_probes(rng: np.random.Generator, n: int) -> list[ProbeOptics]:
    """Probes with every aberration up to third order, two convergence angles, some tilted."""
    probes = []
    scales = {"C10": 60e-9, "C12": 15e-9, "C21": 300e-9, "C23": 300e-9, "C30": 2e-6}
    for i in range(n):
        values = {}
        for name in optics.ABERRATION_NAMES:
            scale = next((v for k, v in scales.items() if name.startswith(k)), 0.0)
            values[name] = float(rng.normal(0.0, scale))
        tilt = (0.0, 0.0) if i % 3 else (1.5e-3, -1e-3)
        coefficients = tuple(values[name] for name in optics.ABERRATION_NAMES)
        probes.append(ProbeOptics(coefficients, 0.030 if i % 2 else 0.022, tilt))
    return probes


def assert_frames_close(batched: np.ndarray, reference: np.ndarray) -> None:
    peak = float(np.max(np.abs(batched - reference)) / np.max(reference))
    l2 = float(np.linalg.norm(batched - reference) / np.linalg.norm(reference))
    assert peak < PEAK_TOLERANCE and l2 < L2_TOLERANCE, (peak, l2)


@pytest.fixture(scope="module")
def small_twin(tiny_carbon: Path, specimen_cache: Path) -> SimulatedMicroscope:
    return SimulatedMicroscope(small_config(tiny_carbon, specimen_cache))


# --------------------------------------------------------------------------- the engine


@pytest.mark.parametrize("fft", ["scipy", "torch"])
def test_each_batched_ronchigram_equals_the_fast_engines(
    small_twin: SimulatedMicroscope, fft: str
) -> None:
    rng = np.random.default_rng(0)
    probes = random_probes(rng, 7)
    lx, ly = small_twin.specimen.extent_m
    positions = rng.uniform(-2 * lx, 3 * ly, size=(7, 2))  # anywhere: the specimen is periodic
    engine = BatchedRonchigramEngine(
        small_twin.specimen,
        small_twin.grid,
        small_twin.config.energy_eV,
        fft=fft,  # type: ignore[arg-type]
        max_batch=3,  # several chunks and three aperture groups
    )
    batched = engine.ronchigrams(probes, positions)
    assert batched.shape == (7, 32, 32) and batched.dtype == np.float64
    fast = small_twin._ronchigram_engine
    for i, probe in enumerate(probes):
        assert_frames_close(batched[i], fast.ronchigram(probe, tuple(positions[i])))


@pytest.mark.parametrize("threads", [1, 2])
def test_one_thread_or_chunks_in_parallel_give_the_same_frames(
    small_twin: SimulatedMicroscope, threads: int
) -> None:
    """On the CPU whole chunks run in parallel on torch's thread count: same frames."""
    rng = np.random.default_rng(7)
    probes = random_probes(rng, 9)
    positions = rng.uniform(0, 3e-9, size=(9, 2))
    engine = BatchedRonchigramEngine.from_transmissions(
        small_twin.grid, [small_twin._ronchigram_engine.transmission], max_batch=2
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        batched = engine.ronchigrams(probes, positions)
    finally:
        torch.set_num_threads(before)
    fast = small_twin._ronchigram_engine
    for i, probe in enumerate(probes):
        assert_frames_close(batched[i], fast.ronchigram(probe, tuple(positions[i])))


def test_batched_multislice_equals_the_fast_engines(
    tiny_carbon: Path, specimen_cache: Path
) -> None:
    twin = SimulatedMicroscope(small_config(tiny_carbon, specimen_cache, fast_slabs=3))
    assert twin._ronchigram_engine.n_slabs == 3
    rng = np.random.default_rng(1)
    probes = random_probes(rng, 4)
    positions = rng.uniform(0, 3e-9, size=(4, 2))
    engine = BatchedRonchigramEngine(twin.specimen, twin.grid, twin.config.energy_eV)
    batched = engine.ronchigrams(probes, positions)
    for i, probe in enumerate(probes):
        assert_frames_close(
            batched[i], twin._ronchigram_engine.ronchigram(probe, tuple(positions[i]))
        )


def test_the_probe_tuning_camera(tiny_carbon: Path, specimen_cache: Path) -> None:
    """The default camera (128 x 128, a 384-pixel grid), as probe tuning uses it."""
    twin = SimulatedMicroscope(
        SimConfig(specimen=str(tiny_carbon), cache_dir=specimen_cache, seed=1)
    )
    assert twin.grid.gpts == 384
    rng = np.random.default_rng(2)
    probes = random_probes(rng, 2)
    positions = rng.uniform(0, 3e-9, size=(2, 2))
    engine = BatchedRonchigramEngine.from_transmissions(
        twin.grid, [twin._ronchigram_engine.transmission]
    )
    batched = engine.ronchigrams(probes, positions)
    for i, probe in enumerate(probes):
        assert_frames_close(
            batched[i], twin._ronchigram_engine.ronchigram(probe, tuple(positions[i]))
        )


def test_frames_pick_their_specimen(small_twin: SimulatedMicroscope) -> None:
    """Two specimens in one batch: the film and vacuum (the bright-field disc, sum 1)."""
    grid = small_twin.grid
    film = small_twin._ronchigram_engine.transmission
    vacuum = PaddedTransmission.build(
        np.ones((1, *film.specimen_gpts), np.complex64),
        film.sampling_m,
        film.slab_thickness_m,
        grid.gpts,
    )
    engine = BatchedRonchigramEngine.from_transmissions(grid, [film, vacuum])
    probes = random_probes(np.random.default_rng(3), 4)
    positions = np.full((4, 2), 1e-9)
    frames = engine.ronchigrams(probes, positions, specimen_index=[0, 1, 1, 0])
    fast = small_twin._ronchigram_engine
    assert_frames_close(frames[0], fast.ronchigram(probes[0], (1e-9, 1e-9)))
    assert_frames_close(frames[3], fast.ronchigram(probes[3], (1e-9, 1e-9)))
    assert frames[1].sum() == pytest.approx(1.0, abs=1e-4)
    assert frames[2].sum() == pytest.approx(1.0, abs=1e-4)
    assert not np.allclose(frames[0], frames[1] / frames[1].sum() * frames[0].sum(), rtol=0.1)


def test_an_empty_batch(small_twin: SimulatedMicroscope) -> None:
    engine = BatchedRonchigramEngine.from_transmissions(
        small_twin.grid, [small_twin._ronchigram_engine.transmission]
    )
    assert engine.ronchigrams([], np.zeros((0, 2))).shape == (0, 32, 32)


def test_bad_batches_are_typed_errors(small_twin: SimulatedMicroscope) -> None:
    engine = BatchedRonchigramEngine.from_transmissions(
        small_twin.grid, [small_twin._ronchigram_engine.transmission]
    )
    probes = random_probes(np.random.default_rng(4), 3)
    with pytest.raises(InvalidRequestError, match=r"shape \(3, 2\)"):
        engine.ronchigrams(probes, np.zeros((2, 2)))
    with pytest.raises(InvalidRequestError, match=r"shape \(3, 2\)"):
        engine.ronchigrams(probes, np.zeros((3, 3)))
    with pytest.raises(InvalidRequestError, match="finite"):
        engine.ronchigrams(probes, np.array([[0.0, np.nan]] * 3))
    with pytest.raises(InvalidRequestError, match="one per probe"):
        engine.ronchigrams(probes, np.zeros((3, 2)), specimen_index=[0, 0])
    with pytest.raises(InvalidRequestError, match="out of range"):
        engine.ronchigrams(probes, np.zeros((3, 2)), specimen_index=[0, 1, 0])
    with pytest.raises(InvalidRequestError, match="sequence of ProbeOptics"):
        engine.ronchigrams(probes[0], np.zeros((1, 2)))  # type: ignore[arg-type]
    short = dataclasses.replace(probes[0], coefficients_m=(1e-9,))
    with pytest.raises(InvalidRequestError, match="coefficients"):
        engine.ronchigrams([short], np.zeros((1, 2)))
    with pytest.raises(InvalidRequestError, match="at most"):  # before any allocation
        engine.ronchigrams([probes[0]] * (MAX_FRAMES + 1), np.zeros((1, 2)))
    with pytest.raises(ConfigError, match="max_batch"):
        BatchedRonchigramEngine.from_transmissions(small_twin.grid, [], max_batch=0)
    with pytest.raises(ConfigError, match="fft"):
        BatchedRonchigramEngine.from_transmissions(small_twin.grid, [], fft="fftw")  # type: ignore[arg-type]


def test_an_odd_grid_or_another_grids_specimen_is_refused(small_twin: SimulatedMicroscope) -> None:
    odd = dataclasses.replace(small_twin.grid, gpts=97)
    with pytest.raises(ConfigError, match="even"):
        BatchedRonchigramEngine.from_transmissions(odd, [])
    with pytest.raises(ConfigError, match="even"):
        BatchedRonchigramEngine(small_twin.specimen, odd, small_twin.config.energy_eV)
    larger = dataclasses.replace(small_twin.grid, gpts=small_twin.grid.gpts + 2)
    with pytest.raises(ConfigError, match="padded for"):
        BatchedRonchigramEngine.from_transmissions(
            larger, [small_twin._ronchigram_engine.transmission]
        )


def test_devices() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch has no CUDA here")
def test_cuda_equals_the_cpu(small_twin: SimulatedMicroscope) -> None:
    transmission = small_twin._ronchigram_engine.transmission
    probes = random_probes(np.random.default_rng(5), 5)
    positions = np.random.default_rng(6).uniform(0, 3e-9, size=(5, 2))
    cpu = BatchedRonchigramEngine.from_transmissions(small_twin.grid, [transmission])
    gpu = BatchedRonchigramEngine.from_transmissions(small_twin.grid, [transmission], device="cuda")
    for a, b in zip(
        gpu.ronchigrams(probes, positions), cpu.ronchigrams(probes, positions), strict=True
    ):
        assert_frames_close(a, b)


# --------------------------------------------------------------------------- the twin

SEEDS = (11, 12, 13)


def commands(scope: SimulatedMicroscope, i: int, step: int) -> None:
    scope.set({"C10": -20e-9 + 7e-9 * i - 3e-9 * step, "C12a": 4e-9 * i, "C21b": 50e-9 * step})


def requests(step: int) -> list[RonchigramRequest]:
    return [
        RonchigramRequest(
            exposure_s=0.004 * (i + 1) + 0.001 * step,
            probe_position_m=(0.5e-9 * i, -0.3e-9 * step),
            wait_s=0.01 * step,
        )
        for i in range(len(SEEDS))
    ]


def sequential_twins(config: SimConfig, specimen: Any) -> list[SimulatedMicroscope]:
    return [
        SimulatedMicroscope(config.model_copy(update={"seed": s}), specimen=specimen) for s in SEEDS
    ]


def assert_same_frame(batched: Frame, sequential: Frame, *, noisy: bool) -> None:
    assert batched.state == sequential.state and batched.request == sequential.request
    assert (batched.dose_e, batched.dose_e_per_m2, batched.duration_s) == (
        sequential.dose_e,
        sequential.dose_e_per_m2,
        sequential.duration_s,
    )
    assert batched.calibrations == sequential.calibrations
    assert batched.data.dtype == sequential.data.dtype and batched.data.shape == (32, 32)
    if noisy:
        # the same noise draws; a Poisson draw on a float32-rounded expectation may land
        # one count apart, rarely (measured: 1 pixel in 16384 at most)
        differ = batched.data != sequential.data
        assert differ.mean() <= 2e-3, differ.mean()
        assert np.max(np.abs(batched.data - sequential.data)) <= 3.0
    else:
        assert_frames_close(batched.data, sequential.data)


@pytest.mark.parametrize("noisy", [False, True])
def test_batched_twin_frames_equal_the_sequential_twins(
    tiny_carbon: Path, specimen_cache: Path, noisy: bool
) -> None:
    """All effects on (noisy) or shot and read noise off (lens lag, hysteresis, drift and
    scan jitter on): the same seeds and commands give the same frames and RNG streams."""
    effects = EffectsConfig() if noisy else EffectsConfig(poisson=False, detector_noise=False)
    config = small_config(tiny_carbon, specimen_cache, effects=effects)
    batch = BatchedTwin.from_config(config, len(SEEDS), seeds=SEEDS)
    sequential = sequential_twins(config, batch[0].specimen)
    for step in range(3):
        for i, (a, b) in enumerate(zip(batch.microscopes, sequential, strict=True)):
            commands(a, i, step)
            commands(b, i, step)
        frames = batch.acquire_ronchigrams(requests(step))
        for i, (frame, scope) in enumerate(zip(frames, sequential, strict=True)):
            assert frame is not None
            assert_same_frame(frame, scope.acquire(requests(step)[i]), noisy=noisy)
    for a, b in zip(batch.microscopes, sequential, strict=True):
        assert a._rng.bit_generator.state == b._rng.bit_generator.state
        assert a.read() == b.read()
        assert a.true_aberrations() == b.true_aberrations()


def test_a_subset_of_twins_and_several_frames_each(tiny_carbon: Path, specimen_cache: Path) -> None:
    """What a VecEnv's step_wait needs: some envs take no frame, some one, some several."""
    config = small_config(tiny_carbon, specimen_cache)
    batch = BatchedTwin.from_config(config, len(SEEDS), seeds=SEEDS)
    sequential = sequential_twins(config, batch[0].specimen)
    asked = requests(1)
    plan: dict[int, RonchigramRequest | list[RonchigramRequest]] = {
        0: [asked[0], asked[0], asked[0]],
        2: asked[2],
    }
    frames = batch.acquire_many(plan)
    assert sorted(frames) == [0, 2] and len(frames[0]) == 3 and len(frames[2]) == 1
    for frame in frames[0]:
        assert_same_frame(frame, sequential[0].acquire(asked[0]), noisy=True)
    assert_same_frame(frames[2][0], sequential[2].acquire(asked[2]), noisy=True)
    assert batch[1].read() == sequential[1].read()  # twin 1 took nothing
    assert batch[1].read().time_s == 0.0
    partial = batch.acquire_ronchigrams([None, asked[1], None])
    assert partial[0] is None and partial[2] is None and partial[1] is not None
    assert_same_frame(partial[1], sequential[1].acquire(asked[1]), noisy=True)
    assert batch.acquire_many({}) == {}


def test_twins_share_one_specimen_copy(tiny_carbon: Path, specimen_cache: Path) -> None:
    batch = BatchedTwin.from_config(small_config(tiny_carbon, specimen_cache), 3)
    first = batch[0]._ronchigram_engine.transmission
    assert all(scope._ronchigram_engine.transmission is first for scope in batch.microscopes)
    assert [scope.config.seed for scope in batch.microscopes] == [0, 1, 2]


def test_each_twin_keeps_its_own_specimen(tiny_carbon: Path, specimen_cache: Path) -> None:
    """Twins on different specimens of one grid (here: the film and vacuum) in one batch:
    each frame is taken on its own twin's current transmission."""
    config = small_config(tiny_carbon, specimen_cache, effects=EffectsConfig.none())
    twins = [SimulatedMicroscope(config.model_copy(update={"seed": s})) for s in SEEDS[:2]]
    vacuum = np.ones((1, *twins[1].specimen.gpts), np.complex64)
    twins[1]._ronchigram_engine.load_transmission(vacuum)
    batch = BatchedTwin(twins)
    alone = [SimulatedMicroscope(config.model_copy(update={"seed": s})) for s in SEEDS[:2]]
    alone[1]._ronchigram_engine.load_transmission(vacuum)
    request = RonchigramRequest(exposure_s=0.01, probe_position_m=(1e-9, 0.0))
    frames = batch.acquire_ronchigrams([request, request])
    for frame, scope in zip(frames, alone, strict=True):
        assert frame is not None
        assert_same_frame(frame, scope.acquire(request), noisy=False)
    assert frames[0] is not None and frames[1] is not None
    assert not np.allclose(frames[0].data, frames[1].data, rtol=0.05)


def test_a_bad_request_changes_no_twin(tiny_carbon: Path, specimen_cache: Path) -> None:
    batch = BatchedTwin.from_config(small_config(tiny_carbon, specimen_cache), 3, seeds=SEEDS)
    before = [(s.read(), s._rng.bit_generator.state) for s in batch.microscopes]
    good = RonchigramRequest(exposure_s=0.01)
    too_long = RonchigramRequest(exposure_s=60.0)
    with pytest.raises(InvalidRequestError, match="twin 2: exposure"):
        batch.acquire_ronchigrams([good, good, too_long])
    with pytest.raises(InvalidRequestError, match="twin 0: exposure"):
        batch.acquire_many({1: good, 0: [good, too_long]})
    batch[1].set({"beam_blank": 1.0})
    with pytest.raises(BeamBlankedError, match="twin 1"):
        batch.acquire_ronchigrams([good, good, good])
    batch[1].set({"beam_blank": 0.0})
    before[1] = (batch[1].read(), before[1][1])  # the two commands moved its clock only
    assert [(s.read(), s._rng.bit_generator.state) for s in batch.microscopes] == before
    with pytest.raises(InvalidRequestError, match="one per twin"):
        batch.acquire_ronchigrams([good, good])
    with pytest.raises(InvalidRequestError, match="out of range"):
        batch.acquire_many({3: good})
    with pytest.raises(InvalidRequestError, match="twin index"):
        batch.acquire_many({True: good})
    with pytest.raises(InvalidRequestError, match="RonchigramRequest"):
        batch.acquire_many({0: 5})  # type: ignore[dict-item]


def test_a_batched_twin_is_built_from_compatible_twins(
    tiny_carbon: Path, specimen_cache: Path, small_twin: SimulatedMicroscope
) -> None:
    with pytest.raises(ConfigError, match="twice"):
        BatchedTwin([small_twin, small_twin])
    with pytest.raises(ConfigError, match="1 to"):
        BatchedTwin([])
    with pytest.raises(ConfigError, match="n must be"):
        BatchedTwin.from_config(small_config(tiny_carbon, specimen_cache), 0)
    with pytest.raises(ConfigError, match="seeds"):
        BatchedTwin.from_config(small_config(tiny_carbon, specimen_cache), 2, seeds=[1])
    with pytest.raises(ConfigError, match="fidelity"):
        BatchedTwin.from_config(small_config(tiny_carbon, specimen_cache, fidelity="multislice"), 2)
    other_camera = SimulatedMicroscope(
        SimConfig(
            specimen=str(tiny_carbon),
            cache_dir=specimen_cache,
            ronchigram=RonchigramCameraConfig(shape=(16, 16)),
        )
    )
    with pytest.raises(ConfigError, match="grid"):
        BatchedTwin([small_twin, other_camera])
