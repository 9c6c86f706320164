"""Training the decision policy (`policies.decider`): imitation, then PPO with a privileged
critic.

1. **Behaviour cloning with DAgger** (Ross et al. 2011): roll out the expert
   (`decisions.expert_decision`, the `shift` rules), then the current actor, on
   `MeasureCorrectEnv` episodes; the expert labels every state visited; the actor (an MLP on
   the public observation only) is fitted by cross-entropy on all labels so far. (The
   `imitation` library pins gymnasium 0.29 and SB3 2.2, below what emauto runs on, so the
   few lines of BC and DAgger are here.)
2. **Critic warm-up**: the critic (an MLP on the public *and* privileged observation: the
   twin's true aberrations, phase potential and Strehl ratio) is fitted to the discounted
   returns of the last DAgger round's rollouts, so that PPO starts with a critic that
   knows the actor's worth.
3. **PPO** (stable-baselines3) fine-tunes actor and critic together on vectorised envs
   (`AsymmetricActorCritic`: SB3's actor-critic with an extractor that gives the actor
   only the public part).

No checkpoint is chosen on any result: the policy at the end of training is the one saved.
Episodes are seeded from `TRAINING_SEED_BASE`, apart from every benchmark's and the stop
threshold's tuning seeds.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from emauto.models.sb3_callbacks import EpisodeStatsPrinter
from emauto.models.sb3_policy import learn_until_interrupted
from emauto.tasks.probe_tuning.decisions import (
    ACTION_NVEC,
    OBSERVATION_SIZE,
    Decision,
    DecisionCore,
    expert_decision,
)
from emauto.tasks.probe_tuning.measure_env import DEFAULT_BUDGET, MeasureCorrectEnv
from emauto.tasks.probe_tuning.policies.decider import ActorSpec, DecisionActor
from emauto.units import StrictModel

#: Training episodes are seeded TRAINING_SEED_BASE + config.seed * 1e6 + i: no benchmark
#: (seed x 1e5 + i, seeds 0 and 1) and no tuning run (700000 + i) uses these.
TRAINING_SEED_BASE = 5_000_000


class DeciderTrainingConfig(StrictModel):
    """`emauto train --task probe-tuning-decider`."""

    seed: int = Field(default=0, ge=0, le=1000)
    microscope: str = "sim://"
    budget: int = Field(default=DEFAULT_BUDGET, ge=4, le=1000)
    frame_cost: float = Field(default=0.01, ge=0)
    false_done_penalty: float = Field(default=1.0, ge=0)
    hidden: tuple[int, ...] = Field(default=(64, 64), min_length=1, max_length=4)
    expert_episodes: int = Field(default=60, ge=1)
    dagger_rounds: int = Field(default=2, ge=0, le=20)
    dagger_episodes: int = Field(default=40, ge=1)
    bc_epochs: int = Field(default=200, ge=1)
    gamma: float = Field(default=0.99, gt=0, le=1)
    ppo_timesteps: int = Field(default=4096, ge=0)
    n_envs: int = Field(default=4, ge=1, le=64)
    n_steps: int = Field(default=256, ge=8)
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = Field(default=1e-4, gt=0)
    clip_range: float = Field(default=0.1, gt=0, lt=1)
    ent_coef: float = Field(default=0.0, ge=0)
    torch_threads: int = Field(default=1, ge=1, le=64)
    device: str = Field(default="cpu", description="torch device of PPO: cpu, cuda, auto")


# ------------------------------------------------------------------ imitation


class Rollouts:
    """States visited (public, privileged), the expert's action there, the rewards."""

    def __init__(self) -> None:
        self.public: list[np.ndarray] = []
        self.privileged: list[np.ndarray] = []
        self.expert: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.episode_ends: list[bool] = []
        self.successes: list[bool] = []

    def __len__(self) -> int:
        return len(self.public)

    def returns(self, gamma: float) -> np.ndarray:
        """Discounted return from each state to its episode's end."""
        out = np.zeros(len(self.rewards))
        running = 0.0
        for i in range(len(self.rewards) - 1, -1, -1):
            running = self.rewards[i] + (0.0 if self.episode_ends[i] else gamma * running)
            out[i] = running
        return out


def roll_out(
    env: MeasureCorrectEnv,
    decide: Callable[[DecisionCore], Decision],
    seeds: range,
    into: Rollouts,
    progress: str = "",
) -> None:
    """Episodes on ``env`` acting by ``decide``; every state labelled by the expert."""
    for index, seed in enumerate(seeds):
        observation, _ = env.reset(seed=seed)
        done = False
        while not done:
            into.public.append(observation["public"])
            into.privileged.append(observation["privileged"])
            into.expert.append(expert_decision(env.core).to_action())
            action = decide(env.core).to_action()
            observation, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            into.rewards.append(reward)
            into.episode_ends.append(done)
        into.successes.append(bool(info["success"]))
        if progress:
            print(f"\r{progress}: episode {index + 1}/{len(seeds)}", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)


def behaviour_clone(actor: DecisionActor, data: Rollouts, epochs: int, seed: int) -> float:
    """Fit ``actor`` to the expert labels (cross-entropy per action part); the final loss."""
    torch.manual_seed(seed)
    inputs = torch.as_tensor(np.array(data.public), dtype=torch.float32)
    labels = torch.as_tensor(np.array(data.expert), dtype=torch.int64)
    optimiser = torch.optim.Adam(actor.parameters(), lr=3e-3)
    loss = torch.zeros(())
    actor.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        parts = torch.split(actor(inputs), list(actor.action_nvec), dim=1)
        loss = sum(
            (nn.functional.cross_entropy(p, labels[:, i]) for i, p in enumerate(parts)),
            torch.zeros(()),
        )
        loss.backward()
        optimiser.step()
    actor.eval()
    return float(loss.detach())


def agreement(actor: DecisionActor, data: Rollouts) -> float:
    """Fraction of states where the actor's mode equals the expert's."""
    modes = np.array([actor.act(p)[0] for p in data.public])
    return float(np.mean(modes == np.array(data.expert)[:, 0]))


# ------------------------------------------------------------------ asymmetric actor-critic


class PublicPrivileged(BaseFeaturesExtractor):
    """Features ``[public, privileged]``, in that order (the actor reads the first part)."""

    def __init__(self, observation_space: spaces.Dict) -> None:
        public = int(observation_space["public"].shape[0])  # type: ignore[index]
        privileged = int(observation_space["privileged"].shape[0])  # type: ignore[index]
        super().__init__(observation_space, public + privileged)
        self.public_size = public

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([observations["public"], observations["privileged"]], dim=1)


class AsymmetricMlp(nn.Module):
    """SB3's ``mlp_extractor`` with an actor that sees the public features only."""

    def __init__(self, public_size: int, features_size: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.public_size = public_size

        def mlp(width: int) -> nn.Sequential:
            layers: list[nn.Module] = []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.Tanh()]
                width = size
            return nn.Sequential(*layers)

        self.policy_net = mlp(public_size)
        self.value_net = mlp(features_size)
        self.latent_dim_pi = self.latent_dim_vf = hidden[-1]

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features[:, : self.public_size])

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class AsymmetricActorCritic(ActorCriticPolicy):
    """Actor on the public observation, critic on public + privileged (`PublicPrivileged`)."""

    def __init__(self, *args: Any, hidden: tuple[int, ...] = (64, 64), **kwargs: Any) -> None:
        self._hidden = tuple(hidden)
        kwargs["features_extractor_class"] = PublicPrivileged
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        extractor = self.features_extractor
        assert isinstance(extractor, PublicPrivileged)
        self.mlp_extractor = AsymmetricMlp(  # type: ignore[assignment]
            extractor.public_size, self.features_dim, self._hidden
        )


def copy_actor_into(policy: AsymmetricActorCritic, actor: DecisionActor) -> None:
    """Start PPO's actor from the cloned one (the same layer shapes)."""
    policy.mlp_extractor.policy_net.load_state_dict(actor.policy_net.state_dict())
    policy.action_net.load_state_dict(actor.action_net.state_dict())


def copy_actor_from(policy: AsymmetricActorCritic, actor: DecisionActor) -> None:
    """The trained actor's weights back into a `DecisionActor` to ship."""
    actor.policy_net.load_state_dict(policy.mlp_extractor.policy_net.state_dict())
    actor.action_net.load_state_dict(policy.action_net.state_dict())


def warm_up_critic(policy: AsymmetricActorCritic, data: Rollouts, gamma: float) -> float:
    """Fit the critic to the rollouts' discounted returns (MSE); the final loss."""
    features = torch.as_tensor(
        np.concatenate([np.array(data.public), np.array(data.privileged)], axis=1),
        dtype=torch.float32,
    )
    target = torch.as_tensor(data.returns(gamma), dtype=torch.float32)
    parameters = [*policy.mlp_extractor.value_net.parameters(), *policy.value_net.parameters()]
    optimiser = torch.optim.Adam(parameters, lr=1e-3)
    loss = torch.zeros(())
    for _ in range(300):
        optimiser.zero_grad()
        value = policy.value_net(policy.mlp_extractor.forward_critic(features)).squeeze(1)
        loss = nn.functional.mse_loss(value, target)
        loss.backward()
        optimiser.step()
    return float(loss.detach())


# ------------------------------------------------------------------ the whole recipe


def _make_env(config: DeciderTrainingConfig) -> MeasureCorrectEnv:
    return MeasureCorrectEnv(
        config.microscope,
        budget=config.budget,
        frame_cost=config.frame_cost,
        false_done_penalty=config.false_done_penalty,
    )


def train_decider(
    config: DeciderTrainingConfig,
    out: str | Path,
    *,
    tensorboard_log: str | Path | None = None,
) -> dict[str, Any]:
    """Imitation, critic warm-up and PPO; writes ``out/actor.pt`` and ``out/training.json``
    (the config and what each stage measured on its own training episodes). PPO prints its
    training episodes' mean reward and success rate on stderr after each rollout, and logs
    to TensorBoard in ``tensorboard_log`` if given. Ctrl-C during PPO saves the actor reached
    so far (marked ``interrupted``)."""

    out = Path(out)
    torch.set_num_threads(config.torch_threads)
    started = time.perf_counter()
    base = TRAINING_SEED_BASE + config.seed * 1_000_000
    env = _make_env(config)
    spec = ActorSpec(
        observation_size=OBSERVATION_SIZE, action_nvec=ACTION_NVEC, hidden=config.hidden
    )
    torch.manual_seed(config.seed)
    actor = DecisionActor(spec)
    data = Rollouts()
    next_seed = base
    roll_out(
        env, expert_decision, range(next_seed, next_seed + config.expert_episodes), data, "expert"
    )
    next_seed += config.expert_episodes
    report: dict[str, Any] = {
        "expert_success_rate": float(np.mean(data.successes)),
        "dagger": [],
    }
    loss = behaviour_clone(actor, data, config.bc_epochs, config.seed)
    last_round = data
    for round_index in range(config.dagger_rounds):
        visited = Rollouts()

        def act(core: DecisionCore) -> Decision:
            return Decision.from_action(actor.act(core.observation()))

        roll_out(
            env,
            act,
            range(next_seed, next_seed + config.dagger_episodes),
            visited,
            f"DAgger round {round_index + 1}",
        )
        next_seed += config.dagger_episodes
        report["dagger"].append(
            {
                "round": round_index + 1,
                "actor_success_rate": float(np.mean(visited.successes)),
                "agreement_with_expert": agreement(actor, visited),
                "bc_loss_before": loss,
            }
        )
        for name in ("public", "privileged", "expert"):
            getattr(data, name).extend(getattr(visited, name))
        loss = behaviour_clone(actor, data, config.bc_epochs, config.seed)
        last_round = visited
    report["bc_states"] = len(data)
    report["bc_final_loss"] = loss
    env.close()

    interrupted = False
    if config.ppo_timesteps > 0:
        vec_env = DummyVecEnv(
            [
                lambda: gym.wrappers.RecordEpisodeStatistics(_make_env(config))
                for _ in range(config.n_envs)
            ]
        )
        vec_env.seed(next_seed)
        model = PPO(
            AsymmetricActorCritic,
            vec_env,
            learning_rate=config.learning_rate,
            n_steps=config.n_steps,
            batch_size=config.batch_size,
            gamma=config.gamma,
            clip_range=config.clip_range,
            ent_coef=config.ent_coef,
            policy_kwargs={"hidden": config.hidden},
            seed=config.seed,
            device=config.device,
            tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
            verbose=0,
        )
        policy = model.policy
        assert isinstance(policy, AsymmetricActorCritic)
        copy_actor_into(policy, actor)
        if len(last_round):
            report["critic_warm_up_loss"] = warm_up_critic(policy, last_round, config.gamma)
        notes = learn_until_interrupted(
            model,
            config.ppo_timesteps,
            callback=EpisodeStatsPrinter(every=config.n_steps * config.n_envs),
            progress_bar=True,
        )
        interrupted = bool(notes["interrupted"])
        copy_actor_from(policy, actor)
        report["ppo_timesteps"] = int(model.num_timesteps)
        recent = [float(e["r"]) for e in model.ep_info_buffer] if model.ep_info_buffer else []
        report["ppo_recent_mean_return"] = float(np.mean(recent)) if recent else None
        vec_env.close()
    report["interrupted"] = interrupted
    report["train_s"] = round(time.perf_counter() - started, 1)
    actor.spec = spec.model_copy(
        update={"provenance": {"config": config.model_dump(mode="json"), "training": report}}
    )
    out.mkdir(parents=True, exist_ok=True)
    actor.save(out / "actor.pt")
    (out / "training.json").write_text(
        json.dumps({"config": config.model_dump(mode="json"), **report}, indent=2) + "\n"
    )
    return report
