"""Training ``rl_belief`` (`policies.belief_stop`): when to stop measuring, learned by PPO on
recorded twin episodes with a privileged critic.

Why recorded episodes are exact here: the actor's only choices are to measure again or to
end the episode (declared aligned, or handed to the operator). Until it ends, what `bo`
measures does not depend on the actor, so one episode run to the budget, with at every
decision point the outcome of stopping *there* (the twin's true Strehl ratio of the state the
final move would leave, read from ground truth while recording), holds the outcome of every
policy on that episode. PPO then trains on a replay of those episodes (`StopReplayEnv`)
thousands of times faster than on the twin, with nothing approximated but the final move
(`SimulatedMicroscope.aberrations_after_move`: the twin's lens model, lag and hysteresis, on
a copy; `counterfactual_error` checks it against the real final moves at the budget).

1. **Record** ``episodes`` twin episodes on Dask (`record_episodes`; LocalCluster by
   default, a scheduler address to scale out), with domain randomisation: each episode draws
   its microscope from ``config.microscopes`` and its exposure log-uniformly from
   ``config.exposure_s`` (the dose).
2. **PPO** (stable-baselines3) on `StopReplayEnv` with `decider_training.AsymmetricActorCritic`:
   the actor reads the public features (`belief_stop.FEATURE_NAMES`), the critic also the
   privileged truth (the Strehl ratio a stop now would leave, the best one still to come).
   Reward: ``+1`` for declaring an aligned probe, ``-false_done_penalty`` for declaring one
   that is not, ``0`` for handing over, ``-frame_cost`` per frame.
3. The actor at the end of training is saved (no checkpoint chosen); its figures on the
   held-apart ``validation`` episodes (training seeds too, never a benchmark's) go in
   ``training.json``.

Episodes are seeded `decider_training.TRAINING_SEED_BASE` + 7e6 + seed x 1e6 + i: apart from
every benchmark (seed x 1e5 + i, seeds 0 and 1) and every tuning run.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from pydantic import Field

from emauto import optics
from emauto.drivers.sim.config import SimConfig
from emauto.drivers.sim.perturbations import PerturbationRanges, randomised_config
from emauto.errors import ConfigError
from emauto.tasks.probe_tuning.config import ProbeTuningConfig
from emauto.tasks.probe_tuning.decider_training import (
    TRAINING_SEED_BASE,
    AsymmetricActorCritic,
    Rollouts,
    behaviour_clone,
    copy_actor_from,
    copy_actor_into,
)
from emauto.tasks.probe_tuning.policies.belief_stop import (
    FEATURE_LIMIT,
    FEATURE_SIZE,
    BeliefStopPolicy,
    Choice,
    StopActor,
)
from emauto.tasks.probe_tuning.policies.decider import ActorSpec
from emauto.units import StrictModel

#: Offset of this training's episode seeds above `TRAINING_SEED_BASE`.
SEED_OFFSET = 7_000_000
#: Episodes per Dask task (and per file in a recording folder).
CHUNK = 5
#: Privileged features the critic reads: the Strehl ratio a stop now leaves, the best to come.
PRIVILEGED_SIZE = 2


class BeliefTrainingConfig(StrictModel):
    """What `train_belief_stop` does (configs/probe_tuning_belief.yaml)."""

    seed: int = Field(default=0, ge=0, le=1000)
    microscopes: tuple[str, ...] = ("sim://",)
    exposure_s: tuple[float, float] = (2e-3, 2e-2)
    budget: int = Field(default=31, ge=4, le=1000)
    episodes: int = Field(default=600, ge=2, le=100_000)
    validation: int = Field(default=150, ge=1, le=100_000)
    frame_cost: float = Field(default=0.01, ge=0.0, le=1.0)
    false_done_penalty: float = Field(default=4.0, ge=0.0, le=100.0)
    expert_margin: float = Field(default=0.05, ge=0.0, le=0.2)
    bc_epochs: int = Field(default=300, ge=0, le=100_000)
    hidden: tuple[int, ...] = (64, 64)
    timesteps: int = Field(default=200_000, ge=0, le=100_000_000)
    n_envs: int = Field(default=8, ge=1, le=256)
    n_steps: int = Field(default=256, ge=8, le=100_000)
    batch_size: int = Field(default=512, ge=8, le=100_000)
    learning_rate: float = Field(default=3e-4, gt=0, le=1.0)
    ent_coef: float = Field(default=0.01, ge=0, le=1.0)
    gamma: float = Field(default=1.0, gt=0, le=1.0)
    workers: int = Field(default=2, ge=1, le=256)
    torch_threads: int = Field(default=1, ge=1, le=256)
    device: str = Field(default="cpu", description="torch device of PPO: cpu, cuda, auto")
    randomise: PerturbationRanges | None = Field(
        default=None,
        description=(
            "each episode's twin drawn from these ranges (`randomised_config`, over the "
            "default twin) instead of from ``microscopes``; None: as before"
        ),
    )
    max_measurement_exposure_s: float | None = Field(
        default=None,
        gt=0,
        le=10.0,
        description="auto-exposure of bo's probe-shift measurements (ProbeTuningConfig's)",
    )
    lens_settle_error: float | None = Field(
        default=None,
        ge=0.0,
        le=0.5,
        description=(
            "with ``randomise``: each twin seen through a calibration (CalibratedMicroscope) "
            "whose lens settling time is the twin's own (5 time constants) off by a factor "
            "1 + U(-e, e): what `emauto calibrate` measures, with its error; None: bare"
        ),
    )


# ------------------------------------------------------------------ recording


def _episode_seed(config: BeliefTrainingConfig, index: int) -> int:
    return TRAINING_SEED_BASE + SEED_OFFSET + config.seed * 1_000_000 + index


def record_episode(
    microscope: str,
    exposure_s: float,
    seed: int,
    budget: int,
    *,
    sim_config: SimConfig | None = None,
    max_measurement_exposure_s: float | None = None,
    lens_settle_s: float | None = None,
) -> dict[str, np.ndarray]:
    """Run `bo`'s evaluations to the budget on a twin, recording at every decision point the
    public features, whether another evaluation fits, the acquisitions so far, and what a
    stop there would leave (true Strehl ratio, an extra settling frame or not).

    Also ``final_strehl`` (the state really left at the budget, after its final move) and
    ``final_predicted`` (the last decision point's counterfactual of it), to measure the
    counterfactual's error.

    ``sim_config``: the twin's configuration (``microscope`` must then be ``sim://``);
    ``max_measurement_exposure_s``: auto-exposure of the measurements (as the bench's
    ``configs/conditions/auto_exposure.yaml``); ``lens_settle_s``: the twin is seen through
    a `CalibratedMicroscope` with that lens settling time (s), as a calibrated instrument.
    """
    from emauto.drivers import connect
    from emauto.drivers.sim.twin import SimulatedMicroscope
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv, scoring_wait_s
    from emauto.tasks.probe_tuning.policies.base import run_episode
    from emauto.tasks.probe_tuning.policies.objective import AberrationMeter
    from emauto.wrappers.base import unwrap
    from emauto.wrappers.calibrated import CalibratedMicroscope, InstrumentCalibration
    from emauto.wrappers.counting import CountingMicroscope

    config = ProbeTuningConfig(
        max_steps=budget,
        exposure_s=(exposure_s, exposure_s),
        max_measurement_exposure_s=max_measurement_exposure_s,
    )
    if sim_config is not None and microscope != "sim://":
        raise ConfigError(f"{microscope}: a sim_config needs the plain sim:// twin")
    inner = connect(microscope) if sim_config is None else connect(microscope, config=sim_config)
    if lens_settle_s is not None:
        inner = CalibratedMicroscope(inner, InstrumentCalibration(lens_settle_s=lens_settle_s))
    counter = CountingMicroscope(inner)
    env = ProbeTuningEnv(counter, config)
    twin = unwrap(counter)
    if not isinstance(twin, SimulatedMicroscope):
        raise ConfigError(f"{microscope}: recording needs the in-process twin (sim://)")
    wavelength = optics.wavelength(counter.describe().energy_eV)
    rows: dict[str, list[Any]] = {k: [] for k in ("features", "can", "frames", "strehl", "extra")}
    meter = AberrationMeter(
        env.knobs,
        counter,
        last_frame=lambda: env.last_frame,
        aperture_rad=config.convergence_rad,
        max_exposure_s=config.max_measurement_exposure_s,
    )

    def stop_outcome() -> float:
        """The true Strehl ratio a stop now leaves: the settled lenses plus the final move."""
        move = dict(zip(policy.knobs, policy.stop_point() - policy.x, strict=True))
        left = twin.aberrations_after_move(move, scoring_wait_s(twin, config))
        return optics.strehl_ratio(left, wavelength, config.convergence_rad)

    def decide(features: np.ndarray, can_measure: bool) -> Choice:
        rows["features"].append(features)
        rows["can"].append(can_measure)
        rows["frames"].append(counter.acquisitions)
        rows["strehl"].append(stop_outcome())
        rows["extra"].append(not policy.final_move_fits())
        return Choice.MEASURE

    final: list[float] = []

    class Recording(BeliefStopPolicy):
        def final_action(self) -> np.ndarray | None:
            final.append(stop_outcome())  # before run_episode applies the final move
            return super().final_action()

    policy = Recording(env.knobs, env.step_limits, meter, decide)
    try:
        result = run_episode(env, policy, seed, counter, max_acquisitions=budget)
    finally:
        env.close()
        counter.close()
    return {
        "features": np.array(rows["features"], dtype=np.float32).reshape(-1, FEATURE_SIZE),
        "can_measure": np.array(rows["can"], dtype=bool),
        "frames": np.array(rows["frames"], dtype=np.int64),
        "strehl": np.array(rows["strehl"], dtype=np.float64),
        "extra_frame": np.array(rows["extra"], dtype=bool),
        "final_strehl": np.array(result.final_strehl),
        "final_predicted": np.array(final[0] if final else math.nan),
    }


def episode_twin(
    config: BeliefTrainingConfig, rng: np.random.Generator
) -> tuple[SimConfig, float | None] | None:
    """With ``config.randomise``: an episode's twin (`randomised_config`) and the lens
    settling time (s) its calibration reports (None: seen bare); else None."""
    from emauto.drivers.sim.twin import SETTLING_TIME_CONSTANTS

    if config.randomise is None:
        return None
    sim_config = randomised_config(rng, config.randomise)
    error = float(rng.uniform(-1.0, 1.0))
    if config.lens_settle_error is None:
        return sim_config, None
    settle = SETTLING_TIME_CONSTANTS * sim_config.effects.lens_tau_s
    return sim_config, settle * (1.0 + config.lens_settle_error * error)


def _record_chunk(payload: str, indices: list[int]) -> list[dict[str, np.ndarray]]:
    config = BeliefTrainingConfig.model_validate_json(payload)
    torch.set_num_threads(1)
    episodes = []
    for index in indices:
        rng = np.random.default_rng(_episode_seed(config, index))
        microscope = config.microscopes[int(rng.integers(len(config.microscopes)))]
        low, high = config.exposure_s
        exposure = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        twin = episode_twin(config, rng)  # drawn after the above: plain episodes unchanged
        episode = record_episode(
            "sim://" if twin is not None else microscope,
            exposure,
            _episode_seed(config, index),
            config.budget,
            sim_config=None if twin is None else twin[0],
            max_measurement_exposure_s=config.max_measurement_exposure_s,
            lens_settle_s=None if twin is None else twin[1],
        )
        episode["exposure_s"] = np.array(exposure)
        if twin is not None:
            episode["twin"] = np.array(twin[0].model_dump_json(exclude_defaults=True))
        episodes.append(episode)
    return episodes


def record_episodes(
    config: BeliefTrainingConfig,
    count: int,
    first: int = 0,
    *,
    scheduler_address: str | None = None,
    progress: bool = True,
    folder: str | Path | None = None,
) -> list[dict[str, np.ndarray]]:
    """Record episodes ``first .. first + count - 1`` on Dask, in order.

    ``folder``: each chunk of `CHUNK` episodes is written there as it completes
    (``chunk-FIRST.npz``) and read back instead of recorded again: an interrupted recording
    resumes, and a long one can be used before it ends.
    """
    from distributed import Client, LocalCluster, as_completed
    from tqdm import tqdm

    indices = list(range(first, first + count))
    chunks = [indices[i : i + CHUNK] for i in range(0, count, CHUNK)]
    results: list[list[dict[str, np.ndarray]] | None] = [None] * len(chunks)
    paths = [None if folder is None else Path(folder) / f"chunk-{c[0]:07d}.npz" for c in chunks]
    for i, path in enumerate(paths):
        if path is not None and path.exists():
            results[i] = load_episodes(path)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        cluster = None
        if scheduler_address is None:
            cluster = LocalCluster(
                n_workers=config.workers,
                threads_per_worker=1,
                dashboard_address=":0",
                processes=True,
            )
        client = Client(scheduler_address or cluster)
        try:
            payload = config.model_dump_json()
            futures = [
                client.submit(_record_chunk, payload, chunks[i], pure=False) for i in missing
            ]
            order = {future.key: i for future, i in zip(futures, missing, strict=True)}
            total = sum(len(chunks[i]) for i in missing)
            with tqdm(total=total, unit="episode", disable=not progress, file=sys.stderr) as bar:
                for future in as_completed(futures):
                    i = order[future.key]
                    part = future.result()
                    results[i] = part
                    path = paths[i]
                    if path is not None:
                        save_episodes(part, path)
                    bar.update(len(chunks[i]))
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    return [episode for part in results if part is not None for episode in part]


# ------------------------------------------------------------------ the replay env


class StopReplayEnv(gym.Env[dict[str, np.ndarray], np.int64]):
    """Recorded episodes replayed decision by decision (see the module docstring)."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        episodes: Sequence[dict[str, np.ndarray]],
        success_strehl: float = 0.8,
        frame_cost: float = 0.01,
        false_done_penalty: float = 4.0,
    ) -> None:
        super().__init__()
        self.episodes = [e for e in episodes if len(e["strehl"]) > 0]
        if not self.episodes:
            raise ConfigError("no recorded decision points to replay")
        self.success_strehl = success_strehl
        self.frame_cost = frame_cost
        self.false_done_penalty = false_done_penalty
        self.observation_space = spaces.Dict(  # type: ignore[assignment]
            {
                "public": spaces.Box(-FEATURE_LIMIT, FEATURE_LIMIT, (FEATURE_SIZE,), np.float32),
                "privileged": spaces.Box(-1.0, 1.0, (PRIVILEGED_SIZE,), np.float32),
            }
        )
        self.action_space = spaces.Discrete(len(Choice))
        self._episode = self.episodes[0]
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._episode = self.episodes[int(self.np_random.integers(len(self.episodes)))]
        self._t = 0
        return self._observation(), {}

    def step(
        self, action: np.int64 | int
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        outcome = replay_step(
            self._episode,
            self._t,
            Choice(int(action)),
            self.success_strehl,
            self.frame_cost,
            self.false_done_penalty,
        )
        reward, ended = outcome
        info: dict[str, Any] = {}
        if ended:  # as `replay_policy` scores it: the state left aligned
            info["is_success"] = bool(self._episode["strehl"][self._t] >= self.success_strehl)
        else:
            self._t += 1
        return self._observation(), reward, ended, False, info

    def _observation(self) -> dict[str, np.ndarray]:
        strehl = self._episode["strehl"]
        privileged = np.array([strehl[self._t], np.max(strehl[self._t :])], dtype=np.float32)
        return {"public": self._episode["features"][self._t].copy(), "privileged": privileged}


def replay_step(
    episode: dict[str, np.ndarray],
    t: int,
    choice: Choice,
    success_strehl: float,
    frame_cost: float,
    false_done_penalty: float,
) -> tuple[float, bool]:
    """Reward and whether the episode ends, for ``choice`` at decision point ``t``."""
    last = t + 1 >= len(episode["strehl"])
    if choice == Choice.MEASURE and episode["can_measure"][t] and not last:
        return -frame_cost * float(episode["frames"][t + 1] - episode["frames"][t]), False
    reward = -frame_cost * float(episode["extra_frame"][t])
    if choice == Choice.DECLARE:
        aligned = episode["strehl"][t] >= success_strehl
        reward += 1.0 if aligned else -false_done_penalty
    return reward, True


Chooser = Callable[[dict[str, np.ndarray], int], Choice]


def actor_chooser(actor: StopActor) -> Chooser:
    """``choose(episode, t)``: the actor's choice at decision point ``t``."""
    return lambda episode, t: Choice(int(actor.act(episode["features"][t])[0]))


def expert_chooser(margin: float) -> Chooser:
    """``choose(episode, t)``: the privileged expert's choice (`expert_choice`)."""
    return lambda episode, t: expert_choice(episode, t, margin)


def replay_policy(
    episodes: Sequence[dict[str, np.ndarray]], choose: Chooser, success_strehl: float = 0.8
) -> dict[str, Any]:
    """A chooser on recorded episodes: success (state left), false dones, frames."""
    successes, false_dones, declared, frames = [], [], [], []
    for episode in episodes:
        n = len(episode["strehl"])
        if n == 0:
            continue
        t = 0
        while True:
            choice = choose(episode, t)
            if choice == Choice.MEASURE and episode["can_measure"][t] and t + 1 < n:
                t += 1
                continue
            break
        aligned = bool(episode["strehl"][t] >= success_strehl)
        successes.append(aligned)
        declared.append(choice == Choice.DECLARE)
        false_dones.append(choice == Choice.DECLARE and not aligned)
        frames.append(int(episode["frames"][t]) + int(episode["extra_frame"][t]))
    count = len(successes)
    return {
        "episodes": count,
        "success_rate": float(np.mean(successes)),
        "declared_rate": float(np.mean(declared)),
        "false_done_rate": float(np.mean(false_dones)),
        "median_acquisitions": float(np.median(frames)),
    }


def expert_choice(episode: dict[str, np.ndarray], t: int, margin: float) -> Choice:
    """The privileged expert (training only: it reads the recorded truth): declare when a
    stop now leaves at least ``0.8 + margin``, else measure while it can, else hand over."""
    if episode["strehl"][t] >= 0.8 + margin:
        return Choice.DECLARE
    if episode["can_measure"][t] and t + 1 < len(episode["strehl"]):
        return Choice.MEASURE
    return Choice.OPERATOR


def clone_expert(
    config: BeliefTrainingConfig, episodes: Sequence[dict[str, np.ndarray]]
) -> tuple[StopActor, float]:
    """Behaviour cloning of `expert_choice` on every decision point of ``episodes`` (the
    states do not depend on the choices, so this is DAgger's aggregate at once); the actor
    and its agreement with the expert."""
    data = Rollouts()
    for episode in episodes:
        for t in range(len(episode["strehl"])):
            data.public.append(episode["features"][t])
            data.expert.append(np.array([int(expert_choice(episode, t, config.expert_margin))]))
    spec = ActorSpec(
        observation_size=FEATURE_SIZE,
        action_nvec=StopActor.action_nvec,
        hidden=config.hidden,
        provenance={"trainer": "emauto.tasks.probe_tuning.belief_training", **config.model_dump()},
    )
    actor = StopActor(spec)
    if config.bc_epochs:
        behaviour_clone(actor, data, config.bc_epochs, config.seed)
    predicted = np.array([actor.act(p)[0] for p in data.public])
    return actor, float(np.mean(predicted == np.array(data.expert)[:, 0]))


def counterfactual_error(episodes: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """How well the recorded stop outcomes predict the real final move at the budget."""
    predicted = np.array([float(e["final_predicted"]) for e in episodes])
    real = np.array([float(e["final_strehl"]) for e in episodes])
    keep = np.isfinite(predicted) & np.isfinite(real)
    difference = np.abs(predicted[keep] - real[keep])
    agree = (predicted[keep] >= 0.8) == (real[keep] >= 0.8)
    return {
        "episodes": int(keep.sum()),
        "median_abs_strehl_error": float(np.median(difference)) if keep.any() else math.nan,
        "max_abs_strehl_error": float(np.max(difference)) if keep.any() else math.nan,
        "success_agreement": float(np.mean(agree)) if keep.any() else math.nan,
    }


# ------------------------------------------------------------------ the whole recipe


def train_on_episodes(
    config: BeliefTrainingConfig,
    train: Sequence[dict[str, np.ndarray]],
    progress: bool = True,
    *,
    tensorboard_log: str | Path | None = None,
    notes: dict[str, Any] | None = None,
) -> tuple[StopActor, float]:
    """Behaviour cloning of the privileged expert, then PPO with the privileged critic on
    `StopReplayEnv`s of ``train``; the final actor and the clone's agreement with the
    expert. With ``progress``, PPO's training episodes (mean reward, success rate) are
    printed on stderr after each rollout; TensorBoard logs go to ``tensorboard_log`` if
    given. Ctrl-C during PPO keeps the actor reached so far; ``notes`` (a dict, if given)
    receives the steps done and whether training was interrupted."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from emauto.models.sb3_callbacks import EpisodeStatsPrinter
    from emauto.models.sb3_policy import learn_until_interrupted

    torch.manual_seed(config.seed)
    torch.set_num_threads(config.torch_threads)

    def make(i: int) -> Any:
        def build() -> Monitor:
            env = StopReplayEnv(
                train,
                frame_cost=config.frame_cost,
                false_done_penalty=config.false_done_penalty,
            )
            env.reset(seed=config.seed * 1000 + i)
            return Monitor(env)  # episode returns for the printed lines; changes nothing else

        return build

    actor, agreement = clone_expert(config, train)
    vec = DummyVecEnv([make(i) for i in range(config.n_envs)])
    model = PPO(
        AsymmetricActorCritic,
        vec,
        n_steps=config.n_steps,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        ent_coef=config.ent_coef,
        gamma=config.gamma,
        policy_kwargs={"hidden": config.hidden},
        seed=config.seed,
        verbose=0,  # SB3's tables would go to stdout: the stderr lines below instead
        device=config.device,
        tensorboard_log=None if tensorboard_log is None else str(tensorboard_log),
    )
    policy = model.policy
    assert isinstance(policy, AsymmetricActorCritic)
    copy_actor_into(policy, actor)
    done: dict[str, Any] = {"total_timesteps": config.timesteps, "timesteps_done": 0,
                            "interrupted": False}  # fmt: skip
    if config.timesteps:
        printer = [EpisodeStatsPrinter(every=config.n_steps * config.n_envs)] if progress else []
        done = dict(
            learn_until_interrupted(model, config.timesteps, callback=printer, progress_bar=False)
        )
    if notes is not None:
        notes.update(done)
    copy_actor_from(policy, actor)
    return actor.eval(), agreement


def save_episodes(episodes: Sequence[dict[str, np.ndarray]], path: str | Path) -> Path:
    """Recorded episodes as one .npz (arrays only, no pickles), written atomically."""
    arrays: dict[str, np.ndarray] = {}
    for i, episode in enumerate(episodes):
        for name, value in episode.items():
            arrays[f"{i}/{name}"] = value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".part")
    with temporary.open("wb") as handle:
        np.savez_compressed(handle, allow_pickle=False, **arrays)
    temporary.replace(path)
    return path


def load_episodes(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Read `save_episodes`' file."""
    episodes: dict[int, dict[str, np.ndarray]] = {}
    with np.load(Path(path), allow_pickle=False) as data:
        for key in data.files:
            index, name = key.split("/", 1)
            episodes.setdefault(int(index), {})[name] = data[key]
    return [episodes[i] for i in sorted(episodes)]


def train_belief_stop(
    config: BeliefTrainingConfig,
    out: str | Path,
    *,
    scheduler_address: str | None = None,
    folder: str | Path | None = None,
    progress: bool = True,
    tensorboard_log: str | Path | None = None,
) -> dict[str, Any]:
    """Record (into ``folder``, resuming what is there), train, save ``out/actor.pt`` and
    ``out/training.json``; the training record. Ctrl-C during PPO saves the actor reached
    so far, ``interrupted`` in the record; TensorBoard logs in ``tensorboard_log`` if
    given."""
    out = Path(out)
    started = time.perf_counter()
    total = config.episodes + config.validation
    present = len(list(Path(folder).glob("chunk-*.npz"))) if folder is not None else 0
    recorded = record_episodes(
        config, total, scheduler_address=scheduler_address, progress=progress, folder=folder
    )
    recording_s = time.perf_counter() - started
    train, validation = recorded[: config.episodes], recorded[config.episodes : total]
    notes: dict[str, Any] = {}
    actor, agreement = train_on_episodes(
        config, train, progress=progress, tensorboard_log=tensorboard_log, notes=notes
    )
    out.mkdir(parents=True, exist_ok=True)
    actor.save(out / "actor.pt")
    record = {
        "config": config.model_dump(),
        "recording_s": round(recording_s, 1),
        "chunks_read_from_the_folder": present,
        "ppo_timesteps": notes.get("timesteps_done", 0),
        "interrupted": bool(notes.get("interrupted", False)),
        "training_s": round(time.perf_counter() - started - recording_s, 1),
        "counterfactual_error": counterfactual_error(recorded),
        "bo_to_the_budget_success_rate": float(
            np.mean([float(e["final_strehl"]) >= 0.8 for e in validation])
        ),
        "clone_agreement_with_the_expert": round(agreement, 4),
        "train": replay_policy(train, actor_chooser(actor)),
        "validation": replay_policy(validation, actor_chooser(actor)),
        "privileged_expert_validation": replay_policy(
            validation, expert_chooser(config.expert_margin)
        ),
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    return record
