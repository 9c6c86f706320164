"""Domain-randomised STEM-like images for training the completion network: cheap, procedural.

Each image is drawn from one seed (same seed, same image) and is what a user's HAADF/ADF
raster could look like, over a deliberately broad distribution:

- **Pixel size** log-uniform from 5 to 200 pm (`PIXEL_SIZE_RANGE_M`): atomic columns a
  dozen pixels wide down to lattices far below the pixel (aliased, as a point-sampled
  raster of a crystal is at low magnification).
- **Scenes** (`KINDS`): ``crystal`` (one zone-axis-like 2-D lattice: random cell lengths
  2-6 Å, angle 55-125°, a basis of 1-3 columns with their own intensities, column widths
  from the probe and thermal smearing; per-column intensity jitter and vacancies, a smooth
  thickness variation, sometimes an edge onto vacuum or amorphous support); ``grains``
  (2-4 lattices of different orientations and cells meeting at boundaries); ``particles``
  (faceted or round particles, 0.5-24 nm across, 3 px to 0.8 of the field, on an amorphous
  support, with lattice fringes where the pixel resolves them: low magnification);
  ``amorphous`` (a support film with holes onto vacuum).
- **Contamination**: broad bright blobs and a slow background gradient, on any scene.
- **Probe**: a core blur (0-1.2 px) and probe tails (a broad Gaussian, 3-25 px, carrying
  0-30 % of the intensity).
- **Scan system**: scan rotation, anisotropic scale (+-4 %), drift during the frame (a
  shear of up to +-8 px over it), flyback (each line starts displaced, relaxing within
  2-15 px), line jitter (a random walk of row offsets) and mains hum (a sinusoidal offset
  along the scan), applied as a warp of the positions the probe visits.
- **Detector**: Poisson noise at 3-3000 electrons at full intensity (log-uniform; noise-free
  in `NOISE_FREE_FRACTION` of the images), Gaussian read noise (0-3 % of full scale) and
  row offsets (0-1 %).

`domain_image` returns the image as measured (min-max normalised to [0, 1], as the sparse-
scan benchmark normalises a user's image) and the noise-free image under the same affine
map. Nothing here comes from the twin (`twin_images`), `emauto.analysis.synthetic` or a
photograph: those stay unseen kinds for measuring how the network generalises
(``benchmarks/experiments/completion_generalisation.py``).

Generating: about 15 ms a 96x96 image on one core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from emauto.errors import ConfigError

__all__ = [
    "KINDS",
    "NOISE_FREE_FRACTION",
    "PIXEL_SIZE_RANGE_M",
    "DomainImage",
    "domain_image",
]

#: The scene kinds drawn (uniformly).
KINDS = ("crystal", "grains", "particles", "amorphous")
#: Pixel sizes (m), drawn log-uniform.
PIXEL_SIZE_RANGE_M = (5e-12, 200e-12)
#: Fraction of images measured without noise.
NOISE_FREE_FRACTION = 0.2
#: Electrons at full intensity of the image's own Poisson noise (log-uniform).
IMAGE_DOSE_RANGE_E = (3.0, 3000.0)

_ANGSTROM = 1e-10


@dataclass(frozen=True)
class DomainImage:
    """One generated image: ``image`` as measured, in [0, 1]; ``clean`` the noise-free image
    under the same normalisation; the ``kind`` of scene, ``pixel_m`` (m) and the image's
    ``dose_e`` (electrons at full intensity, None: noise-free)."""

    image: np.ndarray
    clean: np.ndarray
    kind: str
    pixel_m: float
    dose_e: float | None
    seed: int


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def _scan_positions(
    shape: tuple[int, int], pixel_m: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Where the probe really is (x, y in m, each ``shape``) for each pixel of the raster:
    rotation, scale, drift, flyback, line jitter and hum (see module)."""
    ny, nx = shape
    rows, cols = np.mgrid[0:ny, 0:nx].astype(np.float64)
    x = cols.copy()
    y = rows.copy()
    if rng.random() < 0.6:  # flyback: the line starts displaced and relaxes
        x += rng.uniform(-3.0, 3.0) * np.exp(-cols / rng.uniform(2.0, 15.0))
    if rng.random() < 0.5:  # line jitter: a random walk of row offsets
        x += np.cumsum(rng.normal(0.0, rng.uniform(0.0, 0.25), size=ny))[:, None]
    if rng.random() < 0.4:  # mains hum: a sinusoidal offset along the scan
        period = rng.uniform(50.0, 3000.0)  # pixels of scan time
        phase = rng.uniform(0, 2 * math.pi)
        x += rng.uniform(0.0, 0.8) * np.sin(2 * math.pi * (rows * nx + cols) / period + phase)
    if rng.random() < 0.6:  # drift: a shear over the frame (time runs with rows)
        t = (rows + cols / nx) / ny
        x += rng.uniform(-8.0, 8.0) * t
        y += rng.uniform(-8.0, 8.0) * t
    x *= 1.0 + rng.uniform(-0.04, 0.04)
    y *= 1.0 + rng.uniform(-0.04, 0.04)
    angle = rng.uniform(-math.pi, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    x, y = x - nx / 2, y - ny / 2
    x, y = c * x - s * y, s * x + c * y
    origin = rng.uniform(-1e4, 1e4, size=2)  # pixels: a random place on the specimen
    return (x + origin[0]) * pixel_m, (y + origin[1]) * pixel_m


@dataclass(frozen=True)
class _Lattice:
    a1: np.ndarray  # m
    a2: np.ndarray  # m
    basis: tuple[tuple[float, float, float], ...]  # fractional u, v; intensity
    sigma_m: float
    table: np.ndarray  # per-column intensity factors (vacancies 0), indexed mod its shape

    @property
    def spacing_m(self) -> float:
        return float(min(np.hypot(*self.a1), np.hypot(*self.a2)))


def _random_lattice(rng: np.random.Generator, pixel_m: float) -> _Lattice:
    """A zone-axis-like 2-D lattice of Gaussian columns (see module)."""
    a = rng.uniform(2.0, 6.0) * _ANGSTROM
    b = a * rng.uniform(0.6, 1.6)
    b = max(b, 2.0 * _ANGSTROM)
    gamma = rng.uniform(55.0, 125.0) if rng.random() < 0.5 else rng.choice([60.0, 90.0, 120.0])
    theta = rng.uniform(0, 2 * math.pi)
    a1 = a * np.array([math.cos(theta), math.sin(theta)])
    g = theta + math.radians(float(gamma))
    a2 = b * np.array([math.cos(g), math.sin(g)])
    n_basis = int(rng.integers(1, 4))
    basis = [(0.0, 0.0, 1.0)]
    for _ in range(n_basis - 1):
        basis.append(
            (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0.15, 1.0)))
        )
    probe = _log_uniform(rng, 0.3 * _ANGSTROM, max(0.6 * _ANGSTROM, 0.8 * pixel_m))
    column = rng.uniform(0.15, 0.45) * _ANGSTROM
    table = 1.0 + rng.normal(0.0, rng.uniform(0.0, 0.15), size=(37, 41, n_basis))
    table[rng.random(table.shape) < rng.uniform(0.0, 0.06)] = 0.0  # vacancies
    return _Lattice(a1, a2, tuple(basis), float(math.hypot(probe, column)), np.clip(table, 0, None))


def _lattice_intensity(lattice: _Lattice, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The lattice's columns point-sampled at ``x, y`` (m): peak 1 for a full column."""
    inverse = np.linalg.inv(np.stack([lattice.a1, lattice.a2], axis=1))
    u = inverse[0, 0] * x + inverse[0, 1] * y
    v = inverse[1, 0] * x + inverse[1, 1] * y
    out = np.zeros(x.shape)
    two_s2 = 2 * lattice.sigma_m**2
    ti, tj = lattice.table.shape[:2]
    for index, (bu, bv, weight) in enumerate(lattice.basis):
        du, dv = u - bu, v - bv
        iu, iv = np.floor(du), np.floor(dv)
        fu, fv = du - iu, dv - iv
        for k in (-1.0, 0.0, 1.0, 2.0):
            for m in (-1.0, 0.0, 1.0, 2.0):
                ru, rv = fu - k, fv - m
                rx = ru * lattice.a1[0] + rv * lattice.a2[0]
                ry = ru * lattice.a1[1] + rv * lattice.a2[1]
                d2 = rx * rx + ry * ry
                near = d2 < 9 * two_s2
                if not near.any():
                    continue
                factor = lattice.table[
                    ((iu[near] + k) % ti).astype(np.int64),
                    ((iv[near] + m) % tj).astype(np.int64),
                    index,
                ]
                out[near] += weight * factor * np.exp(-d2[near] / two_s2)
    return out


def _smooth_field(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field of unit standard deviation (correlation ``sigma_px``)."""
    field_ = ndimage.gaussian_filter(rng.normal(size=shape), max(sigma_px, 0.3), mode="reflect")
    return field_ / max(float(field_.std()), 1e-12)


def _amorphous(shape: tuple[int, int], pixel_m: float, rng: np.random.Generator) -> np.ndarray:
    """An amorphous support's speckle (mean 1): correlation about an atom's size."""
    sigma_px = rng.uniform(0.6, 1.5) * _ANGSTROM / pixel_m
    speckle = _smooth_field(shape, sigma_px, rng)
    return np.clip(1.0 + rng.uniform(0.1, 0.5) * speckle, 0, None)


def _region(x: np.ndarray, y: np.ndarray, pixel_m: float, rng: np.random.Generator) -> np.ndarray:
    """A soft region in [0, 1]: a half-plane or a large disc, edge 0.5-10 px wide."""
    cx, cy = float(np.mean(x)), float(np.mean(y))
    size = float(np.ptp(x) + np.ptp(y)) / 2
    width = rng.uniform(0.5, 10.0) * pixel_m
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * math.pi)
        d = (x - cx) * math.cos(angle) + (y - cy) * math.sin(angle) - rng.uniform(-0.4, 0.4) * size
    else:
        ox, oy = cx + rng.uniform(-0.8, 0.8) * size, cy + rng.uniform(-0.8, 0.8) * size
        d = rng.uniform(0.2, 1.0) * size - np.hypot(x - ox, y - oy)
    return 0.5 * (1 + np.tanh(d / width))


def _crystal(x: np.ndarray, y: np.ndarray, pixel_m: float, rng: np.random.Generator) -> np.ndarray:
    shape = x.shape
    lattice = _random_lattice(rng, pixel_m)
    thickness = np.clip(
        1.0 + rng.uniform(0, 0.4) * _smooth_field(shape, rng.uniform(8, 60), rng), 0.2, None
    )
    image = rng.uniform(0.0, 0.15) + _lattice_intensity(lattice, x, y) * thickness
    if rng.random() < 0.4:  # an edge onto vacuum or support
        inside = _region(x, y, pixel_m, rng)
        outside = (
            rng.uniform(0.0, 0.3) * _amorphous(shape, pixel_m, rng) if rng.random() < 0.6 else 0.0
        )
        image = inside * image + (1 - inside) * outside
    return image


def _grains(x: np.ndarray, y: np.ndarray, pixel_m: float, rng: np.random.Generator) -> np.ndarray:
    shape = x.shape
    n = int(rng.integers(2, 5))
    centres = rng.normal(0, 1, size=(n, 2)) * float(np.ptp(x)) / 3 + [np.mean(x), np.mean(y)]
    distance = np.stack([np.hypot(x - cx, y - cy) for cx, cy in centres])
    owner = np.argmin(distance, axis=0)
    image = np.zeros(shape)
    blur = rng.uniform(0.3, 2.0)
    for index in range(n):
        lattice = _random_lattice(rng, pixel_m)
        level = rng.uniform(0.4, 1.2)
        weight = ndimage.gaussian_filter((owner == index).astype(np.float64), blur)
        image += weight * level * _lattice_intensity(lattice, x, y)
    return image + rng.uniform(0.0, 0.2)


def _particles(
    x: np.ndarray, y: np.ndarray, pixel_m: float, rng: np.random.Generator
) -> np.ndarray:
    shape = x.shape
    image = rng.uniform(0.02, 0.25) * _amorphous(shape, pixel_m, rng)
    field = float(np.ptp(x) + np.ptp(y)) / 2
    n = int(rng.integers(1, 60))
    for _ in range(n):
        low, high = max(0.25e-9, 1.5 * pixel_m), min(12e-9, 0.4 * field)
        radius = _log_uniform(rng, low, high) if high > low else high
        cx = float(np.mean(x)) + rng.uniform(-0.6, 0.6) * field
        cy = float(np.mean(y)) + rng.uniform(-0.6, 0.6) * field
        dx, dy = x - cx, y - cy
        r = np.hypot(dx, dy)
        if rng.random() < 0.5:  # faceted: a polygon's support function
            sides = int(rng.integers(4, 9))
            phi = np.arctan2(dy, dx) + rng.uniform(0, 2 * math.pi)
            sector = 2 * math.pi / sides
            r = r * np.cos((phi % sector) - sector / 2) / math.cos(sector / 2)
        d = r / radius
        if not (d < 1).any():
            continue
        profile = np.sqrt(np.clip(1 - d * d, 0, None)) if rng.random() < 0.7 else (d < 1) * 1.0
        edge = ndimage.gaussian_filter(profile, rng.uniform(0.3, 1.5))
        level = rng.uniform(0.5, 1.5)
        texture: np.ndarray | float = 1.0
        lattice = _random_lattice(rng, pixel_m)
        if lattice.spacing_m > 2.5 * pixel_m and rng.random() < 0.8:  # fringes resolved
            contrast = rng.uniform(0.2, 0.9)
            texture = 1 - contrast + contrast * np.clip(_lattice_intensity(lattice, x, y), 0, 1.5)
        image = image + level * edge * texture
    return image


def _support(x: np.ndarray, y: np.ndarray, pixel_m: float, rng: np.random.Generator) -> np.ndarray:
    shape = x.shape
    image = _amorphous(shape, pixel_m, rng) * rng.uniform(0.2, 1.0)
    image *= np.clip(
        1 + rng.uniform(0, 0.5) * _smooth_field(shape, rng.uniform(5, 40), rng), 0, None
    )
    if rng.random() < 0.5:  # a hole onto vacuum
        image = image * (1 - _region(x, y, pixel_m, rng))
    return image


_SCENES = {"crystal": _crystal, "grains": _grains, "particles": _particles, "amorphous": _support}


def _contamination(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ny, nx = image.shape
    scale = float(np.percentile(image, 99)) or 1.0
    rows, cols = np.mgrid[0:ny, 0:nx].astype(np.float64)
    out = image.copy()
    for _ in range(int(rng.integers(0, 4))):
        sigma = rng.uniform(0.05, 0.6) * max(ny, nx)
        cy, cx = rng.uniform(-0.2, 1.2) * ny, rng.uniform(-0.2, 1.2) * nx
        blob = np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * sigma**2))
        out += rng.uniform(0.05, 0.6) * scale * blob
    if rng.random() < 0.5:
        out += (
            scale
            * rng.uniform(0, 0.3)
            * (rng.uniform(-1, 1) * rows / ny + rng.uniform(-1, 1) * cols / nx)
        )
    return np.clip(out, 0, None)


def _probe(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    core = rng.uniform(0.0, 1.2)
    out = ndimage.gaussian_filter(image, core, mode="reflect") if core > 0.05 else image
    if rng.random() < 0.7:
        tail = rng.uniform(0.0, 0.3)
        out = (1 - tail) * out + tail * ndimage.gaussian_filter(out, rng.uniform(3.0, 25.0))
    return np.asarray(out)


def domain_image(seed: int, shape: tuple[int, int] = (96, 96)) -> DomainImage:
    """One domain-randomised image (see module) from ``seed``; ``shape`` (ny, nx) pixels,
    each at least 16."""
    if not (
        len(shape) == 2 and all(isinstance(n, int | np.integer) and 16 <= n <= 4096 for n in shape)
    ):
        raise ConfigError(f"expected an image shape of two sizes in [16, 4096], got {shape!r}")
    if not (isinstance(seed, int | np.integer) and seed >= 0):
        raise ConfigError(f"expected a seed >= 0, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    shape = (int(shape[0]), int(shape[1]))
    pixel_m = _log_uniform(rng, *PIXEL_SIZE_RANGE_M)
    kind = str(KINDS[int(rng.integers(len(KINDS)))])
    x, y = _scan_positions(shape, pixel_m, rng)
    scene = _SCENES[kind](x, y, pixel_m, rng)
    if rng.random() < 0.5:
        scene = _contamination(scene, rng)
    clean = _probe(np.clip(scene, 0, None), rng)
    top = float(clean.max())
    if not top > 0:
        clean = clean + 1.0
        top = 1.0
    clean = clean / top
    dose: float | None = None
    measured = clean
    if rng.random() >= NOISE_FREE_FRACTION:
        dose = _log_uniform(rng, *IMAGE_DOSE_RANGE_E)
        measured = rng.poisson(clean * dose).astype(np.float64) / dose
        measured = measured + rng.normal(0.0, rng.uniform(0.0, 0.03), size=shape)
        measured = measured + rng.normal(0.0, rng.uniform(0.0, 0.01), size=(shape[0], 1))
    low, high = float(measured.min()), float(measured.max())
    if not high > low:  # a constant image: give it a faint gradient
        measured = measured + np.linspace(0, 1e-3, shape[1])[None, :]
        low, high = float(measured.min()), float(measured.max())
    return DomainImage(
        image=(measured - low) / (high - low),
        clean=(clean - low) / (high - low),
        kind=kind,
        pixel_m=pixel_m,
        dose_e=dose,
        seed=int(seed),
    )
