"""`BatchedTwin`: N simulated microscopes whose Ronchigram acquisitions run together.

Each twin keeps its own knobs, clock, lenses, drift and RNG; only the Ronchigram engine step
is shared. An acquisition is the twin's own `SimulatedMicroscope.begin_ronchigram` (checks,
state, probe and specimen point at mid-exposure, scan jitter), then one
`BatchedRonchigramEngine` call for every twin of the round, then each twin's own
`SimulatedMicroscope.finish_ronchigram` (shot noise at the dose, camera gain and read noise,
clock and dose). So every twin draws from its RNG in the order `acquire` does, and the
frames equal the sequential twin's (the physics to float32 round-off; the noise draws are
the same stream).

Made for a VecEnv's ``step_wait``: one call for all N envs, each asking for no frame, one,
or several (`acquire_many`): the k-th frames of all twins are computed together, in round k.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from emauto.drivers.sim.batched import BatchedRonchigramEngine, FftBackend
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.fast import FastRonchigramEngine
from emauto.drivers.sim.twin import RonchigramExposure, SimulatedMicroscope
from emauto.errors import BeamBlankedError, ClosedError, ConfigError, InvalidRequestError
from emauto.microscope import Frame, RonchigramRequest

#: The most twins a `BatchedTwin` holds, and the most frames one call may ask for.
MAX_TWINS = 4096
MAX_FRAMES_PER_CALL = 65536


class BatchedTwin:
    """N `SimulatedMicroscope`s (fidelity ``fast``, one Ronchigram grid) acquiring together.

    The twins stay ordinary microscopes (``twin[i]``: set, read, acquire one frame, ADF
    images, ground truth); `acquire_ronchigrams` and `acquire_many` take Ronchigrams of many
    of them in batched FFT calls. ``device``, ``fft``, ``max_batch``: see
    `BatchedRonchigramEngine`.
    """

    def __init__(
        self,
        microscopes: Sequence[SimulatedMicroscope],
        *,
        device: str | torch.device = "cpu",
        fft: FftBackend = "auto",
        max_batch: int | None = None,
    ) -> None:
        scopes = list(microscopes)
        if not 1 <= len(scopes) <= MAX_TWINS:
            raise ConfigError(f"a BatchedTwin holds 1 to {MAX_TWINS} twins, got {len(scopes)}")
        for i, scope in enumerate(scopes):
            if not isinstance(scope, SimulatedMicroscope):
                raise ConfigError(
                    f"twin {i} is a {type(scope).__name__}, not a SimulatedMicroscope"
                )
            if not isinstance(scope._ronchigram_engine, FastRonchigramEngine):
                raise ConfigError(
                    f"twin {i} has fidelity {scope.config.fidelity!r}; a BatchedTwin needs 'fast'"
                )
            if scope.grid != scopes[0].grid:
                raise ConfigError(
                    f"twin {i}'s Ronchigram grid {scope.grid} differs from twin 0's "
                    f"{scopes[0].grid}: one batch needs one grid"
                )
        if len({id(scope) for scope in scopes}) != len(scopes):
            raise ConfigError("the same microscope appears twice in a BatchedTwin")
        self._scopes = tuple(scopes)
        self.engine = BatchedRonchigramEngine.from_transmissions(
            scopes[0].grid, [], device=device, fft=fft, max_batch=max_batch
        )

    @classmethod
    def from_config(
        cls,
        config: SimConfig | None,
        n: int,
        *,
        seeds: Sequence[int] | None = None,
        **engine: Any,
    ) -> BatchedTwin:
        """``n`` twins of one configuration, seeds ``config.seed + i`` (or ``seeds``), the
        specimen loaded once and its transmission functions held once for all of them.
        ``engine``: `BatchedRonchigramEngine` options (device, fft, max_batch)."""
        config = config or SimConfig()
        if not isinstance(n, int) or not 1 <= n <= MAX_TWINS:
            raise ConfigError(f"n must be an int in [1, {MAX_TWINS}], got {n!r}")
        seed_list = [config.seed + i for i in range(n)] if seeds is None else list(seeds)
        if len(seed_list) != n:
            raise ConfigError(f"{len(seed_list)} seeds for {n} twins")
        if config.fidelity != "fast":
            raise ConfigError(f"a BatchedTwin needs fidelity 'fast', got {config.fidelity!r}")
        first = SimulatedMicroscope(config.model_copy(update={"seed": seed_list[0]}))
        shared = first._ronchigram_engine.transmission
        scopes = [first]
        for seed in seed_list[1:]:
            scope = SimulatedMicroscope(
                config.model_copy(update={"seed": seed}), specimen=first.specimen
            )
            scope._ronchigram_engine.share_transmission(shared)  # one copy, not n
            scopes.append(scope)
        return cls(scopes, **engine)

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self._scopes)

    def __getitem__(self, index: int) -> SimulatedMicroscope:
        return self._scopes[index]

    @property
    def microscopes(self) -> tuple[SimulatedMicroscope, ...]:
        """The twins, in index order."""
        return self._scopes

    def close(self) -> None:
        """Close every twin."""
        for scope in self._scopes:
            scope.close()

    # ------------------------------------------------------------------ acquisition

    def acquire_ronchigrams(
        self, requests: Sequence[RonchigramRequest | None]
    ) -> list[Frame | None]:
        """One Ronchigram per twin (``requests[i]`` for twin i; None: no frame), computed
        together. Every request is checked before any twin moves: a bad one raises (the
        error `acquire` would raise, naming the twin) and no twin changes."""
        if isinstance(requests, RonchigramRequest) or not isinstance(requests, Sequence):
            raise InvalidRequestError(
                f"requests must be a sequence (one entry per twin), got {type(requests).__name__}"
            )
        if len(requests) != len(self._scopes):
            raise InvalidRequestError(
                f"{len(requests)} requests for {len(self._scopes)} twins: give one per twin "
                "(None for no frame), or use acquire_many for a subset"
            )
        frames = self.acquire_many({i: r for i, r in enumerate(requests) if r is not None})
        return [frames[i][0] if i in frames else None for i in range(len(self._scopes))]

    def acquire_many(
        self, requests: Mapping[int, RonchigramRequest | Sequence[RonchigramRequest]]
    ) -> dict[int, list[Frame]]:
        """Ronchigrams of a subset of twins, any number each: ``{twin index: request or
        requests}`` -> ``{twin index: frames}`` in request order. A twin's frames are taken
        one after another on its clock; the k-th frames of all twins are computed together.
        Every request is checked before any twin moves."""
        if not isinstance(requests, Mapping):
            raise InvalidRequestError(
                f"requests must map twin index -> request(s), got {type(requests).__name__}"
            )
        plan: dict[int, list[RonchigramRequest]] = {}
        total = 0
        for index, value in requests.items():
            if isinstance(index, bool) or not isinstance(index, int | np.integer):
                raise InvalidRequestError(f"twin index must be an int, got {index!r}")
            if not 0 <= index < len(self._scopes):
                raise InvalidRequestError(
                    f"twin index {index} out of range [0, {len(self._scopes)})"
                )
            listed = [value] if isinstance(value, RonchigramRequest) else value
            if not isinstance(listed, Sequence):
                raise InvalidRequestError(
                    f"twin {index}: expected a RonchigramRequest or a sequence of them, "
                    f"got {type(value).__name__}"
                )
            total += len(listed)
            if total > MAX_FRAMES_PER_CALL:
                raise InvalidRequestError(f"more than {MAX_FRAMES_PER_CALL} frames in one call")
            plan[int(index)] = list(listed)
        for index, listed in plan.items():
            for request in listed:
                try:
                    self._scopes[index].check_ronchigram(request)
                except (InvalidRequestError, BeamBlankedError, ClosedError) as exc:
                    raise type(exc)(f"twin {index}: {exc}") from exc
        frames: dict[int, list[Frame]] = {index: [] for index in plan}
        rounds = max((len(listed) for listed in plan.values()), default=0)
        for k in range(rounds):
            active = [index for index, listed in plan.items() if len(listed) > k]
            exposures = [self._scopes[i].begin_ronchigram(plan[i][k]) for i in active]
            for index, frame in zip(active, self._finish(active, exposures), strict=True):
                frames[index].append(frame)
        return frames

    def _finish(self, active: list[int], exposures: list[RonchigramExposure]) -> list[Frame]:
        scopes = [self._scopes[i] for i in active]
        probabilities = self.engine.ronchigrams_of(
            [e.probe for e in exposures],
            np.array([e.point_m for e in exposures], dtype=np.float64).reshape(-1, 2),
            [scope._ronchigram_engine.transmission for scope in scopes],
        )
        return [
            scope.finish_ronchigram(exposure, probability)
            for scope, exposure, probability in zip(scopes, exposures, probabilities, strict=True)
        ]
