"""Experiment: Ronchigrams per second, sequential twin against the batched twin (issue 18.3).

The probe-tuning microscope (``sim://``: amorphous carbon, the 128 x 128 camera, a
384 x 384 simulation grid, one slab), BLAS and scipy limited to ``--threads``. Probes are
drawn as probe-tuning episodes start (C1, A1, B2, A2 at `ProbeTuningConfig.start`'s widths,
30 mrad), at random specimen points. Cases (torch threads in brackets):

- ``engine``: `FastRonchigramEngine.ronchigram` once per frame for 32 frames, ``sequential``
  [threads] and ``sequential_torch_1_thread`` [1] (torch's pool of spinning threads is slow
  on shared cores), against one `BatchedRonchigramEngine.ronchigrams` call of N frames,
  ``batched_N`` [threads], N = 1, 8, 32, 128, and ``batched_32_1_thread`` [1];
- ``twin``: the full acquisition with every effect on (lens lag, hysteresis, drift, scan
  jitter, shot noise at a probe-tuning dose, camera gain and read noise): ``acquire`` on 32
  twins one after another against one `BatchedTwin.acquire_many` call for N twins;
- ``engine_oversample_1``: the same camera read without oversampling (a 192-pixel grid,
  4x fewer pixels), sequential [1] against batched, N = 32 [threads];
- ``fft_384_per_s``: complex64 384 x 384 FFTs per second (scipy, batches of 32): the
  batched engine needs about 1.5 of them a frame.

Every repeat times every case once, one after another (interleaved, so that all cases see
the same load). Prints JSON: per case the median frames/s, each repeat's, and the median
CPU time per frame (all threads of the process, less sensitive to a shared machine's load
than the wall clock); the ratios batched / sequential within this run; the largest
difference between the batched and the fast engine's frames (relative to the peak).

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
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import scipy.fft
import torch
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from emauto import optics
from emauto.drivers.sim.batched import BatchedRonchigramEngine
from emauto.drivers.sim.batched_twin import BatchedTwin
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.fast import FastRonchigramEngine
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


@dataclass
class Case:
    """One timed thing: ``run`` makes ``frames`` Ronchigrams with torch on ``threads``."""

    frames: int
    run: Callable[[], object]
    threads: int
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)

    def time(self) -> None:
        torch.set_num_threads(self.threads)
        cpu, wall = time.process_time(), time.perf_counter()
        self.run()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.rates.append(self.frames / wall)
        self.cpu_ms.append(1e3 * cpu / self.frames)

    def summary(self) -> dict[str, object]:
        return {
            "median": round(float(np.median(self.rates)), 1),
            "repeats": [round(r, 1) for r in self.rates],
            "cpu_ms_per_frame": round(float(np.median(self.cpu_ms)), 2),
            "threads": self.threads,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="1,8,32,128", help="batch sizes N")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
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

    def sequential(
        engine: FastRonchigramEngine, probes: list[ProbeOptics], where: np.ndarray
    ) -> Callable[[], None]:
        def go() -> None:
            for p, (x, y) in zip(probes, where, strict=True):
                engine.ronchigram(p, (float(x), float(y)))

        return go

    n_seq = 32
    seq_probes, seq_where = _probes(rng, n_seq), points(n_seq)
    engine_cases = {
        "sequential": Case(n_seq, sequential(fast, seq_probes, seq_where), threads),
        "sequential_torch_1_thread": Case(n_seq, sequential(fast, seq_probes, seq_where), 1),
    }
    for n in sizes:
        args = (_probes(rng, n), points(n))
        engine_cases[f"batched_{n}"] = Case(n, partial(engine.ronchigrams, *args), threads)
    engine_cases["batched_32_1_thread"] = Case(
        32, partial(engine.ronchigrams, _probes(rng, 32), points(32)), 1
    )

    # the full twin: every effect on, a probe-tuning step's request (dose and wait)
    tuning = ProbeTuningConfig()
    for scope in batch.microscopes:  # an episode's start: detuned, 30 mrad
        knobs = scope.read().knobs
        setpoints = {k: knobs[k] + v for k, v in draw_start(tuning, rng).items()}
        scope.set({**setpoints, "convergence_angle": tuning.convergence_rad})
    reach = tuning.max_probe_offset_m
    requests = [
        RonchigramRequest(
            exposure_s=float(math.exp(rng.uniform(math.log(2e-3), math.log(2e-2)))),
            probe_position_m=(float(rng.uniform(-reach, reach)), float(rng.uniform(-reach, reach))),
            wait_s=tuning.lens_wait_s,
        )
        for _ in range(largest)
    ]
    n_twin_seq = min(32, largest)

    def sequential_twin() -> None:
        for scope, request in zip(batch.microscopes[:n_twin_seq], requests, strict=False):
            scope.acquire(request)

    twin_cases = {
        "sequential": Case(n_twin_seq, sequential_twin, threads),
        "sequential_torch_1_thread": Case(n_twin_seq, sequential_twin, 1),
    }
    for n in sizes:
        plan = {i: requests[i] for i in range(n)}
        twin_cases[f"batched_{n}"] = Case(n, partial(batch.acquire_many, plan), threads)

    # the same camera without oversampling: a 192-pixel grid
    coarse_config = config.model_copy(
        update={"ronchigram": config.ronchigram.model_copy(update={"oversample": 1})}
    )
    coarse = SimulatedMicroscope(coarse_config, specimen=first.specimen)
    coarse_fast = coarse._ronchigram_engine
    coarse_engine = BatchedRonchigramEngine.from_transmissions(
        coarse.grid, [coarse_fast.transmission]
    )
    coarse_probes, coarse_where = _probes(rng, 32), points(32)
    coarse_cases = {
        "sequential_torch_1_thread": Case(
            32, sequential(coarse_fast, coarse_probes, coarse_where), 1
        ),
        "batched_32": Case(
            32, partial(coarse_engine.ronchigrams, coarse_probes, coarse_where), threads
        ),
    }

    block = (rng.standard_normal((32, grid.gpts, grid.gpts)) + 0j).astype(np.complex64)
    fft_cases = {
        f"{w}_workers": Case(32, partial(scipy.fft.fft2, block, norm="ortho", workers=w), w)
        for w in sorted({1, threads})
    }

    everything = [
        *engine_cases.values(),
        *twin_cases.values(),
        *coarse_cases.values(),
        *fft_cases.values(),
    ]
    for case in everything:  # warm up
        case.run()
    load_before = os.getloadavg()
    for r in range(repeats):  # interleaved: every case sees each repeat's load
        _progress(f"repeat {r + 1} of {repeats} ...")
        for case in everything:
            case.time()
    torch.set_num_threads(threads)

    def table(cases: dict[str, Case]) -> dict[str, object]:
        return {name: case.summary() for name, case in cases.items()}

    def ratios(cases: dict[str, Case], baseline: str) -> dict[str, float]:
        base = float(np.median(cases[baseline].rates))
        return {
            name: round(float(np.median(case.rates)) / base, 2)
            for name, case in cases.items()
            if name.startswith("batched")
        }

    best = max(float(np.median(c.rates)) for n, c in twin_cases.items() if n.startswith("batched"))
    return {
        "unit": "Ronchigrams per second (median over interleaved repeats); CPU ms per frame",
        "camera": list(first.config.ronchigram.shape),
        "simulation_grid": grid.gpts,
        "slabs": fast.n_slabs,
        "specimen": first.specimen.name,
        "threads": threads,
        "repeats": repeats,
        "seed": seed,
        "engine": table(engine_cases),
        "engine_speedup": ratios(engine_cases, "sequential"),
        "engine_speedup_vs_torch_1_thread": ratios(engine_cases, "sequential_torch_1_thread"),
        "twin": table(twin_cases),
        "twin_speedup": ratios(twin_cases, "sequential"),
        "twin_speedup_vs_torch_1_thread": ratios(twin_cases, "sequential_torch_1_thread"),
        "engine_oversample_1": {"simulation_grid": coarse.grid.gpts, **table(coarse_cases)},
        "fft_384_per_s": table(fft_cases),
        "batched_vs_fast_max_peak_relative_error": float(f"{worst:.3g}"),
        "goal_per_s": GOAL_PER_S,
        "goal_met": best >= GOAL_PER_S,
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_before": [round(v, 2) for v in load_before],
            "load_average_after": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.cuda.is_available(),
        },
    }


if __name__ == "__main__":
    main()
