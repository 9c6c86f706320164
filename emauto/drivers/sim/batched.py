"""Many Ronchigrams at once: the fast engine's physics over a batch, in batched FFT calls.

`BatchedRonchigramEngine` computes N Ronchigrams (N probes, N specimen points, each on any
of its specimens: one shared specimen or several of the same grid) with the physics of
`emauto.drivers.sim.fast.FastRonchigramEngine` and its output to float32 round-off: the
same band-limited, wrap-padded transmission functions (`PaddedTransmission`), the same chi
basis inside the aperture (`ApertureBasis`), the same Fresnel propagator between slabs.

Speed: the frames of a batch go through each FFT pass together (one call per pass, a chunk
of at most ``max_batch`` frames). The probe's spectrum is non-zero only inside the aperture
(a disc of 1/3 of the grid's Nyquist angle), so the first inverse FFT transforms only the
rows that hold the aperture before the column pass; the camera reads only the central 2/3
of the far field, so the last FFT's column pass transforms only the camera's columns. On a
CPU the work is numpy and `scipy.fft` (pocketfft, about 2x torch's CPU FFT here, and no
pool of spinning threads), whole chunks in parallel on ``torch.get_num_threads()`` threads
(both release the GIL); on CUDA it is torch.

`BatchedTwin` (`emauto.drivers.sim.batched_twin`) runs N twins' Ronchigram acquisitions
through one of these engines.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.fft
import torch
from torch.nn import functional

from emauto import optics
from emauto.drivers.sim.fast import (
    ApertureBasis,
    PaddedTransmission,
    band_limit,
    fresnel_propagator,
    grid_chi_basis,
)
from emauto.drivers.sim.probe import ProbeOptics, RonchigramGrid, stack_mid_depth_m
from emauto.drivers.sim.specimens import Specimen
from emauto.errors import ConfigError, InvalidRequestError

FftBackend = Literal["auto", "torch", "scipy"]

#: The most frames one call may ask for (a bound checked before anything is allocated).
MAX_FRAMES = 65536
#: Default memory of one chunk's wave (bytes): the chunk size is this / (8 gpts^2) frames
#: (7 at the 384-pixel grid on the CPU, where larger chunks were no faster; 455 on CUDA).
DEFAULT_CHUNK_BYTES = {"cpu": 8 * 2**20, "cuda": 512 * 2**20}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"`` (``"cuda:1"``, ...) or ``"auto"`` (CUDA when torch has it, else
    the CPU) as a torch device; CUDA asked for where torch has none is a `ConfigError`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}") from exc
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device must be 'cpu', 'cuda[:i]' or 'auto', got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: this torch has no CUDA device; use device='cpu' or 'auto'"
        )
    return resolved


@dataclass(frozen=True, eq=False)
class _Aperture:
    """An aperture's basis on the engine's device and its row-pruned spectrum layout."""

    basis: ApertureBasis
    chi: torch.Tensor  # float32 (n_aberrations, n_in)
    wavenumbers: torch.Tensor  # float32 (2, n_in), 1/m
    amplitude: torch.Tensor  # float32 (n_in,)
    rows: torch.Tensor  # int64 (R,): spectrum rows holding aperture pixels
    compact: torch.Tensor  # int64 (n_in,): flat index into the (R, gpts) row block
    chi_np: np.ndarray  # the same on the CPU as numpy arrays (the scipy path)
    wavenumbers_np: np.ndarray
    amplitude_np: np.ndarray
    rows_np: np.ndarray
    compact_np: np.ndarray


class BatchedRonchigramEngine:
    """N Ronchigrams per call, equal to `FastRonchigramEngine`'s to float32 round-off.

    ``specimens``: one specimen (shared by every frame) or several of the same pixel size
    (a frame picks one by index). ``device``: ``"cpu"`` (default), ``"cuda"`` or ``"auto"``.
    ``fft``: ``"auto"`` (scipy on the CPU, torch on CUDA), ``"torch"`` or ``"scipy"`` (CPU
    only). ``max_batch``: frames per FFT call (default: ``DEFAULT_CHUNK_BYTES`` of wave).
    """

    def __init__(
        self,
        specimens: Specimen | Sequence[Specimen],
        grid: RonchigramGrid,
        energy_eV: float,
        *,
        device: str | torch.device = "cpu",
        fft: FftBackend = "auto",
        max_batch: int | None = None,
    ) -> None:
        listed = [specimens] if isinstance(specimens, Specimen) else list(specimens)
        _check_grid(grid)
        if not listed:
            raise ConfigError("no specimen: give one specimen or a non-empty sequence")
        for specimen in listed:
            if not isinstance(specimen, Specimen):
                raise ConfigError(f"expected Specimen objects, got {type(specimen).__name__}")
            if min(specimen.gpts) < 1:
                raise ConfigError(f"specimen {specimen.name!r} is empty")
        transmissions = [
            PaddedTransmission.build(
                band_limit(s.transmission(energy_eV)), s.sampling_m, s.slab_thickness_m, grid.gpts
            )
            for s in listed
        ]
        self._setup(grid, transmissions, device, fft, max_batch)

    @classmethod
    def from_transmissions(
        cls,
        grid: RonchigramGrid,
        transmissions: Sequence[PaddedTransmission],
        *,
        device: str | torch.device = "cpu",
        fft: FftBackend = "auto",
        max_batch: int | None = None,
    ) -> BatchedRonchigramEngine:
        """An engine over already padded transmissions (shared with fast engines, not copied
        on the CPU); ``transmissions`` may also be empty, for `ronchigrams_of` only."""
        _check_grid(grid)
        engine = cls.__new__(cls)
        engine._setup(grid, list(transmissions), device, fft, max_batch)
        return engine

    def _setup(
        self,
        grid: RonchigramGrid,
        transmissions: list[PaddedTransmission],
        device: str | torch.device,
        fft: FftBackend,
        max_batch: int | None,
    ) -> None:
        self.grid = grid
        self.device = resolve_device(device)
        if fft not in ("auto", "torch", "scipy"):
            raise ConfigError(f"fft must be 'auto', 'torch' or 'scipy', got {fft!r}")
        if fft == "scipy" and self.device.type != "cpu":
            raise ConfigError("fft='scipy' runs on the CPU only; use fft='torch' on CUDA")
        self._scipy = self.device.type == "cpu" and fft in ("auto", "scipy")
        frame_bytes = 8 * grid.gpts**2
        if max_batch is None:
            max_batch = max(1, DEFAULT_CHUNK_BYTES[self.device.type] // frame_bytes)
        if not isinstance(max_batch, int) or not 1 <= max_batch <= MAX_FRAMES:
            raise ConfigError(f"max_batch must be an int in [1, {MAX_FRAMES}], got {max_batch!r}")
        self.max_batch = max_batch
        for t in transmissions:
            self._check_transmission(t)
        self.transmissions = transmissions
        self._alpha, self._basis_full = grid_chi_basis(grid)
        self._apertures: dict[tuple[float, float, float], _Aperture] = {}
        self._propagators: dict[float, torch.Tensor] = {}
        self._on_device: dict[int, tuple[PaddedTransmission, torch.Tensor]] = {}
        self._buffers: dict[tuple[int, int, int], tuple[_Aperture, np.ndarray, np.ndarray]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_threads = 0

    @property
    def n_specimens(self) -> int:
        """Number of specimens (transmission stacks) a frame can pick from by index."""
        return len(self.transmissions)

    # ------------------------------------------------------------------ public

    def ronchigrams(
        self,
        probes: Sequence[ProbeOptics],
        positions_m: np.ndarray | Sequence[tuple[float, float]],
        specimen_index: Sequence[int] | np.ndarray | None = None,
    ) -> np.ndarray:
        """Camera images (float64 (N, S, S), [y, x]): the fraction of beam electrons in each
        pixel, frame i for ``probes[i]`` at specimen point ``positions_m[i]`` = (x, y) (m)
        of specimen ``specimen_index[i]`` (default: specimen 0 for every frame)."""
        n = _count(probes)
        if specimen_index is None:
            index = np.zeros(n, dtype=np.int64)
        else:
            index = np.asarray(specimen_index)
            if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
                raise InvalidRequestError(
                    f"specimen_index must be {n} integers (one per probe), got "
                    f"shape {index.shape} of {index.dtype}"
                )
        if n and (index.min() < 0 or index.max() >= self.n_specimens):
            raise InvalidRequestError(
                f"specimen_index out of range [0, {self.n_specimens}): "
                f"{int(index.min())}..{int(index.max())}"
            )
        return self.ronchigrams_of(probes, positions_m, [self.transmissions[i] for i in index])

    def ronchigrams_of(
        self,
        probes: Sequence[ProbeOptics],
        positions_m: np.ndarray | Sequence[tuple[float, float]],
        transmissions: Sequence[PaddedTransmission],
    ) -> np.ndarray:
        """As `ronchigrams`, frame i on ``transmissions[i]`` (e.g. each twin's own)."""
        n = _count(probes)
        positions = _check_positions(positions_m, n)
        if len(transmissions) != n:
            raise InvalidRequestError(
                f"{len(transmissions)} transmissions for {n} probes: give one per probe"
            )
        for probe in probes:
            _check_probe(probe)
        for t in set(transmissions):
            self._check_transmission(t)
        camera = self.grid.camera_pixels
        out = np.empty((n, camera, camera), dtype=np.float64)
        groups: dict[tuple[tuple[float, float, float], int, float], list[int]] = {}
        for i, (probe, t) in enumerate(zip(probes, transmissions, strict=True)):
            key = ((probe.convergence_rad, *probe.tilt_rad), t.n_slabs, t.slab_thickness_m)
            groups.setdefault(key, []).append(i)
        threads = torch.get_num_threads()
        parallel = self._scipy and threads > 1
        chunks: list[list[int]] = []
        for frames in groups.values():
            self._aperture(probes[frames[0]])  # caches filled here, not in the workers
            self._propagator(transmissions[frames[0]].slab_thickness_m)
            n_chunks = math.ceil(len(frames) / self.max_batch)
            if parallel:  # whole chunks in parallel, a multiple of the thread count
                n_chunks = min(len(frames), math.ceil(max(n_chunks, threads) / threads) * threads)
            chunks.extend(c.tolist() for c in np.array_split(np.array(frames), n_chunks))

        def compute(chunk: list[int], workers: int) -> np.ndarray:
            return self._chunk(
                [probes[i] for i in chunk],
                positions[chunk],
                [transmissions[i] for i in chunk],
                workers,
            )

        if parallel and len(chunks) > 1:
            # numpy and pocketfft release the GIL: every step of a chunk runs in parallel
            pool = self._thread_pool(threads)
            for chunk, images in zip(
                chunks, pool.map(compute, chunks, [1] * len(chunks)), strict=True
            ):
                out[chunk] = images
        else:
            for chunk in chunks:
                out[chunk] = compute(chunk, threads)
        return out

    # ------------------------------------------------------------------ internals

    def _check_transmission(self, t: PaddedTransmission) -> None:
        if not isinstance(t, PaddedTransmission):
            raise ConfigError(f"expected PaddedTransmission, got {type(t).__name__}")
        if t.pad != self.grid.gpts // 2 + 1:
            raise ConfigError(
                f"transmission padded for a {2 * t.pad - 2}-pixel grid, this engine's is "
                f"{self.grid.gpts}"
            )
        if not math.isclose(t.sampling_m, self.grid.sampling_m, rel_tol=1e-9):
            raise ConfigError(
                f"specimen pixel {t.sampling_m:.6g} m differs from the grid's "
                f"{self.grid.sampling_m:.6g} m"
            )

    def _aperture(self, probe: ProbeOptics) -> _Aperture:
        key = (probe.convergence_rad, *probe.tilt_rad)
        found = self._apertures.get(key)
        if found is None:
            if len(self._apertures) >= 64:  # a bounded cache: tilts may drift
                self._apertures.clear()
            basis = ApertureBasis.build(
                self._alpha,
                self._basis_full,
                self.grid.wavelength_m,
                probe.convergence_rad,
                probe.tilt_rad,
            )
            n = self.grid.gpts
            rows, rank = np.unique(basis.inside // n, return_inverse=True)
            compact = rank.ravel() * n + basis.inside % n
            device = self.device
            found = _Aperture(
                basis=basis,
                chi=basis.basis.to(device),
                wavenumbers=basis.wavenumbers.to(device),
                amplitude=basis.amplitude.to(device),
                rows=torch.from_numpy(rows.astype(np.int64)).to(device),
                compact=torch.from_numpy(compact.astype(np.int64)).to(device),
                chi_np=basis.basis.numpy(),
                wavenumbers_np=basis.wavenumbers.numpy(),
                amplitude_np=basis.amplitude.numpy(),
                rows_np=rows.astype(np.int64),
                compact_np=compact.astype(np.int64),
            )
            self._apertures[key] = found
        return found

    def _thread_pool(self, threads: int) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_threads != threads:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="batched-ronchigram")
            self._pool_threads = threads
        return self._pool

    def _buffers_for(self, aperture: _Aperture, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept complex64 work buffers of this thread for a chunk: the aperture's row block
        (frames, R gpts) and the wave (frames, gpts, gpts)."""
        key = (id(aperture), frames, threading.get_ident())
        found = self._buffers.get(key)
        if found is None or found[0] is not aperture:
            if len(self._buffers) >= 16:  # chunk sizes x apertures x threads
                self._buffers.clear()
            n = self.grid.gpts
            block = np.zeros((frames, len(aperture.rows_np) * n), dtype=np.complex64)
            found = (aperture, block, np.zeros((frames, n, n), dtype=np.complex64))
            self._buffers[key] = found
        return found[1], found[2]

    def _propagator(self, slab_thickness_m: float) -> torch.Tensor:
        found = self._propagators.get(slab_thickness_m)
        if found is None:
            found = fresnel_propagator(self.grid, slab_thickness_m).to(self.device)
            self._propagators[slab_thickness_m] = found
        return found

    def _padded(self, t: PaddedTransmission) -> torch.Tensor:
        if self.device.type == "cpu":
            return t.padded
        held = self._on_device.get(id(t))
        if held is None or held[0] is not t:
            if len(self._on_device) >= 256:
                self._on_device.clear()
            held = (t, t.padded.to(self.device))
            self._on_device[id(t)] = held
        return held[1]

    def _chunk(
        self,
        probes: list[ProbeOptics],
        positions: np.ndarray,
        transmissions: list[PaddedTransmission],
        workers: int,
    ) -> np.ndarray:
        """One chunk of frames sharing an aperture and a slab structure: (B, S, S), its
        FFTs on ``workers`` threads (the CPU path)."""
        n = self.grid.gpts
        aperture = self._aperture(probes[0])
        scale = 2 * math.pi / self.grid.wavelength_m
        # each probe described at its specimen's first screen (`probe` module: reference plane)
        depth = stack_mid_depth_m([transmissions[0].slab_thickness_m] * transmissions[0].n_slabs)
        coefficients = (
            np.array([p.at_depth(-depth).coefficients_m for p in probes], dtype=np.float64) * scale
        )
        located = [
            t.locate((float(x), float(y)), n)
            for t, (x, y) in zip(transmissions, positions, strict=True)
        ]
        shifts = 2 * math.pi * np.array([[wx, wy] for _, _, wx, wy in located], dtype=np.float64)
        windows = [(y0, x0) for y0, x0, _, _ in located]
        if self._scipy:
            return self._chunk_numpy(
                aperture,
                coefficients.astype(np.float32),
                shifts.astype(np.float32),
                windows,
                [t.padded.numpy() for t in transmissions],
                transmissions[0].slab_thickness_m,
                workers,
            )
        return self._chunk_torch(
            aperture,
            torch.from_numpy(coefficients.astype(np.float32)).to(self.device),
            torch.from_numpy(shifts.astype(np.float32)).to(self.device),
            windows,
            [self._padded(t) for t in transmissions],
            transmissions[0].slab_thickness_m,
        )

    def _chunk_numpy(
        self,
        aperture: _Aperture,
        weights: np.ndarray,
        ramps: np.ndarray,
        windows: list[tuple[int, int]],
        padded: list[np.ndarray],
        slab_thickness_m: float,
        workers: int,
    ) -> np.ndarray:
        """The CPU path: numpy element-wise (no spinning thread pool) and scipy's FFTs on
        ``workers`` threads. Same steps as `_chunk_torch`."""
        grid, n, b_frames = self.grid, self.grid.gpts, len(windows)

        def fft(x: np.ndarray, axis: int, inverse: bool = False) -> np.ndarray:
            transform = scipy.fft.ifft if inverse else scipy.fft.fft
            return transform(x, axis=axis, norm="ortho", workers=workers, overwrite_x=True)

        # chi: a sum over the coefficients in use, element-wise (a BLAS product here woke
        # BLAS's thread pool for 1 ms a frame on shared cores; this costs ~0.05 ms)
        # (the fast engine's order: the aberrations, then the position's ramp)
        phase = np.zeros((len(windows), aperture.chi_np.shape[1]), dtype=np.float32)
        for k in np.flatnonzero(np.any(weights != 0, axis=0)):
            phase += weights[:, k : k + 1] * aperture.chi_np[k]
        phase += (
            ramps[:, :1] * aperture.wavenumbers_np[0] + ramps[:, 1:] * aperture.wavenumbers_np[1]
        )
        spectrum = np.empty(phase.shape, dtype=np.complex64)
        spectrum.real = np.cos(phase) * aperture.amplitude_np
        spectrum.imag = np.sin(phase) * -aperture.amplitude_np  # amplitude x exp(-i phase)
        # the probe: inverse FFT of the aperture's rows along x, then of every column along y;
        # every FFT in place in kept buffers (fresh arrays cost page faults: ~15 % a pass)
        n_rows = len(aperture.rows_np)
        block, wave = self._buffers_for(aperture, b_frames)
        block.fill(0)
        block[:, aperture.compact_np] = spectrum
        wave.fill(0)
        wave[:, aperture.rows_np] = fft(block.reshape(b_frames, n_rows, n), -1, inverse=True)
        wave = fft(wave, -2, inverse=True)  # unit norm, as the fast engine's
        n_slabs = padded[0].shape[0]
        for slab in range(n_slabs):
            for i, (y0, x0) in enumerate(windows):
                wave[i] *= padded[i][slab, y0 : y0 + n, x0 : x0 + n]
            if slab < n_slabs - 1:
                wave = fft(fft(wave, -1), -2)
                wave *= self._propagator(slab_thickness_m).numpy()
                wave = fft(fft(wave, -1, inverse=True), -2, inverse=True)
        # the camera's far field (centred, see PaddedTransmission): x pass, crop, y pass, crop
        start, crop = (n - grid.crop) // 2, grid.crop
        half = fft(wave, -1)[:, :, start : start + crop]
        far_field = fft(half, -2)[:, start : start + crop, :]
        squares = np.square(far_field.view(np.float32))  # re^2, im^2 interleaved along x
        intensity = squares[..., 0::2] + squares[..., 1::2]
        o = grid.oversample
        binned = np.zeros((b_frames, grid.camera_pixels, grid.camera_pixels), dtype=np.float32)
        for dy in range(o):
            for dx in range(o):
                binned += intensity[:, dy::o, dx::o]
        return binned.astype(np.float64)

    def _chunk_torch(
        self,
        aperture: _Aperture,
        weights: torch.Tensor,
        ramps: torch.Tensor,
        windows: list[tuple[int, int]],
        padded: list[torch.Tensor],
        slab_thickness_m: float,
    ) -> np.ndarray:
        """The torch path (CUDA, or the CPU with ``fft="torch"``)."""
        grid, device = self.grid, self.device
        n, b_frames = grid.gpts, len(windows)

        def fft(x: torch.Tensor, dim: int, inverse: bool = False) -> torch.Tensor:
            transform = torch.fft.ifft if inverse else torch.fft.fft
            return transform(x, dim=dim, norm="ortho")

        phase = weights @ aperture.chi + ramps @ aperture.wavenumbers  # (B, n_in)
        spectrum = torch.polar(aperture.amplitude.expand(b_frames, -1), -phase)
        n_rows = int(aperture.rows.shape[0])
        block = torch.zeros((b_frames, n_rows * n), dtype=torch.complex64, device=device)
        block[:, aperture.compact] = spectrum
        wave = torch.zeros((b_frames, n, n), dtype=torch.complex64, device=device)
        wave[:, aperture.rows] = fft(block.view(b_frames, n_rows, n), -1, inverse=True)
        wave = fft(wave, -2, inverse=True)
        n_slabs = int(padded[0].shape[0])
        for slab in range(n_slabs):
            for i, (y0, x0) in enumerate(windows):
                wave[i].mul_(padded[i][slab, y0 : y0 + n, x0 : x0 + n])
            if slab < n_slabs - 1:
                spectrum_2d = fft(fft(wave, -1), -2) * self._propagator(slab_thickness_m)
                wave = fft(fft(spectrum_2d, -1, inverse=True), -2, inverse=True)
        start, crop = (n - grid.crop) // 2, grid.crop
        half = fft(wave, -1)[:, :, start : start + crop]
        far_field = fft(half, -2)[:, start : start + crop, :]
        intensity = torch.view_as_real(far_field).square().sum(-1)
        o = grid.oversample
        binned = functional.avg_pool2d(intensity[:, None], o)[:, 0] * (o * o)
        return binned.cpu().numpy().astype(np.float64)


def _check_grid(grid: RonchigramGrid) -> None:
    if not isinstance(grid, RonchigramGrid):
        raise ConfigError(f"expected a RonchigramGrid, got {type(grid).__name__}")
    if grid.gpts < 2 or grid.gpts % 2:
        raise ConfigError(f"the simulation grid must have an even size >= 2, got {grid.gpts}")
    if grid.crop > grid.gpts:
        raise ConfigError(f"the camera reads {grid.crop} pixels of a {grid.gpts}-pixel grid")


def _count(probes: Sequence[ProbeOptics]) -> int:
    if isinstance(probes, ProbeOptics) or not isinstance(probes, Sequence):
        raise InvalidRequestError(
            f"probes must be a sequence of ProbeOptics, got {type(probes).__name__}"
        )
    if len(probes) > MAX_FRAMES:
        raise InvalidRequestError(f"{len(probes)} frames asked for, at most {MAX_FRAMES}")
    return len(probes)


def _check_positions(positions_m: np.ndarray | Sequence[tuple[float, float]], n: int) -> np.ndarray:
    try:
        positions = np.asarray(positions_m, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"positions_m must be (N, 2) numbers: {exc}") from exc
    if n == 0 and positions.size == 0:
        return positions.reshape(0, 2)
    if positions.shape != (n, 2):
        raise InvalidRequestError(
            f"positions_m must have shape ({n}, 2), one (x, y) per probe; got {positions.shape}"
        )
    if not np.all(np.isfinite(positions)):
        raise InvalidRequestError("positions_m must be finite")
    return positions


def _check_probe(probe: ProbeOptics) -> None:
    if not isinstance(probe, ProbeOptics):
        raise InvalidRequestError(f"expected ProbeOptics, got {type(probe).__name__}")
    if len(probe.coefficients_m) != len(optics.ABERRATION_NAMES):
        raise InvalidRequestError(
            f"a probe needs {len(optics.ABERRATION_NAMES)} coefficients "
            f"(optics.ABERRATION_NAMES), got {len(probe.coefficients_m)}"
        )
    values = (*probe.coefficients_m, probe.convergence_rad, *probe.tilt_rad)
    if not all(math.isfinite(v) for v in values) or probe.convergence_rad <= 0:
        raise InvalidRequestError(f"a probe needs finite optics and convergence > 0: {probe}")
