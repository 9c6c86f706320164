"""``rl``: a learned decision policy — measurement as an action (`decisions`).

The actor is a small MLP from the public observation (`DecisionCore.observation`: the
latest probe-shift estimate, its refusals and misfit, the Strehl ratio it predicts, the
previous estimate and the correction made since, frames left, ...) to one categorical per
part of the MultiDiscrete action (mode, gain of C1/A1, of B2, of A2); acting takes the most
probable of each. It was trained with a privileged critic (`decider_training`) and reads no
ground truth.

Files: ``actor.pt``, a dict ``{"format", "metadata" (JSON), "state_dict"}`` of tensors read
with ``torch.load(weights_only=True)`` (`emauto.models.weights.read_weights_file`), and its
metadata validated by `ActorSpec`: no pickled code, nothing but numbers and a schema.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import torch
from pydantic import Field
from torch import nn

from emauto.errors import ModelFileError
from emauto.models.weights import read_weights_file, shipped_path
from emauto.tasks.probe_tuning.decisions import (
    ACTION_NVEC,
    OBSERVATION_SIZE,
    Decision,
    DecisionCore,
    Mode,
    Plan,
)
from emauto.tasks.probe_tuning.policies.base import Observation, StopDecision
from emauto.units import StrictModel

FORMAT = "emauto-decision-actor/1"
DEFAULT_ACTOR = shipped_path("probe_tuning_decider") / "actor.pt"


class ActorSpec(StrictModel):
    """What an actor file must say about itself."""

    observation_size: int = Field(ge=1, le=10_000)
    action_nvec: tuple[int, ...]
    hidden: tuple[int, ...] = Field(min_length=1, max_length=8)
    activation: Literal["tanh", "relu"] = "tanh"
    provenance: dict[str, Any] = Field(default_factory=dict)


class DecisionActor(nn.Module):
    """Public observation -> logits (sum of ``action_nvec``); the layers mirror SB3's
    ``mlp_extractor.policy_net`` + ``action_net`` so that trained weights copy over.

    A subclass for another observation and action sets the three class attributes."""

    format: ClassVar[str] = FORMAT
    observation_size: ClassVar[int] = OBSERVATION_SIZE
    action_nvec: ClassVar[tuple[int, ...]] = ACTION_NVEC

    def __init__(self, spec: ActorSpec) -> None:
        super().__init__()
        if spec.observation_size != self.observation_size or spec.action_nvec != self.action_nvec:
            raise ModelFileError(
                f"the actor is for observations of {spec.observation_size} and actions "
                f"{spec.action_nvec}; this emauto needs {self.observation_size} and "
                f"{self.action_nvec}"
            )
        self.spec = spec
        activation = nn.Tanh if spec.activation == "tanh" else nn.ReLU
        layers: list[nn.Module] = []
        width = spec.observation_size
        for hidden in spec.hidden:
            layers += [nn.Linear(width, hidden), activation()]
            width = hidden
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(width, sum(spec.action_nvec))

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        return self.action_net(self.policy_net(observation))

    @torch.no_grad()
    def act(self, observation: np.ndarray) -> np.ndarray:
        """The most probable index of each action part, int64 (len(action_nvec),)."""
        logits = self(torch.as_tensor(observation, dtype=torch.float32)[None])[0]
        parts = torch.split(logits, list(self.spec.action_nvec))
        return np.array([int(torch.argmax(p)) for p in parts], dtype=np.int64)

    def save(self, path: str | Path) -> None:
        """Write ``actor.pt`` (tensors and JSON metadata only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}
        blob = {"format": self.format, "metadata": self.spec.model_dump_json(), "state_dict": state}
        temporary = path.with_suffix(".tmp")
        torch.save(blob, temporary)
        temporary.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read an actor file without unpickling code; `ModelFileError` if it is not one."""
        blob = read_weights_file(Path(path), cls.format, f"no {cls.__name__} here")
        try:
            spec = ActorSpec.model_validate(json.loads(blob["metadata"]))
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: invalid actor metadata ({exc})") from exc
        actor = cls(spec)
        try:
            actor.load_state_dict(blob["state_dict"])
        except (RuntimeError, KeyError, TypeError) as exc:
            raise ModelFileError(f"{path}: weights do not fit the actor ({exc})") from exc
        return actor.eval()


class DecisionPolicy:
    """A `TuningPolicy` that asks an actor (or any ``decide(core) -> Decision``) what to do
    at each decision point and carries it out through a `DecisionCore`."""

    def __init__(self, name: str, core: DecisionCore, decide: Any) -> None:
        self.name = name
        self.core = core
        self._decide = decide
        self._plan: Plan | None = None
        self._ended: Plan | None = None
        self._stepped = False  # a move was made and its result not yet ingested

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.core.reset(info)
        self._plan, self._ended, self._stepped = None, None, False

    def stop(self) -> StopDecision | None:
        plan = self.core.plan(self._decide(self.core))
        if plan.ends:
            self._ended = plan
            confidence = self.core.predicted_strehl()
            reason = "declared aligned" if plan.declared else "no frames left for the next step"
            return StopDecision(plan.declared, confidence, reason)
        self._plan = plan
        return None

    def suggest(self) -> np.ndarray:
        assert self._plan is not None and self._plan.action is not None
        self._stepped = True
        return self._plan.action

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._stepped = False
        self.core.after_step(info)

    def final_action(self) -> np.ndarray | None:
        if self._ended is None:  # the budget ended the episode: the last, frameless decision
            if self._stepped:  # its last move's frame was taken, not ingested
                self.core.step_unobserved()
                self._stepped = False
            plan = self.core.plan(self._decide(self.core))
            self._ended = plan if plan.ends else self.core.plan(Decision(Mode.STOP))
        return self._ended.final


def actor_decider(actor: DecisionActor) -> Any:
    """``decide(core)``: the actor's action at the core's observation."""

    def decide(core: DecisionCore) -> Decision:
        return Decision.from_action(actor.act(core.observation()))

    return decide
