"""Stable-baselines3 policies saved without pickle: tensors plus a validated description.

SB3's own ``model.save`` writes a zip whose fields are pickled (SB3's loader unpickles them:
a crafted zip runs code). emauto saves a trained policy as one file, ``policy.pt``, in the
format of every other emauto network (`emauto.models.weights.read_weights_file`)::

    {"format": POLICY_FORMAT,
     "metadata": JSON text of a `PolicySpec` (algorithm, spaces, network, training notes),
     "state_dict": {name: tensor}}

read back with ``torch.load(weights_only=True)``. Loading validates the description with
pydantic (bounded sizes, activation and feature extractor names from an allow-list, checked
before anything is allocated), rebuilds the SB3 policy module from it and loads the tensors
into it (``strict``: every tensor present, none extra, shapes equal). Nothing in the file
names a class or a function to import.

Predict with ``policy.predict(observation, deterministic=True)``, as ``model.predict`` does.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field, JsonValue

from emauto.errors import ConfigError, ModelFileError
from emauto.models.weights import read_weights_file
from emauto.units import StrictModel, validate_model

#: The ``format`` of a policy file.
POLICY_FORMAT = "emauto-sb3-policy-v1"
#: The file name of a policy inside a policy folder.
POLICY_FILE = "policy.pt"
#: Largest number of elements of one space (a (3, 512, 512) image is 786 432).
MAX_SPACE_ELEMENTS = 4_000_000
#: Largest width of a hidden layer and of a features extractor's output.
MAX_LAYER_WIDTH = 8192

Activation = Literal["tanh", "relu", "elu", "leaky_relu", "gelu", "silu"]
#: Feature extractors every policy file may name (SB3's own); a task adds its own classes
#: through ``extractors=`` of `save_policy_file` / `load_policy_file`.
BUILTIN_EXTRACTORS = ("flatten", "nature_cnn", "combined")

_Width = Annotated[int, Field(ge=1, le=MAX_LAYER_WIDTH)]
_Layers = Annotated[tuple[_Width, ...], Field(max_length=16)]


class BoxSpace(StrictModel):
    """A `gymnasium.spaces.Box` with the same bound for every element (None: unbounded)."""

    kind: Literal["box"] = "box"
    shape: Annotated[tuple[Annotated[int, Field(ge=1)], ...], Field(min_length=1, max_length=4)]
    dtype: Literal["float32", "float64", "uint8"]
    low: float | None
    high: float | None

    def elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class DiscreteSpace(StrictModel):
    """A `gymnasium.spaces.Discrete` of ``n`` actions (0 .. n-1)."""

    kind: Literal["discrete"] = "discrete"
    n: Annotated[int, Field(ge=1, le=1_000_000)]

    def elements(self) -> int:
        return 1


class DictSpace(StrictModel):
    """A `gymnasium.spaces.Dict` of boxes and discrete spaces."""

    kind: Literal["dict"] = "dict"
    spaces: Annotated[dict[str, BoxSpace | DiscreteSpace], Field(min_length=1, max_length=16)]

    def elements(self) -> int:
        return sum(space.elements() for space in self.spaces.values())


Space = Annotated[Union[BoxSpace, DiscreteSpace, DictSpace], Field(discriminator="kind")]  # noqa: UP007


class NetArch(StrictModel):
    """Separate hidden layers of the actor (``pi``) and the critic (``vf`` for PPO, ``qf``
    for SAC)."""

    pi: _Layers
    vf: _Layers | None = None
    qf: _Layers | None = None


class PolicySpec(StrictModel):
    """Everything but the tensors: enough to rebuild the SB3 policy module."""

    algo: Literal["ppo", "sac"]
    observation_space: Space
    action_space: Space
    net_arch: _Layers | NetArch
    activation: Activation
    features_extractor: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
    features_extractor_kwargs: dict[
        Literal["features_dim", "cnn_output_dim", "normalized_image"], bool | _Width
    ] = Field(default_factory=dict)
    normalize_images: bool = True
    share_features_extractor: bool
    n_critics: Annotated[int, Field(ge=1, le=10)] = 2
    #: Free-form notes for people: timesteps trained, whether training was interrupted.
    training: dict[str, JsonValue] = Field(default_factory=dict)


def _activations() -> dict[str, type[Any]]:
    from torch import nn

    return {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "gelu": nn.GELU,
        "silu": nn.SiLU,
    }


def _extractors(extra: Mapping[str, type[Any]]) -> dict[str, type[Any]]:
    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN

    builtin = {"flatten": FlattenExtractor, "nature_cnn": NatureCNN, "combined": CombinedExtractor}
    clash = set(builtin) & set(extra)
    if clash:
        raise ConfigError(f"extractor names {sorted(clash)} are SB3's own; choose others")
    return {**builtin, **extra}


def _name_of(value: Any, table: Mapping[str, Any], what: str) -> str:
    for name, candidate in table.items():
        if value is candidate:
            return name
    raise ModelFileError(f"cannot save a policy with the {what} {value!r}: allowed {sorted(table)}")


def _space_spec(space: Any) -> BoxSpace | DiscreteSpace | DictSpace:
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        if low.size != 1 or high.size != 1:
            raise ModelFileError(f"cannot save a Box space with per-element bounds: {space}")
        return BoxSpace(
            shape=tuple(int(n) for n in space.shape),
            dtype=str(space.dtype),
            low=float(low[0]) if np.isfinite(low[0]) else None,
            high=float(high[0]) if np.isfinite(high[0]) else None,
        )
    if isinstance(space, spaces.Discrete) and int(space.start) == 0:
        return DiscreteSpace(n=int(space.n))
    if isinstance(space, spaces.Dict):
        return DictSpace(spaces={k: _space_spec(v) for k, v in space.spaces.items()})
    raise ModelFileError(f"cannot save a policy over the space {space}")


def _space(spec: BoxSpace | DiscreteSpace | DictSpace) -> Any:
    from gymnasium import spaces

    if isinstance(spec, BoxSpace):
        low = -np.inf if spec.low is None else spec.low
        high = np.inf if spec.high is None else spec.high
        return spaces.Box(low, high, shape=spec.shape, dtype=np.dtype(spec.dtype))
    if isinstance(spec, DiscreteSpace):
        return spaces.Discrete(spec.n)
    return spaces.Dict({k: _space(v) for k, v in spec.spaces.items()})


def policy_spec(
    model: Any,
    *,
    extractors: Mapping[str, type[Any]] | None = None,
    training: Mapping[str, JsonValue] | None = None,
) -> PolicySpec:
    """The description of a live SB3 model (``PPO`` or ``SAC``) or of its policy."""
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.sac.policies import SACPolicy

    policy = getattr(model, "policy", model)
    if isinstance(policy, ActorCriticPolicy):
        algo = "ppo"
    elif isinstance(policy, SACPolicy):
        algo = "sac"
    else:
        raise ModelFileError(f"cannot save a {type(policy).__name__}: PPO or SAC policies only")
    params = policy._get_constructor_parameters()
    net_arch = params["net_arch"]
    return PolicySpec(
        algo=algo,
        observation_space=_space_spec(policy.observation_space),
        action_space=_space_spec(policy.action_space),
        net_arch=NetArch(**net_arch) if isinstance(net_arch, dict) else tuple(net_arch),
        activation=_name_of(params["activation_fn"], _activations(), "activation"),
        features_extractor=_name_of(
            params["features_extractor_class"], _extractors(extractors or {}), "features extractor"
        ),
        features_extractor_kwargs=dict(params.get("features_extractor_kwargs") or {}),
        normalize_images=bool(params["normalize_images"]),
        share_features_extractor=bool(policy.share_features_extractor),
        n_critics=int(params.get("n_critics", 2)),
        training=dict(training or {}),
    )


def save_policy_file(
    model: Any,
    path: str | Path,
    *,
    extractors: Mapping[str, type[Any]] | None = None,
    training: Mapping[str, JsonValue] | None = None,
) -> Path:
    """Write ``model``'s policy (PPO or SAC) to ``path`` (written whole, then renamed)."""
    import torch

    spec = policy_spec(model, extractors=extractors, training=training)
    policy = getattr(model, "policy", model)
    state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}  # shared: saved once
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    blob = {"format": POLICY_FORMAT, "metadata": spec.model_dump_json(), "state_dict": state}
    torch.save(blob, partial)
    os.replace(partial, path)
    return path


def read_policy_spec(path: str | Path) -> tuple[PolicySpec, dict[str, Any]]:
    """The validated description and the tensors of the policy file ``path``."""
    path = Path(path)
    blob = read_weights_file(path, POLICY_FORMAT, "no such policy file")
    try:
        metadata = json.loads(blob["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: no readable metadata ({exc})") from exc
    try:
        spec = validate_model(metadata, PolicySpec, source=str(path))
    except ConfigError as exc:
        raise ModelFileError(str(exc)) from exc
    for role, space in (("observation", spec.observation_space), ("action", spec.action_space)):
        if space.elements() > MAX_SPACE_ELEMENTS:
            raise ModelFileError(
                f"{path}: the {role} space has {space.elements()} elements, "
                f"at most {MAX_SPACE_ELEMENTS} allowed"
            )
    state = blob.get("state_dict")
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and _is_tensor(v) for k, v in state.items()
    ):
        raise ModelFileError(f"{path}: state_dict is not a dict of named tensors")
    held = sum(int(tensor.numel()) for tensor in state.values())
    if minimum_parameters(spec) > held:
        raise ModelFileError(
            f"{path}: the description needs at least {minimum_parameters(spec)} weights, the "
            f"file holds {held}"
        )
    return spec, state


def _mlp(inputs: int, layers: tuple[int, ...]) -> int:
    total, width = 0, inputs
    for layer in layers:
        total, width = total + width * layer, layer
    return total


def _nature_cnn(space: BoxSpace, features_dim: int) -> tuple[int, int]:
    """Weights of SB3's NatureCNN on ``space`` (channels first) and its output width."""
    channels, height, width = (*space.shape, 1, 1, 1)[:3]
    sizes = []
    for size in (height, width):
        for kernel, stride in ((8, 4), (4, 2), (3, 1)):
            size = (size - kernel) // stride + 1
        sizes.append(max(size, 0))
    convolutions = channels * 32 * 64 + 32 * 64 * 16 + 64 * 64 * 9
    return convolutions + 64 * sizes[0] * sizes[1] * features_dim, features_dim


def minimum_parameters(spec: PolicySpec) -> int:
    """A lower bound on the number of weights the policy ``spec`` describes (its hidden
    layers, and SB3's own feature extractors), computed before anything is allocated."""
    kwargs = spec.features_extractor_kwargs
    observation = spec.observation_space
    extractor, features = 0, 1
    if spec.features_extractor == "flatten":
        features = observation.elements()
    elif spec.features_extractor == "nature_cnn" and isinstance(observation, BoxSpace):
        extractor, features = _nature_cnn(observation, int(kwargs.get("features_dim", 512)))
    elif spec.features_extractor == "combined" and isinstance(observation, DictSpace):
        features = 0
        for space in observation.spaces.values():
            if isinstance(space, BoxSpace) and space.dtype == "uint8" and len(space.shape) == 3:
                weights, width = _nature_cnn(space, int(kwargs.get("cnn_output_dim", 256)))
                extractor, features = extractor + weights, features + width
            else:
                features += space.elements()
    else:
        features = int(kwargs.get("features_dim", 1))
    if isinstance(spec.net_arch, tuple):
        actor = critic = spec.net_arch
    else:
        actor, critic = spec.net_arch.pi, spec.net_arch.vf or spec.net_arch.qf or ()
    critics = spec.n_critics if spec.algo == "sac" else 1
    return extractor + _mlp(features, actor) + critics * _mlp(features, critic)


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)


def load_policy_file(
    path: str | Path,
    *,
    extractors: Mapping[str, type[Any]] | None = None,
    algo: str | None = None,
) -> tuple[Any, PolicySpec]:
    """The SB3 policy module saved at ``path`` (on the CPU, in eval mode) and its description.

    ``extractors``: the task's own feature extractor classes by name (an allow-list);
    ``algo``: the algorithm the caller expects, if it knows. `ModelFileError` on any mismatch.
    """
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.sac.policies import SACPolicy

    path = Path(path)
    spec, state = read_policy_spec(path)
    if algo is not None and spec.algo != algo:
        raise ModelFileError(f"{path}: a {spec.algo} policy, expected {algo}")
    table = _extractors(extractors or {})
    if spec.features_extractor not in table:
        raise ModelFileError(
            f"{path}: unknown features extractor {spec.features_extractor!r} "
            f"(allowed here: {sorted(table)})"
        )
    net_arch = (
        list(spec.net_arch)
        if isinstance(spec.net_arch, tuple)
        else {k: list(v) for k, v in spec.net_arch.model_dump().items() if v is not None}
    )
    kwargs: dict[str, Any] = {
        "net_arch": net_arch,
        "activation_fn": _activations()[spec.activation],
        "features_extractor_class": table[spec.features_extractor],
        "features_extractor_kwargs": dict(spec.features_extractor_kwargs),
        "normalize_images": spec.normalize_images,
        "share_features_extractor": spec.share_features_extractor,
    }
    try:
        observation_space = _space(spec.observation_space)
        action_space = _space(spec.action_space)
        policy: Any
        if spec.algo == "ppo":
            policy = ActorCriticPolicy(
                observation_space, action_space, lambda _: 0.0, ortho_init=False, **kwargs
            )
        else:
            policy = SACPolicy(
                observation_space, action_space, lambda _: 0.0, n_critics=spec.n_critics, **kwargs
            )
        policy.load_state_dict(state, strict=True)
    except Exception as exc:  # a description and tensors that do not fit together
        raise ModelFileError(
            f"{path}: the tensors do not fit the described policy ({exc})"
        ) from exc
    policy.set_training_mode(False)
    return policy, spec


def learn_until_interrupted(
    model: Any, total_timesteps: int, **learn_kwargs: Any
) -> dict[str, JsonValue]:
    """``model.learn(total_timesteps, ...)``; Ctrl-C (KeyboardInterrupt) ends it early and
    keeps what was learned, as rl-zoo does. The training notes for `save_policy_file`:
    steps asked and done, and whether (and at how many steps) training was interrupted."""
    import sys

    try:
        model.learn(total_timesteps, **learn_kwargs)
    except KeyboardInterrupt:
        done = int(model.num_timesteps)
        print(
            f"\ntraining interrupted at {done} of {total_timesteps} steps: "
            "saving the policy reached so far",
            file=sys.stderr,
            flush=True,
        )
        return {
            "total_timesteps": total_timesteps,
            "timesteps_done": done,
            "interrupted": True,
            "note": f"training was interrupted at {done} steps",
        }
    return {
        "total_timesteps": total_timesteps,
        "timesteps_done": int(model.num_timesteps),
        "interrupted": False,
    }
