"""Specimen recipes for the twin, built with ase and abTEM potentials, cached on disk.

Recipes are YAML files in ``simulations/specimens/`` (or any path). A built `Specimen`
holds the projected potential of each slab (abTEM, Lobato parametrisation, infinite
projection) on a square grid, indexed ``[y, x]``, in V*m, and the atoms as ground truth.
Units are SI at this boundary; abTEM works in Ångström inside `_project`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import emauto
from emauto import optics
from emauto.config import load_yaml, validate_model
from emauto.errors import ConfigError

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SpecimenError(ConfigError):
    """A specimen recipe is invalid or cannot be built."""


# --------------------------------------------------------------------------- recipes


class AmorphousCarbonRecipe(BaseModel):
    """A periodic amorphous carbon film: random atoms at a density, none closer than a limit."""

    model_config = _STRICT
    kind: Literal["amorphous_carbon"] = "amorphous_carbon"
    extent_m: tuple[float, float] = Field(default=(10e-9, 10e-9))
    thickness_m: float = Field(default=3e-9, gt=0, le=100e-9)
    density_g_cm3: float = Field(default=2.0, gt=0.1, le=3.6)
    min_distance_m: float = Field(default=1.3e-10, ge=0, le=2e-10)
    seed: int = Field(default=0, ge=0)


class SrTiO3Recipe(BaseModel):
    """SrTiO3 viewed along [001], with Sr and O vacancies."""

    model_config = _STRICT
    kind: Literal["srtio3"] = "srtio3"
    cells: tuple[int, int, int] = (20, 20, 10)
    lattice_constant_m: float = Field(default=3.905e-10, gt=0)
    sr_vacancy_fraction: float = Field(default=0.02, ge=0, lt=1)
    o_vacancy_fraction: float = Field(default=0.02, ge=0, lt=1)
    seed: int = Field(default=0, ge=0)


class AuOnCarbonRecipe(BaseModel):
    """Au nanoparticles (fcc clusters, random orientations) on an amorphous carbon film."""

    model_config = _STRICT
    kind: Literal["au_on_carbon"] = "au_on_carbon"
    support: AmorphousCarbonRecipe = AmorphousCarbonRecipe(extent_m=(16e-9, 16e-9))
    n_particles: int = Field(default=5, ge=0, le=200)
    diameter_range_m: tuple[float, float] = (1.5e-9, 4e-9)
    seed: int = Field(default=0, ge=0)


SpecimenRecipe = Annotated[
    AmorphousCarbonRecipe | SrTiO3Recipe | AuOnCarbonRecipe, Field(discriminator="kind")
]


class _RecipeFile(BaseModel):
    model_config = _STRICT
    recipe: SpecimenRecipe


def recipe_dir() -> Path:
    """The folder of the built-in recipes (``simulations/specimens`` of the checkout)."""
    return Path(emauto.__file__).resolve().parents[1] / "simulations" / "specimens"


def load_recipe(spec: str | Path) -> tuple[str, BaseModel]:
    """A recipe by built-in name or YAML path; returns (name, recipe)."""
    path = Path(spec)
    if path.suffix not in (".yaml", ".yml"):
        path = recipe_dir() / f"{spec}.yaml"
        if not path.exists():
            known = sorted(p.stem for p in recipe_dir().glob("*.yaml"))
            raise SpecimenError(f"unknown specimen {spec!r}; built-in recipes: {known}")
    try:
        wrapped = load_yaml(path, _RecipeFile)
    except ConfigError as exc:
        raise SpecimenError(str(exc)) from exc
    return path.stem, wrapped.recipe


# --------------------------------------------------------------------------- atoms


def _amorphous_carbon(recipe: AmorphousCarbonRecipe, rng: np.random.Generator) -> Any:
    from ase import Atoms
    from scipy.spatial import cKDTree

    lx, ly = (v * 1e10 for v in recipe.extent_m)
    lz = recipe.thickness_m * 1e10
    n_atoms = round(recipe.density_g_cm3 * 1e-24 * lx * ly * lz / (12.011 * 1.66053906660e-24))
    d_min = recipe.min_distance_m * 1e10
    box = np.array([lx, ly, lz])
    positions = rng.uniform(0, 1, size=(n_atoms, 3)) * box
    for _ in range(200):  # resample atoms that are too close until none are
        tree = cKDTree(positions, boxsize=[lx, ly, lz + 10 * d_min])
        pairs = tree.query_pairs(d_min, output_type="ndarray")
        if len(pairs) == 0:
            break
        bad = np.unique(pairs[:, 1])
        positions[bad] = rng.uniform(0, 1, size=(len(bad), 3)) * box
    else:
        raise SpecimenError("could not place the carbon atoms at this density and distance")
    return Atoms("C" * n_atoms, positions=positions, cell=[lx, ly, lz], pbc=[True, True, False])


def _srtio3(recipe: SrTiO3Recipe, rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    from ase.spacegroup import crystal

    a = recipe.lattice_constant_m * 1e10
    cell = crystal(
        ["Sr", "Ti", "O"], basis=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)],
        spacegroup=221, cellpar=[a, a, a, 90, 90, 90],
    )  # fmt: skip
    atoms = cell * recipe.cells
    symbols = np.array(atoms.get_chemical_symbols())
    remove = np.zeros(len(atoms), dtype=bool)
    for symbol, fraction in (("Sr", recipe.sr_vacancy_fraction), ("O", recipe.o_vacancy_fraction)):
        sites = np.flatnonzero(symbols == symbol)
        chosen = rng.choice(sites, size=round(fraction * len(sites)), replace=False)
        remove[chosen] = True
    vacancies = atoms.positions[remove] * 1e-10
    del atoms[np.flatnonzero(remove)]
    return atoms, vacancies


def _au_on_carbon(recipe: AuOnCarbonRecipe, rng: np.random.Generator) -> tuple[Any, np.ndarray]:
    from ase.cluster import FaceCenteredCubic

    film = _amorphous_carbon(recipe.support, rng)
    lx, ly, lz = (float(v) for v in film.cell.lengths())
    particles = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(recipe.n_particles):
        diameter = rng.uniform(*recipe.diameter_range_m) * 1e10
        layers = max(round(diameter / 2 / 2.04), 1)
        cluster = FaceCenteredCubic("Au", [(1, 0, 0), (1, 1, 0), (1, 1, 1)],
                                    [layers, layers, layers], latticeconstant=4.078)  # fmt: skip
        if rng.uniform() < 0.5:  # the others keep [001] or get a random orientation
            cluster.rotate(rng.uniform(0, 360), "z", center="COP")
            cluster.rotate(rng.uniform(0, 360), "x", center="COP")
        cluster.center()
        size = float(np.ptp(cluster.positions[:, :2], axis=0).max())
        for _attempt in range(100):
            x, y = rng.uniform(0, lx), rng.uniform(0, ly)
            if all(math.hypot(x - px, y - py) > (size + ps) / 2 + 5 for px, py, ps in placed):
                break
        else:
            continue
        cluster.positions -= cluster.positions.mean(axis=0)
        cluster.positions += [x, y, lz - cluster.positions[:, 2].min() + 2.0]
        placed.append((x, y, size))
        particles.append(cluster)
    atoms = film.copy()
    for cluster in particles:
        atoms += cluster
    top = float(atoms.positions[:, 2].max()) + 2.0
    atoms.set_cell([lx, ly, max(top, lz)])
    atoms.positions[:, :2] %= [lx, ly]
    return atoms, np.array(placed, dtype=np.float64).reshape(-1, 3) * 1e-10


def build_atoms(recipe: BaseModel) -> tuple[Any, dict[str, np.ndarray]]:
    """The ase.Atoms of a recipe (Å, abTEM's unit) and its ground-truth extras (SI)."""
    rng = np.random.default_rng(getattr(recipe, "seed", 0))
    if isinstance(recipe, AmorphousCarbonRecipe):
        return _amorphous_carbon(recipe, rng), {}
    if isinstance(recipe, SrTiO3Recipe):
        atoms, vacancies = _srtio3(recipe, rng)
        return atoms, {"vacancy_positions_m": vacancies}
    if isinstance(recipe, AuOnCarbonRecipe):
        atoms, particles = _au_on_carbon(recipe, rng)
        return atoms, {"particles_xy_size_m": particles}
    raise SpecimenError(f"unsupported recipe {type(recipe).__name__}")


# --------------------------------------------------------------------------- built specimen


@dataclass(frozen=True)
class Specimen:
    """A built specimen: projected potential slabs ([y, x], V*m) and atoms (m)."""

    name: str
    recipe: BaseModel
    extent_m: tuple[float, float]
    thickness_m: float
    sampling_m: float
    slab_thickness_m: float
    projected_potential: np.ndarray
    positions_m: np.ndarray
    numbers: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def gpts(self) -> tuple[int, int]:
        """(ny, nx) of the potential grid."""
        return self.projected_potential.shape[-2], self.projected_potential.shape[-1]

    def phase_shift(self, energy_eV: float) -> np.ndarray:
        """Phase (rad, float32) each slab imparts: sigma(E) times the projected potential."""
        return (optics.interaction_parameter(energy_eV) * self.projected_potential).astype(
            np.float32
        )

    def transmission(self, energy_eV: float) -> np.ndarray:
        """Transmission functions exp(i phase), complex64, (n_slabs, ny, nx)."""
        return np.exp(1j * self.phase_shift(energy_eV)).astype(np.complex64)


def _project(atoms: Any, sampling_m: float, slab_A: float) -> tuple[np.ndarray, float]:
    """abTEM projected potential, [x, y] -> [y, x] and V*Å -> V*m; returns (array, sampling)."""
    import abtem

    lx, ly = (float(v) for v in atoms.cell.lengths()[:2])
    gpts = (max(round(lx / (sampling_m * 1e10)), 8), max(round(ly / (sampling_m * 1e10)), 8))
    potential = abtem.Potential(
        atoms, gpts=gpts, slice_thickness=slab_A, projection="infinite",
        parametrization="lobato",
    )  # fmt: skip
    built: Any = potential.build().compute(scheduler="threads", progress_bar=False)
    array = np.ascontiguousarray(np.swapaxes(built.array, -1, -2) * 1e-10, dtype=np.float32)
    return array, lx / gpts[0] * 1e-10


def load_specimen(
    spec: str | Path,
    *,
    sampling_m: float,
    n_slabs: int | None = None,
    slab_thickness_m: float | None = None,
    cache_dir: Path | None = None,
) -> Specimen:
    """Build (or load from the cache) a specimen on a grid of ``sampling_m`` pixels.

    Slabs: ``n_slabs`` equal slabs through the thickness (default 1: the projected
    potential), or slabs of ``slab_thickness_m`` (multislice references).
    """
    name, recipe = load_recipe(spec)
    atoms, extras = build_atoms(recipe)
    thickness_A = float(atoms.cell.lengths()[2])
    if slab_thickness_m is not None:
        count = max(math.ceil(thickness_A / (slab_thickness_m * 1e10) - 1e-9), 1)
    else:
        count = n_slabs or 1
    slab_A = thickness_A / count
    key = hashlib.sha256(
        json.dumps(
            [CACHE_FORMAT, recipe.model_dump(mode="json"), sampling_m, count,
             _abtem_version()], sort_keys=True,
        ).encode()
    ).hexdigest()[:20]  # fmt: skip
    folder = Path(cache_dir or os.environ.get("EMAUTO_CACHE_DIR") or _default_cache())
    path = folder / f"{name}-{key}.npz"
    array, sampling = _read_cache(path, key)
    if array is None:
        started = time.perf_counter()
        log.info("building specimen %s (%d atoms) ...", name, len(atoms))
        array, sampling = _project(atoms, sampling_m, slab_A)
        _write_cache(path, key, array, sampling)
        log.info("built %s in %.1f s", name, time.perf_counter() - started)
    lx, ly = (float(v) * 1e-10 for v in atoms.cell.lengths()[:2])
    return Specimen(
        name=name,
        recipe=recipe,
        extent_m=(lx, ly),
        thickness_m=thickness_A * 1e-10,
        sampling_m=sampling,
        slab_thickness_m=slab_A * 1e-10,
        projected_potential=array,
        positions_m=atoms.positions * 1e-10,
        numbers=atoms.numbers.copy(),
        extras=extras,
    )


def _abtem_version() -> str:
    import abtem

    return str(abtem.__version__)


def _default_cache() -> Path:
    return Path.home() / ".cache" / "emauto" / "specimens"


def _read_cache(path: Path, key: str) -> tuple[np.ndarray | None, float]:
    if not path.exists():
        return None, 0.0
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                raise ValueError("cache key mismatch")
            array = np.asarray(data["potential"], dtype=np.float32)
            sampling = float(data["sampling_m"])
        if array.ndim != 3 or not np.all(np.isfinite(array)):
            raise ValueError(f"bad potential array {array.shape}")
        return array, sampling
    except Exception as exc:  # corrupt files are rebuilt, never trusted
        log.warning("specimen cache %s is unreadable (%s); rebuilding it", path, exc)
        return None, 0.0


def _write_cache(path: Path, key: str, array: np.ndarray, sampling: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".npz", delete=False) as handle:
        np.savez(handle, key=np.array(key), potential=array, sampling_m=np.array(sampling))
    Path(handle.name).replace(path)


def recipe_from_data(data: Any, source: str) -> BaseModel:
    """Validate a recipe given as a mapping (``{"recipe": {...}}``)."""
    try:
        return validate_model(data, _RecipeFile, source=source).recipe
    except ConfigError as exc:
        raise SpecimenError(str(exc)) from exc
