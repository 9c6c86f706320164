"""Specimen recipes for the twin, built with ase and abTEM potentials, cached on disk.

A recipe (pydantic model, YAML file in ``emauto/drivers/sim/recipes/`` or any path)
describes a specimen; `build_atoms` turns it into atoms and `load_specimen` into a
`Specimen`: the projected potential of each slab on a square grid, computed by abTEM (Lobato
parametrisation, infinite projection), plus the atoms and other ground truth.

Units and axes
    SI at this module's boundary (metres, volts, electronvolts). abTEM and ase work in
    Ångström; the conversion happens only here. abTEM stores the projected potential of a
    slice in V·Å; a `Specimen` holds it in V·m, and its phase is that times
    `emauto.optics.interaction_parameter` (abTEM's sigma, in rad/(V·m)). emauto arrays are
    indexed ``[y, x]`` (row = y, column = x); abTEM's are ``[x, y]`` and are transposed when
    they leave abTEM.
    z is the beam direction: the beam enters at z = 0 (abTEM's slice 0) and leaves at
    z = ``thickness_m``.

Grid
    The potential is periodic in x and y. For amorphous carbon (and the carbon support of
    ``au_on_carbon``) the cell is resized to the nearest whole number of pixels, so the
    pixel is exactly the requested ``sampling_m``; the resized recipe is `Specimen.recipe`
    (so an amorphous film's atoms depend on the sampling). A crystal keeps a whole number
    of unit cells and square pixels of ``extent / gpts``, close to the request;
    `Specimen.sampling_m` is always the actual pixel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from numbers import Integral, Real
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import numpy as np
import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, model_validator

from emauto import optics
from emauto.errors import ConfigError
from emauto.units import StrictModel

log = logging.getLogger(__name__)

#: Bump when the cache file layout or the way specimens are built changes.
CACHE_FORMAT = 2

#: The most atoms a recipe may ask for (memory and build-time guard).
MAX_ATOMS = 2_000_000

_ATOMIC_MASS_UNIT_G = 1.66053906660e-24
_CARBON_MOLAR_MASS = 12.011
_AU_CARBON_GAP_A = 2.5  # Au particle bottom above the top of the carbon film (Å)
_TOP_VACUUM_A = 1.5  # vacuum above the highest Au atom (Å)


class SpecimenError(ConfigError):
    """A specimen recipe is invalid, or a specimen cannot be built with these arguments."""


# --------------------------------------------------------------------------- recipes

Length = Annotated[float, Field(gt=0, le=1e-6)]
"""A length in m, positive and at most 1 µm."""


class CarbonFilm(StrictModel):
    """An amorphous carbon film: random atoms at a density, no two closer than a limit."""

    extent_m: tuple[Length, Length] = Field(
        default=(10e-9, 10e-9), description="(Lx, Ly) of the periodic cell, m"
    )
    thickness_m: float = Field(default=3e-9, gt=0, le=100e-9, description="film thickness, m")
    density_g_cm3: float = Field(default=2.0, gt=0.1, le=3.6, description="mass density, g/cm³")
    min_distance_m: float = Field(
        default=1.3e-10, ge=0, le=2e-10, description="no two atoms closer than this, m"
    )

    @property
    def n_atoms(self) -> int:
        """Number of carbon atoms: density x volume."""
        volume_cm3 = self.extent_m[0] * self.extent_m[1] * self.thickness_m * 1e6
        return round(self.density_g_cm3 * volume_cm3 / (_CARBON_MOLAR_MASS * _ATOMIC_MASS_UNIT_G))

    @model_validator(mode="after")
    def _feasible(self) -> CarbonFilm:
        number_density_m3 = self.density_g_cm3 * 1e6 / (_CARBON_MOLAR_MASS * _ATOMIC_MASS_UNIT_G)
        packing = number_density_m3 * math.pi * self.min_distance_m**3 / 6
        if packing > 0.3:
            raise ValueError(
                f"min_distance_m={self.min_distance_m:g} is too large for "
                f"density_g_cm3={self.density_g_cm3:g}: hard-sphere packing fraction "
                f"{packing:.2f}, expected at most 0.30"
            )
        if self.n_atoms > MAX_ATOMS:
            raise ValueError(f"the film would hold {self.n_atoms} atoms, expected <= {MAX_ATOMS}")
        return self


class AmorphousCarbonRecipe(CarbonFilm):
    """A periodic amorphous carbon film (default 10 nm x 10 nm x 3 nm, 2.0 g/cm³)."""

    kind: Literal["amorphous_carbon"] = "amorphous_carbon"
    seed: int = Field(default=0, ge=0)


class SrTiO3Recipe(StrictModel):
    """SrTiO3 viewed along [001], tiled to whole unit cells, with Sr and O vacancies.

    The cell is ``ceil(extent / a)`` unit cells in x and y and ``ceil(thickness / a)`` in z
    (at least the requested size; whole cells keep it periodic).
    """

    kind: Literal["srtio3"] = "srtio3"
    extent_m: tuple[Length, Length] = Field(default=(8e-9, 8e-9), description="(Lx, Ly), m")
    thickness_m: float = Field(default=10e-9, gt=0, le=100e-9, description="thickness, m")
    lattice_constant_m: float = Field(default=3.905e-10, gt=1e-10, lt=1e-9)
    sr_vacancy_fraction: float = Field(default=0.02, ge=0, le=1)
    o_vacancy_fraction: float = Field(default=0.02, ge=0, le=1)
    seed: int = Field(default=0, ge=0)

    @property
    def cells(self) -> tuple[int, int, int]:
        """Unit cells along x, y, z."""
        a = self.lattice_constant_m
        lx, ly = self.extent_m
        return _whole_cells(lx, a), _whole_cells(ly, a), _whole_cells(self.thickness_m, a)

    @model_validator(mode="after")
    def _size(self) -> SrTiO3Recipe:
        n_atoms = 5 * math.prod(self.cells)
        if n_atoms > MAX_ATOMS:
            raise ValueError(f"the crystal would hold {n_atoms} atoms, expected <= {MAX_ATOMS}")
        return self


def _whole_cells(length: float, a: float) -> int:
    return max(math.ceil(length / a - 1e-6), 1)


def _wrap(values: np.ndarray, length: float) -> np.ndarray:
    """Values folded into [0, length) (``%`` alone can round up to ``length``)."""
    folded = np.mod(values, length)
    return np.where(folded >= length, 0.0, folded)


class AuOnCarbonRecipe(StrictModel):
    """Au nanoparticles (fcc, spheres or truncated octahedra) on an amorphous carbon film.

    Diameters are drawn uniformly from ``diameter_range_m``; a fraction
    ``zone_axis_110_fraction`` of the particles is turned onto a [110] zone axis (parallel
    to z, random rotation about z), the others get uniformly random orientations. Particle
    centres are random and non-overlapping in xy (periodic, with ``min_gap_m`` between
    particles). The particles sit on the beam-exit surface of the film (larger z).
    """

    kind: Literal["au_on_carbon"] = "au_on_carbon"
    support: CarbonFilm = CarbonFilm(extent_m=(20e-9, 20e-9))
    n_particles: int = Field(default=6, ge=0, le=200)
    diameter_range_m: tuple[float, float] = Field(
        default=(1.5e-9, 4e-9), description="(min, max) particle diameter, m"
    )
    shape: Literal["sphere", "truncated_octahedron", "mixed"] = "mixed"
    zone_axis_110_fraction: float = Field(default=0.5, ge=0, le=1)
    lattice_constant_m: float = Field(default=4.078e-10, gt=1e-10, lt=1e-9)
    min_gap_m: float = Field(default=0.5e-9, ge=0, le=100e-9)
    seed: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fits(self) -> AuOnCarbonRecipe:
        low, high = self.diameter_range_m
        if not 0.5e-9 <= low <= high <= 20e-9:
            raise ValueError(
                f"diameter_range_m must be (min, max) with 0.5e-9 <= min <= max <= 20e-9 m, "
                f"got {self.diameter_range_m}"
            )
        side = min(self.support.extent_m)
        if self.n_particles and high + self.min_gap_m >= side:
            raise ValueError(
                f"a {high:g} m particle plus the {self.min_gap_m:g} m gap does not fit in the "
                f"{side:g} m support"
            )
        return self


AnyRecipe = AmorphousCarbonRecipe | SrTiO3Recipe | AuOnCarbonRecipe
SpecimenRecipe = Annotated[AnyRecipe, Field(discriminator="kind")]
"""Any specimen recipe, told apart by its ``kind``."""

_RECIPE_ADAPTER: TypeAdapter[AnyRecipe] = TypeAdapter(cast(Any, SpecimenRecipe))
_KINDS = ("amorphous_carbon", "srtio3", "au_on_carbon")


class _RecipeFile(StrictModel):
    """A recipe YAML file: ``recipe:`` and an optional ``description:``."""

    description: str = ""
    recipe: SpecimenRecipe


def recipe_dir() -> Path:
    """The folder of the built-in recipes, ``emauto/drivers/sim/recipes`` (package data)."""
    return Path(str(resources.files("emauto.drivers.sim") / "recipes"))


def builtin_recipes() -> list[str]:
    """Names of the built-in recipes (file stems in `recipe_dir`)."""
    return sorted(path.stem for path in recipe_dir().glob("*.yaml"))


def _format_errors(exc: ValidationError, source: str, prefix: tuple[str, ...]) -> SpecimenError:
    """One readable error: the file, each bad field's path, what was expected and what came."""
    problems = []
    for error in exc.errors():
        loc = [*prefix, *(str(part) for part in error["loc"])]
        # a discriminated union adds its tag to the path ("recipe.srtio3.cells"): drop it
        loc = [part for part in loc if part not in _KINDS]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append("kind")
        where = ".".join(loc) or "(top level)"
        got = repr(error.get("input"))
        got = got if len(got) <= 80 else got[:77] + "..."
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"  {where}: {message} (got {got})")
    return SpecimenError(f"{source}: invalid specimen recipe:\n" + "\n".join(problems))


def parse_recipe(data: Any, source: str = "<recipe>") -> AnyRecipe:
    """Validate a recipe mapping (with ``kind``); errors name ``source`` and the field."""
    if isinstance(data, BaseModel):
        data = data.model_dump()
    try:
        return _RECIPE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _format_errors(exc, source, ()) from None


def _recipe_path(spec: str | Path) -> Path:
    path = Path(spec)
    if isinstance(spec, Path) or path.suffix in (".yaml", ".yml") or len(path.parts) > 1:
        return path
    candidate = recipe_dir() / f"{spec}.yaml"
    if not candidate.exists():
        raise SpecimenError(
            f"unknown specimen {str(spec)!r}: expected a built-in recipe {builtin_recipes()} "
            f"or a path to a .yaml file"
        )
    return candidate


def load_recipe(spec: str | Path) -> AnyRecipe:
    """A recipe by built-in name (``"srtio3"``) or from a YAML file path.

    The file holds ``recipe: {kind: ..., ...}``; a bad file raises `SpecimenError` naming
    the file, the bad field (e.g. ``recipe.thickness_m``) and what was expected.
    """
    return _resolve(spec)[1]


def _resolve(spec: str | Path | BaseModel) -> tuple[str, AnyRecipe]:
    """(name, recipe) of a built-in name, a YAML path or a recipe object."""
    if isinstance(spec, BaseModel):
        return str(getattr(spec, "kind", "specimen")), parse_recipe(spec)
    if not isinstance(spec, str | Path):
        raise SpecimenError(
            f"expected a recipe name, a YAML path or a recipe, got {type(spec).__name__}"
        )
    path = _recipe_path(spec)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecimenError(f"{path}: no such specimen recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecimenError(f"{path}: cannot read the recipe file: {exc}") from None
    except yaml.YAMLError as exc:
        raise SpecimenError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise SpecimenError(
            f"{path}: expected a mapping with a 'recipe:' key (as in emauto/drivers/sim/recipes), "
            f"got {type(raw).__name__}"
        )
    try:
        wrapped = _RecipeFile.model_validate(raw)
    except ValidationError as exc:
        raise _format_errors(exc, str(path), ()) from None
    return path.stem, wrapped.recipe


# --------------------------------------------------------------------------- atoms


def _carbon_positions(film: CarbonFilm, rng: np.random.Generator) -> np.ndarray:
    """Carbon positions (n, 3) in Å, periodic in x and y, none closer than the limit.

    Random sequential resampling: atoms are placed uniformly; of every pair closer than
    ``min_distance_m`` one atom is drawn again, until no pair is left (a few tens of
    rounds at carbon densities, each a cKDTree over the film).
    """
    from scipy.spatial import cKDTree

    lx, ly = (v * 1e10 for v in film.extent_m)
    lz = film.thickness_m * 1e10
    d_min = film.min_distance_m * 1e10
    box = np.array([lx, ly, lz])
    positions = _draw(rng, film.n_atoms, box)
    if d_min == 0 or len(positions) < 2:
        return positions
    tree_box = [lx, ly, lz + 2 * d_min]  # periodic in x and y; the z gap prevents wrapping
    pairs = cKDTree(positions, boxsize=tree_box).query_pairs(d_min, output_type="ndarray")
    redraw = np.unique(pairs[:, 1])
    for _ in range(2000):
        if redraw.size == 0:
            return positions
        positions[redraw] = _draw(rng, redraw.size, box)
        tree = cKDTree(positions, boxsize=tree_box)
        neighbours = tree.query_ball_point(positions[redraw], d_min, return_length=True)
        redraw = redraw[neighbours > 1]  # each atom finds itself
    raise SpecimenError(
        f"could not place {film.n_atoms} carbon atoms at {film.density_g_cm3} g/cm³ with "
        f"min_distance_m={film.min_distance_m:g}"
    )


def _draw(rng: np.random.Generator, n: int, box: np.ndarray) -> np.ndarray:
    """n uniform points (n, 3) in [0, box)."""
    points = rng.uniform(0.0, 1.0, size=(n, 3)) * box
    return np.where(points >= box, 0.0, points)


def _amorphous_carbon(recipe: AmorphousCarbonRecipe) -> tuple[Any, dict[str, np.ndarray]]:
    from ase import Atoms

    positions = _carbon_positions(recipe, np.random.default_rng(recipe.seed))
    lx, ly = (v * 1e10 for v in recipe.extent_m)
    atoms = Atoms(
        numbers=np.full(len(positions), 6),
        positions=positions,
        cell=[lx, ly, recipe.thickness_m * 1e10],
        pbc=[True, True, False],
    )
    return atoms, {}


def _srtio3(recipe: SrTiO3Recipe) -> tuple[Any, dict[str, np.ndarray]]:
    from ase.spacegroup import crystal

    rng = np.random.default_rng(recipe.seed)
    a = recipe.lattice_constant_m * 1e10
    unit = crystal(
        ["Sr", "Ti", "O"],
        basis=[(0.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, 0.5, 0.0)],
        spacegroup=221,
        cellpar=[a, a, a, 90, 90, 90],
    )
    cells = recipe.cells
    atoms = unit.repeat(cells)
    atoms.pbc = [True, True, False]
    remove = np.zeros(len(atoms), dtype=bool)
    for number, fraction in ((38, recipe.sr_vacancy_fraction), (8, recipe.o_vacancy_fraction)):
        sites = np.flatnonzero(atoms.numbers == number)
        chosen = rng.choice(sites, size=round(fraction * len(sites)), replace=False)
        remove[chosen] = True
    extras = {
        "vacancy_positions_m": atoms.positions[remove] * 1e-10,
        "vacancy_numbers": atoms.numbers[remove].astype(np.int64),
        "unit_cells": np.array(cells, dtype=np.int64),
    }
    del atoms[np.flatnonzero(remove)]
    return atoms, extras


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (3, 3), from a normalised Gaussian quaternion."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _zone_110_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation taking the crystal [110] onto z, then a random turn about z."""
    s = 1 / math.sqrt(2)
    # rows: where crystal x, y, z go; [1, 1, 0] / sqrt(2) -> [0, 0, 1]
    align = np.array([[s, -s, 0.0], [0.0, 0.0, -1.0], [s, s, 0.0]])
    angle = rng.uniform(0, 2 * math.pi)
    c, t = math.cos(angle), math.sin(angle)
    about_z = np.array([[c, -t, 0.0], [t, c, 0.0], [0.0, 0.0, 1.0]])
    return about_z @ align


def _au_particle(shape: str, diameter_A: float, a: float) -> np.ndarray:
    """Atom positions (n, 3) in Å of an fcc particle centred on the origin, [001] along z."""
    radius = diameter_A / 2
    if shape == "sphere":
        from ase.build import bulk

        n = math.ceil(radius / a) + 1
        block = bulk("Au", "fcc", a=a, cubic=True).repeat((2 * n, 2 * n, 2 * n))
        positions = block.positions - n * a  # an atom sits on the origin
        return np.asarray(positions[np.linalg.norm(positions, axis=1) <= radius])
    from ase.cluster import FaceCenteredCubic

    # a regular truncated octahedron: {100} faces at 0.894 R, {111} faces at 0.775 R
    layers = [round(0.894 * radius / (a / 2)) + 1, round(0.775 * radius / (a / math.sqrt(3))) + 1]
    cluster = FaceCenteredCubic("Au", [(1, 0, 0), (1, 1, 1)], layers, latticeconstant=a)
    positions = cluster.positions
    return np.asarray(positions - positions.mean(axis=0))


def _au_on_carbon(recipe: AuOnCarbonRecipe) -> tuple[Any, dict[str, np.ndarray]]:
    from ase import Atoms

    film_rng, particle_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(recipe.seed).spawn(2)
    )
    carbon = _carbon_positions(recipe.support, film_rng)
    lx, ly = (v * 1e10 for v in recipe.support.extent_m)
    top = recipe.support.thickness_m * 1e10
    a = recipe.lattice_constant_m * 1e10
    n = recipe.n_particles
    diameters = particle_rng.uniform(*recipe.diameter_range_m, size=n) * 1e10
    if recipe.shape == "mixed":
        octahedra = particle_rng.uniform(size=n) < 0.5
    else:
        octahedra = np.full(n, recipe.shape == "truncated_octahedron")
    on_zone = np.zeros(n, dtype=bool)
    on_zone[particle_rng.permutation(n)[: round(recipe.zone_axis_110_fraction * n)]] = True
    gap = recipe.min_gap_m * 1e10
    clusters: list[np.ndarray] = []
    centres = np.zeros((n, 3))
    radii = np.zeros(n)
    rotations = np.zeros((n, 3, 3))
    for i in range(n):
        shape = "truncated_octahedron" if octahedra[i] else "sphere"
        local = _au_particle(shape, float(diameters[i]), a)
        rotation = (
            _zone_110_rotation(particle_rng) if on_zone[i] else _random_rotation(particle_rng)
        )
        local = local @ rotation.T
        radius = float(np.linalg.norm(local, axis=1).max())
        for _attempt in range(5000):
            xy = particle_rng.uniform(0.0, 1.0, size=2) * [lx, ly]
            delta = centres[:i, :2] - xy
            delta -= np.round(delta / [lx, ly]) * [lx, ly]  # periodic minimum image
            if np.all(np.hypot(delta[:, 0], delta[:, 1]) > radii[:i] + radius + gap):
                break
        else:
            raise SpecimenError(
                f"could not place {n} Au particles without overlap on the "
                f"{lx / 10:g} nm x {ly / 10:g} nm support: fewer or smaller particles, or a "
                f"larger support"
            )
        z = top + _AU_CARBON_GAP_A - float(local[:, 2].min())
        centres[i] = [xy[0], xy[1], z]
        radii[i] = radius
        rotations[i] = rotation
        clusters.append(local + centres[i])
    gold = np.concatenate(clusters) if clusters else np.zeros((0, 3))
    gold[:, 0], gold[:, 1] = _wrap(gold[:, 0], lx), _wrap(gold[:, 1], ly)
    height = max(top, float(gold[:, 2].max()) + _TOP_VACUUM_A) if len(gold) else top
    atoms = Atoms(
        numbers=np.concatenate([np.full(len(carbon), 6), np.full(len(gold), 79)]),
        positions=np.concatenate([carbon, gold]),
        cell=[lx, ly, height],
        pbc=[True, True, False],
    )
    extras = {
        "particle_centres_m": centres * 1e-10,
        "particle_diameters_m": 2 * radii * 1e-10,
        "particle_zone_110": on_zone,
        "particle_truncated_octahedron": octahedra,
        "particle_rotations": rotations,
        "particle_atom_counts": np.array([len(c) for c in clusters], dtype=np.int64),
    }
    return atoms, extras


def build_atoms(recipe: SpecimenRecipe | str | Path) -> Any:
    """The `ase.Atoms` of a recipe (positions in Å, ase's unit; cell periodic in x and y).

    Ground truth in SI units goes to ``atoms.info["extras"]`` (a dict of arrays):
    SrTiO3 ``vacancy_positions_m`` (n, 3), ``vacancy_numbers``, ``unit_cells``;
    au_on_carbon ``particle_centres_m`` (n, 3), ``particle_diameters_m`` (twice the largest
    atom distance from the centre), ``particle_zone_110``, ``particle_truncated_octahedron``,
    ``particle_rotations`` (n, 3, 3; crystal axes -> specimen axes), ``particle_atom_counts``
    (Au atoms follow the carbon atoms, particle by particle).
    """
    if isinstance(recipe, str | Path):
        recipe = load_recipe(recipe)
    if isinstance(recipe, AmorphousCarbonRecipe):
        atoms, extras = _amorphous_carbon(recipe)
    elif isinstance(recipe, SrTiO3Recipe):
        atoms, extras = _srtio3(recipe)
    elif isinstance(recipe, AuOnCarbonRecipe):
        atoms, extras = _au_on_carbon(recipe)
    else:
        raise SpecimenError(f"expected a specimen recipe, got {type(recipe).__name__}")
    # every atom inside the cell: abTEM slices by z and would drop atoms outside it
    positions = atoms.positions
    cell = atoms.cell.lengths()
    if len(atoms) and (positions.min() < 0 or np.any(positions >= cell)):
        raise SpecimenError(f"{recipe.kind}: atoms outside the cell {cell} Å (a bug)")
    atoms.info["extras"] = extras
    return atoms


# --------------------------------------------------------------------------- built specimen


@dataclass(frozen=True)
class Specimen:
    """A built specimen: projected-potential slabs (``[y, x]``, V·m) and its atoms (m).

    ``recipe`` is the recipe as built (seed override applied, an amorphous cell resized to
    whole pixels), so ``build_atoms(specimen.recipe)`` gives these atoms again. Arrays are
    read-only.
    """

    name: str
    recipe: AnyRecipe
    extent_m: tuple[float, float]  # (Lx, Ly) of the periodic cell
    thickness_m: float
    sampling_m: float  # square pixel of the potential
    slab_thickness_m: float
    projected_potential: np.ndarray  # float32 (n_slabs, ny, nx), V·m, [y, x]
    positions_m: np.ndarray  # float64 (n_atoms, 3): x, y, z
    numbers: np.ndarray  # int64 (n_atoms,): atomic numbers
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def gpts(self) -> tuple[int, int]:
        """(ny, nx) of the potential grid."""
        return int(self.projected_potential.shape[-2]), int(self.projected_potential.shape[-1])

    @property
    def n_slabs(self) -> int:
        """Number of slabs through the thickness."""
        return int(self.projected_potential.shape[0])

    def phase_shift(self, energy_eV: float) -> np.ndarray:
        """Phase (rad, float32, (n_slabs, ny, nx)) each slab imparts: sigma(E) x potential."""
        sigma = np.float32(optics.interaction_parameter(_check_energy(energy_eV)))
        return sigma * self.projected_potential

    def transmission(self, energy_eV: float) -> np.ndarray:
        """Transmission functions exp(i phase), complex64, (n_slabs, ny, nx), [y, x]."""
        return np.exp(1j * self.phase_shift(energy_eV)).astype(np.complex64, copy=False)


def _check_energy(energy_eV: float) -> float:
    """A positive, finite beam energy (eV), or `SpecimenError`."""
    if not (
        isinstance(energy_eV, Real)
        and not isinstance(energy_eV, bool)
        and math.isfinite(energy_eV)
        and energy_eV > 0
    ):
        raise SpecimenError(f"expected a positive, finite energy in eV, got {energy_eV!r}")
    return float(energy_eV)


# --------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class _Grid:
    nx: int
    ny: int
    sampling_m: float
    extent_m: tuple[float, float]


def _on_grid(recipe: AnyRecipe, sampling_m: float) -> AnyRecipe:
    """The recipe with an amorphous cell resized to a whole number of pixels."""

    def snapped(film: CarbonFilm) -> dict[str, Any]:
        pixels = [round(length / sampling_m) for length in film.extent_m]
        if min(pixels) < 4:
            raise SpecimenError(
                f"sampling_m={sampling_m:g} is too coarse for the {film.extent_m} m cell: "
                f"expected at least 4 pixels across"
            )
        return {**film.model_dump(), "extent_m": tuple(n * sampling_m for n in pixels)}

    if isinstance(recipe, AmorphousCarbonRecipe):
        return parse_recipe(snapped(recipe))
    if isinstance(recipe, AuOnCarbonRecipe):
        return parse_recipe({**recipe.model_dump(), "support": snapped(recipe.support)})
    return recipe


def _grid(recipe: AnyRecipe, sampling_m: float) -> _Grid:
    """The potential grid of a recipe already put `_on_grid`: square pixels, whole cells."""
    if isinstance(recipe, SrTiO3Recipe):
        cx, cy, _ = recipe.cells
        a = recipe.lattice_constant_m
        g = math.gcd(cx, cy)  # nx : ny = cx : cy keeps the pixels square
        k = max(round(cx * a / sampling_m / (cx // g)), 1)
        nx, ny = k * (cx // g), k * (cy // g)
        if min(nx, ny) < 4:
            raise SpecimenError(f"sampling_m={sampling_m:g} is too coarse for the crystal")
        return _Grid(nx, ny, cx * a / nx, (cx * a, cy * a))
    film = recipe.support if isinstance(recipe, AuOnCarbonRecipe) else recipe
    lx, ly = film.extent_m
    nx, ny = round(lx / sampling_m), round(ly / sampling_m)
    return _Grid(nx, ny, lx / nx, (lx, ly))


def _project(atoms: Any, grid: _Grid, n_slabs: int, progress: bool) -> np.ndarray:
    """abTEM projected potential of each slab: float32 (n_slabs, ny, nx) in V·m, [y, x]."""
    import abtem

    thickness_A = float(atoms.cell.lengths()[2])
    potential = abtem.Potential(
        atoms,
        gpts=(grid.nx, grid.ny),  # abTEM's grid is (x, y)
        slice_thickness=(thickness_A / n_slabs,) * n_slabs,  # exactly n_slabs equal slabs
        projection="infinite",
        parametrization="lobato",
        device="cpu",
    )
    built: Any = potential.build(lazy=True).compute(
        scheduler="threads", num_workers=min(os.cpu_count() or 1, 4), progress_bar=progress
    )
    array = np.asarray(built.array)  # (n_slabs, nx, ny), V·Å
    expected = (n_slabs, grid.nx, grid.ny)
    if array.shape != expected:
        raise SpecimenError(f"abTEM returned a potential of shape {array.shape}, not {expected}")
    # abTEM arrays are [x, y]; emauto's are [y, x]: swap the last two axes. V·Å -> V·m.
    return np.ascontiguousarray(np.swapaxes(array, -1, -2) * 1e-10, dtype=np.float32)


def _slab_count(thickness_m: float, n_slabs: int | None, slab_thickness_m: float | None) -> int:
    if n_slabs is not None:
        return n_slabs
    if slab_thickness_m is not None:
        return max(math.ceil(thickness_m / slab_thickness_m - 1e-6), 1)
    return 1


# --------------------------------------------------------------------------- load


def load_specimen(
    spec: str | Path | SpecimenRecipe,
    *,
    sampling_m: float,
    n_slabs: int | None = None,
    slab_thickness_m: float | None = None,
    cache_dir: Path | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> Specimen:
    """Build (or load from the cache) a specimen on a grid of ``sampling_m`` (m) pixels.

    ``spec`` is a built-in recipe name, a YAML path or a recipe object. Slabs: ``n_slabs``
    equal slabs through the thickness, or equal slabs no thicker than ``slab_thickness_m``
    (multislice references, e.g. 2e-10); default one slab, the projected potential of the
    whole specimen. ``seed`` overrides the recipe's seed. Results are cached in
    ``cache_dir`` (default ``$EMAUTO_CACHE_DIR`` or ``~/.cache/emauto/specimens``); a
    corrupt or mismatching cache file is reported as a warning and rebuilt.
    """
    name, recipe = _resolve(spec)
    sampling_m = _positive("sampling_m", sampling_m, 1e-9)
    if n_slabs is not None and slab_thickness_m is not None:
        raise SpecimenError("give n_slabs or slab_thickness_m, not both")
    if n_slabs is not None:
        n_slabs = _integer("n_slabs", n_slabs, 1, 10_000)
    if slab_thickness_m is not None:
        slab_thickness_m = _positive("slab_thickness_m", slab_thickness_m, 1e-6)
    if seed is not None:
        seed = _integer("seed", seed, 0, 2**63 - 1)
        recipe = parse_recipe({**recipe.model_dump(), "seed": seed})
    recipe = _on_grid(recipe, sampling_m)
    grid = _grid(recipe, sampling_m)

    key = _cache_key(recipe, sampling_m, n_slabs, slab_thickness_m, seed)
    folder = Path(cache_dir or os.environ.get("EMAUTO_CACHE_DIR") or _default_cache_dir())
    path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{key[:24]}.npz"
    cached = _read_cache(path, key, name, recipe, grid, n_slabs, slab_thickness_m)
    if cached is not None:
        log.debug("specimen %s loaded from %s", name, path)
        return cached

    report = log.info if progress else log.debug
    started = time.perf_counter()
    report("building specimen %s: atoms ...", name)
    atoms = build_atoms(recipe)
    thickness_m = float(atoms.cell.lengths()[2]) * 1e-10
    count = _slab_count(thickness_m, n_slabs, slab_thickness_m)
    report(
        "building specimen %s: abTEM potential of %d atoms, %d slab(s) of %d x %d px ...",
        name,
        len(atoms),
        count,
        grid.ny,
        grid.nx,
    )
    potential = _project(atoms, grid, count, progress)
    specimen = _specimen(
        name,
        recipe,
        grid,
        thickness_m,
        potential,
        atoms.positions * 1e-10,
        atoms.numbers.astype(np.int64),
        atoms.info["extras"],
    )
    elapsed = time.perf_counter() - started
    report("built specimen %s in %.1f s", name, elapsed)
    _write_cache(path, key, specimen, elapsed)
    return specimen


def _specimen(
    name: str,
    recipe: AnyRecipe,
    grid: _Grid,
    thickness_m: float,
    potential: np.ndarray,
    positions_m: np.ndarray,
    numbers: np.ndarray,
    extras: Mapping[str, np.ndarray],
) -> Specimen:
    arrays = [potential, positions_m, numbers, *extras.values()]
    for array in arrays:
        array.setflags(write=False)
    return Specimen(
        name=name,
        recipe=recipe,
        extent_m=grid.extent_m,
        thickness_m=thickness_m,
        sampling_m=grid.sampling_m,
        slab_thickness_m=thickness_m / potential.shape[0],
        projected_potential=potential,
        positions_m=positions_m,
        numbers=numbers,
        extras=dict(extras),
    )


def _integer(what: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or not low <= int(value) <= high:
        raise SpecimenError(f"expected {what} an integer in [{low}, {high}], got {value!r}")
    return int(value)


def _positive(what: str, value: Any, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise SpecimenError(f"expected {what} a number in m, got {type(value).__name__}")
    if not (math.isfinite(float(value)) and 0 < float(value) <= upper):
        raise SpecimenError(f"expected {what} in (0, {upper:g}] m, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- cache


def _default_cache_dir() -> Path:
    return Path.home() / ".cache" / "emauto" / "specimens"


def _abtem_version() -> str:
    from importlib.metadata import version

    return version("abtem")


def _cache_key(
    recipe: AnyRecipe,
    sampling_m: float,
    n_slabs: int | None,
    slab_thickness_m: float | None,
    seed: int | None,
) -> str:
    """sha256 of everything the cached arrays depend on."""
    content = {
        "format": CACHE_FORMAT,
        "recipe": recipe.model_dump(mode="json"),
        "sampling_m": sampling_m,
        "n_slabs": n_slabs,
        "slab_thickness_m": slab_thickness_m,
        "seed": seed,
        "abtem": _abtem_version(),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _read_cache(
    path: Path,
    key: str,
    name: str,
    recipe: AnyRecipe,
    grid: _Grid,
    n_slabs: int | None,
    slab_thickness_m: float | None,
) -> Specimen | None:
    """The cached specimen, or None if absent; a bad file is logged and ignored."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["metadata"][()]))
            if meta.get("format") != CACHE_FORMAT or meta.get("key") != key:
                raise ValueError("metadata does not match this recipe, grid and abTEM version")
            potential = np.array(data["projected_potential"])
            positions = np.array(data["positions_m"])
            numbers = np.array(data["numbers"])
            extras = {name: np.array(data[f"extra.{name}"]) for name in meta["extras"]}
        thickness_m = float(meta["thickness_m"])
        count = _slab_count(thickness_m, n_slabs, slab_thickness_m)
        n_atoms = int(meta["n_atoms"])
        if potential.dtype != np.float32 or potential.shape != (count, grid.ny, grid.nx):
            raise ValueError(
                f"potential {potential.dtype} {potential.shape}, expected float32 "
                f"{(count, grid.ny, grid.nx)}"
            )
        if positions.dtype != np.float64 or positions.shape != (n_atoms, 3):
            raise ValueError(f"positions {positions.dtype} {positions.shape}")
        if numbers.shape != (n_atoms,) or numbers.dtype.kind not in "iu":
            raise ValueError(f"numbers {numbers.dtype} {numbers.shape}")
        if not math.isclose(float(meta["sampling_m"]), grid.sampling_m, rel_tol=1e-12):
            raise ValueError(f"sampling {meta['sampling_m']} m, expected {grid.sampling_m} m")
        if not (np.all(np.isfinite(potential)) and np.all(np.isfinite(positions))):
            raise ValueError("non-finite values")
        if not (math.isfinite(thickness_m) and thickness_m > 0):
            raise ValueError(f"thickness {thickness_m}")
    except Exception as exc:  # any unreadable or mismatching file is rebuilt, never trusted
        log.warning("specimen cache %s is unreadable or stale (%s); rebuilding it", path, exc)
        return None
    return _specimen(
        name, recipe, grid, thickness_m, potential, positions, numbers.astype(np.int64), extras
    )


def _write_cache(path: Path, key: str, specimen: Specimen, build_s: float) -> None:
    """Write the specimen to ``path`` atomically (temp file, then rename); never raise."""
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "name": specimen.name,
        "recipe": specimen.recipe.model_dump(mode="json"),
        "sampling_m": specimen.sampling_m,
        "extent_m": list(specimen.extent_m),
        "thickness_m": specimen.thickness_m,
        "slab_thickness_m": specimen.slab_thickness_m,
        "n_slabs": specimen.n_slabs,
        "n_atoms": len(specimen.numbers),
        "extras": sorted(specimen.extras),
        "abtem": _abtem_version(),
        "build_s": round(build_s, 3),
    }
    arrays = {
        "metadata": np.array(json.dumps(meta)),
        "projected_potential": specimen.projected_potential,
        "positions_m": specimen.positions_m,
        "numbers": specimen.numbers,
        **{f"extra.{name}": value for name, value in specimen.extras.items()},
    }
    temp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp", delete=False
        ) as handle:
            temp = Path(handle.name)
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(0o644)  # NamedTemporaryFile makes it private (0600)
        os.replace(temp, path)
    except OSError as exc:
        log.warning("could not write the specimen cache %s (%s); continuing without it", path, exc)
        if temp is not None:
            temp.unlink(missing_ok=True)
