"""Experiment: Ronchigrams per second, sequential twin against the batched twin (issue 18.3).

The probe-tuning microscope (``sim://``: amorphous carbon, the 128 x 128 camera, a
384 x 384 simulation grid, one slab), on ``--threads`` CPU threads (torch, scipy's FFT
workers, BLAS). Each repeat draws N probes as a probe-tuning episode starts (C1, A1, B2, A2
at `ProbeTuningConfig.start`'s widths, 30 mrad) at random specimen points, and times:

- ``engine``: `FastRonchigramEngine.ronchigram` once per frame (sequential) against one
  `BatchedRonchigramEngine.ronchigrams` call for N frames (batched), N = 1, 8, 32, 128;
- ``sequential_torch_1_thread``: the sequential runs again with torch on one thread (its
  pool of spinning threads is slow on shared cores);
- ``twin``: the full acquisition with every effect on (lens lag, hysteresis, drift, scan
  jitter, shot noise at the dose, camera gain and read noise): ``acquire`` on N twins one
  after another against one `BatchedTwin.acquire_many` call for the same N twins;
- ``engine_oversample_1``: the same camera read without oversampling (a 192-pixel grid,
  4x fewer pixels): sequential (torch on 1 thread) against batched, N = 32;
- ``fft_384_per_s``: one orthonormal complex64 384 x 384 FFT (scipy, ``--threads`` workers) per
  second over a batch of 32: the batched engine needs about 1.5 of them a frame.

Prints JSON: medians over ``--repeats`` (frames/s), the ratios batched/sequential within this
run, and the largest difference between the batched and the sequential engine's frames
(relative to the frame's peak). Speeds depend on the machine and its load; the figures in
benchmarks/README.md come from one run on a shared 2-core machine, so quote ratios.

    nice -n 10 python benchmarks/experiments/batched_twin.py --repeats 5 \
        > benchmarks/batched-twin-latest.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from functools import partial

import numpy as np
import scipy.fft
import torch
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from emauto import optics
from emauto.drivers.sim.batched import BatchedRonchigramEngine
from emauto.drivers.sim.batched_twin import BatchedTwin
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.probe import ProbeOptics
from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.microscope import RonchigramRequest
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.env import draw_start

GOAL_PER_S = 1000.0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _probes(rng: np.random.Generator, n: int) -> list[ProbeOptics]:
    """Probes as probe-tuning episodes start: random C1, A1, B2, A2 offsets, 30 mrad."""
    config = ProbeTuningConfig()
    probes = []
    for _ in range(n):
        offsets = draw_start(config, rng)
        coefficients = tuple(offsets.get(name, 0.0) for name in optics.ABERRATION_NAMES)
        probes.append(ProbeOptics(coefficients, config.convergence_rad, (0.0, 0.0)))
    return probes


def _median_rate(frames: int, run: Callable[[], object], repeats: int) -> dict[str, object]:
    """Frames per second of ``run`` (which makes ``frames`` frames): median and each repeat."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(frames / (time.perf_counter() - start))
    return {"median": round(float(np.median(rates)), 1), "repeats": [round(r, 1) for r in rates]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1,8,32,128", help="batch sizes N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(args.threads)
    with threadpool_limits(limits=args.threads):
        result = run(sizes, args.repeats, args.threads, args.seed)
    result["command"] = " ".join(
        ["python", "benchmarks/experiments/batched_twin.py", *sys.argv[1:]]
    )
    print(json.dumps(result, indent=2))


def run(sizes: list[int], repeats: int, threads: int, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    config = SimConfig(seed=seed)  # sim://, the probe-tuning microscope
    largest = max(sizes)
    _progress(f"building {largest} twins (one specimen copy) ...")
    batch = BatchedTwin.from_config(config, largest)
    first = batch[0]
    grid = first.grid
    fast = first._ronchigram_engine
    engine = BatchedRonchigramEngine.from_transmissions(grid, [fast.transmission])
    lx, ly = first.specimen.extent_m

    def points(n: int) -> np.ndarray:
        return rng.uniform(0, 1, size=(n, 2)) * np.array([lx, ly])

    # the batched frames against the fast engine's (a check that the timed code is right)
    probes, where = _probes(rng, 8), points(8)
    batched = engine.ronchigrams(probes, where)
    worst = max(
        float(np.max(np.abs(b - fast.ronchigram(p, (x, y)))) / np.max(b))
        for b, p, (x, y) in zip(batched, probes, where, strict=True)
    )

    _progress("engine: sequential fast engine ...")
    n_seq = 32
    probes, where = _probes(rng, n_seq), points(n_seq)
    fast.ronchigram(probes[0], (0.0, 0.0))  # warm up

    def sequential_engine() -> None:
        for p, (x, y) in zip(probes, where, strict=True):
            fast.ronchigram(p, (float(x), float(y)))

    engine_results: dict[str, object] = {
        "sequential": _median_rate(n_seq, sequential_engine, repeats)
    }
    torch.set_num_threads(1)  # torch's pool of spinning threads slows it on shared cores
    engine_results["sequential_torch_1_thread"] = _median_rate(n_seq, sequential_engine, repeats)
    torch.set_num_threads(threads)
    for n in sizes:
        _progress(f"engine: batched, N = {n} ...")
        probes_n, where_n = _probes(rng, n), points(n)
        engine.ronchigrams(probes_n, where_n)  # warm up
        engine_results[f"batched_{n}"] = _median_rate(
            n, partial(engine.ronchigrams, probes_n, where_n), repeats
        )

    # the full twin: every effect on, a probe-tuning step's request (dose and wait)
    twin_results: dict[str, object] = {}
    reach = ProbeTuningConfig().max_probe_offset_m
    load_before = os.getloadavg()
    tuning = ProbeTuningConfig()
    for scope in batch.microscopes:  # an episode's start: detuned, 30 mrad
        knobs = scope.read().knobs
        setpoints = {k: knobs[k] + v for k, v in draw_start(tuning, rng).items()}
        scope.set({**setpoints, "convergence_angle": tuning.convergence_rad})
    requests = [
        RonchigramRequest(
            exposure_s=float(math.exp(rng.uniform(math.log(2e-3), math.log(2e-2)))),
            probe_position_m=(float(rng.uniform(-reach, reach)), float(rng.uniform(-reach, reach))),
            wait_s=0.1,
        )
        for _ in range(largest)
    ]
    _progress("twin: sequential acquire ...")
    n_twin_seq = min(32, largest)

    def sequential_twin() -> None:
        for scope, request in zip(batch.microscopes[:n_twin_seq], requests, strict=False):
            scope.acquire(request)

    sequential_twin()  # warm up
    twin_results["sequential"] = _median_rate(n_twin_seq, sequential_twin, repeats)
    torch.set_num_threads(1)
    twin_results["sequential_torch_1_thread"] = _median_rate(n_twin_seq, sequential_twin, repeats)
    torch.set_num_threads(threads)
    for n in sizes:
        _progress(f"twin: batched, N = {n} ...")
        plan = {i: requests[i] for i in range(n)}
        batch.acquire_many(plan)  # warm up
        twin_results[f"batched_{n}"] = _median_rate(n, partial(batch.acquire_many, plan), repeats)

    _progress("engine at camera oversample 1 (a 192-pixel grid) ...")
    coarse_config = config.model_copy(
        update={"ronchigram": config.ronchigram.model_copy(update={"oversample": 1})}
    )
    coarse = SimulatedMicroscope(coarse_config, specimen=first.specimen)
    coarse_fast = coarse._ronchigram_engine
    coarse_engine = BatchedRonchigramEngine.from_transmissions(
        coarse.grid, [coarse_fast.transmission]
    )
    n_coarse = 32
    probes_c, where_c = _probes(rng, n_coarse), points(n_coarse)
    coarse_engine.ronchigrams(probes_c, where_c)  # warm up

    def sequential_coarse() -> None:
        for p, (x, y) in zip(probes_c, where_c, strict=True):
            coarse_fast.ronchigram(p, (float(x), float(y)))

    torch.set_num_threads(1)
    coarse_sequential = _median_rate(n_coarse, sequential_coarse, repeats)
    torch.set_num_threads(threads)
    coarse_results = {
        "simulation_grid": coarse.grid.gpts,
        "sequential_torch_1_thread": coarse_sequential,
        f"batched_{n_coarse}": _median_rate(
            n_coarse, partial(coarse_engine.ronchigrams, probes_c, where_c), repeats
        ),
    }

    _progress("FFT ceiling ...")
    block = (rng.standard_normal((32, grid.gpts, grid.gpts)) + 0j).astype(np.complex64)
    fft_rate = _median_rate(
        32,
        lambda: scipy.fft.fft2(block, norm="ortho", workers=threads),
        repeats,
    )

    def ratios(results: dict[str, object], baseline: str) -> dict[str, float]:
        base = results[baseline]["median"]  # type: ignore[index]
        return {
            key: round(value["median"] / base, 2)  # type: ignore[index]
            for key, value in results.items()
            if not key.startswith("sequential")
        }

    best = max(v["median"] for k, v in twin_results.items() if k.startswith("batched"))  # type: ignore[index]
    return {
        "unit": "Ronchigrams per second (median over repeats)",
        "camera": list(first.config.ronchigram.shape),
        "simulation_grid": grid.gpts,
        "slabs": fast.n_slabs,
        "specimen": first.specimen.name,
        "threads": threads,
        "repeats": repeats,
        "seed": seed,
        "engine": engine_results,
        "engine_speedup": ratios(engine_results, "sequential"),
        "engine_speedup_vs_torch_1_thread": ratios(engine_results, "sequential_torch_1_thread"),
        "twin": twin_results,
        "twin_speedup": ratios(twin_results, "sequential"),
        "twin_speedup_vs_torch_1_thread": ratios(twin_results, "sequential_torch_1_thread"),
        "fft_384_per_s": fft_rate,
        "engine_oversample_1": coarse_results,
        "batched_vs_fast_max_peak_relative_error": float(f"{worst:.3g}"),
        "goal_per_s": GOAL_PER_S,
        "goal_met": best >= GOAL_PER_S,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before_twin": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
    }


if __name__ == "__main__":
    main()
