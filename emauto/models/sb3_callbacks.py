"""stable-baselines3 callbacks that print how training goes, one line each, on stderr.

- `PrintedEvalCallback`: SB3's `EvalCallback` that prints one line per evaluation: steps,
  mean (and spread of the) episode reward, success rate (from ``is_success``, or a task's own
  key such as ``success``, in the last step's info).
- `EpisodeStatsPrinter`: the training episodes finished since the last line (at most one
  line every ``every`` steps, at the end of a rollout): steps, mean episode reward, success
  rate. Costs nothing: no extra episode is run.

stdout stays free for a command's result (``--json``).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback


def _success(info: dict[str, Any], key: str) -> bool | None:
    value = info.get("is_success", info.get(key))
    return None if value is None else bool(value)


def _rate(successes: list[bool]) -> str:
    return f"{100 * float(np.mean(successes)):.0f}%" if successes else "n/a"


class PrintedEvalCallback(EvalCallback):
    """`EvalCallback` printing ``[eval] N steps: mean reward R ± S (K episodes), success
    rate P%`` on stderr after each evaluation (SB3's own lines, on stdout, stay off:
    ``verbose=0``)."""

    def __init__(self, *args: Any, success_key: str = "success", **kwargs: Any) -> None:
        kwargs.setdefault("verbose", 0)
        super().__init__(*args, **kwargs)
        self.success_key = success_key
        self.lines: list[str] = []

    def _log_success_callback(self, locals_: dict[str, Any], globals_: dict[str, Any]) -> None:
        if locals_["done"]:
            success = _success(locals_["info"], self.success_key)
            if success is not None:
                self._is_success_buffer.append(success)

    def _on_step(self) -> bool:
        keep_going = super()._on_step()
        if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
            spread = ""
            if self.evaluations_results:
                spread = f" ± {float(np.std(self.evaluations_results[-1])):.3f}"
            line = (
                f"[eval] {self.num_timesteps} steps: mean reward {self.last_mean_reward:.3f}"
                f"{spread} ({self.n_eval_episodes} episodes), success rate "
                f"{_rate(list(self._is_success_buffer))}"
            )
            self.lines.append(line)
            print(line, file=sys.stderr, flush=True)
        return keep_going


class EpisodeStatsPrinter(BaseCallback):
    """Prints ``[train] N steps: mean episode reward R (K episodes), success rate P%`` for
    the training episodes finished since the last line, at most once every ``every`` steps.
    Episode rewards come from SB3's ``Monitor`` (or gymnasium's ``RecordEpisodeStatistics``)
    info, successes from ``is_success`` / ``success_key`` in the last step's info."""

    def __init__(self, every: int = 1, success_key: str = "success") -> None:
        super().__init__()
        self.every = max(1, every)
        self.success_key = success_key
        self.lines: list[str] = []
        self._rewards: list[float] = []
        self._successes: list[bool] = []
        self._last = 0

    def _on_step(self) -> bool:
        dones = self.locals.get("dones")
        infos = self.locals.get("infos") or []
        if dones is None:
            return True
        for done, info in zip(np.atleast_1d(dones), infos, strict=False):
            if not done:
                continue
            episode = info.get("episode")
            if isinstance(episode, dict) and "r" in episode:
                self._rewards.append(float(np.asarray(episode["r"]).ravel()[0]))
            success = _success(info, self.success_key)
            if success is not None:
                self._successes.append(success)
        return True

    def _on_rollout_end(self) -> None:
        if not self._rewards or self.num_timesteps - self._last < self.every:
            return
        line = (
            f"[train] {self.num_timesteps} steps: mean episode reward "
            f"{float(np.mean(self._rewards)):.3f} ({len(self._rewards)} episodes), "
            f"success rate {_rate(self._successes)}"
        )
        self.lines.append(line)
        print(line, file=sys.stderr, flush=True)
        self._rewards, self._successes, self._last = [], [], self.num_timesteps
