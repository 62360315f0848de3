"""Advantage estimators, host-side numpy: GRPO, GiGPO, RLOO and PPO's turn-level GAE, registered by algorithm name.

Rows are turns (one row per trajectory step, as in the training batch). Every estimator has the signature
`fn(traj: Trajectories, cfg: AdvantageConfig) -> Advantages` and returns one advantage per row, which the batch
broadcasts over the row's action tokens; `return_B` (the critic's target) is produced by GAE only.

Conventions shared by the group estimators (as verl / verl-agent): the group std is the unbiased one (ddof=1),
eps = 1e-6 is added to it, and a group with a single member gets advantage 0 (no peer to compare with).

Shape suffixes: B rows (turns), E episodes (trajectories) of the update, N any list of values being normalised.
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
from typing import Callable, NamedTuple

import numpy as np


@dataclasses.dataclass(frozen=True)
class Trajectories:
  """Per-row episode bookkeeping of one update; a trajectory is the pair (group_id, traj_id)."""
  reward_B: np.ndarray  # env reward of the step (float)
  done_B: np.ndarray  # the episode terminated at this step (bool)
  group_id_B: np.ndarray  # rollout group: the G trajectories of one task
  traj_id_B: np.ndarray  # trajectory id (unique within its group at least)
  step_B: np.ndarray  # turn index within the trajectory
  anchor_B: np.ndarray | None = None  # GiGPO: state key of the step (the current observation text)
  value_B: np.ndarray | None = None  # GAE: critic value V(s_t) of the turn

  def __post_init__(self):
    n = len(self.reward_B)
    for field in dataclasses.fields(self):
      array = getattr(self, field.name)
      if array is None:
        continue
      object.__setattr__(self, field.name, np.asarray(array))  # lists are accepted too
      if len(array) != n:
        raise ValueError(f"Trajectories.{field.name} has {len(array)} rows, expected {n} (as reward_B)")
    if len(set(zip(self.group_id_B.tolist(), self.traj_id_B.tolist(), self.step_B.tolist()))) != n:
      raise ValueError("Trajectories: (group_id, traj_id, step) must be unique per row")


@dataclasses.dataclass(frozen=True)
class AdvantageConfig:
  eps: float = 1e-6
  norm_by_std: bool = True  # GRPO/GiGPO: divide by the group std; False is GiGPO's 'mean_norm'
  # Episode statistics over step rows instead of one return per trajectory (verl-agent's GiGPO default
  # `compute_mean_std_cross_steps`): longer trajectories then weigh more in the group mean and std.
  cross_steps: bool = False
  step_gamma: float = 0.95  # GiGPO: discount of the step return
  step_weight: float = 1.0  # GiGPO: ω in A = A_episode + ω · A_step
  step_similarity: float | None = None  # GiGPO: None groups identical anchors; search-QA uses 0.9 (see _step_groups)
  gae_gamma: float = 1.0  # verl's PPO defaults
  gae_lambda: float = 1.0
  gae_whiten: bool = True  # verl whitens GAE advantages over the batch (here over rows: turn-level)


class Advantages(NamedTuple):
  advantage_B: np.ndarray  # float32
  return_B: np.ndarray | None  # float32 critic target; None for critic-free estimators


def dense_ids(*keys: np.ndarray) -> np.ndarray:
  """Integer id 0..K-1 of each row's key tuple, in order of first appearance."""
  table: dict[tuple, int] = {}
  return np.array([table.setdefault(key, len(table)) for key in zip(*(k.tolist() for k in keys))], dtype=np.int64)


def _normalize_in_groups(x_N: np.ndarray, gid_N: np.ndarray, cfg: AdvantageConfig) -> np.ndarray:
  """(x − mean_g) / (std_g + eps), or x − mean_g; a singleton group gives exactly 0."""
  count_G = np.bincount(gid_N)
  dev_N = x_N - (np.bincount(gid_N, x_N) / count_G)[gid_N]
  if not cfg.norm_by_std:
    return dev_N
  var_G = np.bincount(gid_N, dev_N**2) / np.maximum(count_G - 1, 1)
  return dev_N / (np.sqrt(var_G)[gid_N] + cfg.eps)


def _traj_returns(traj: Trajectories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(episode id per row, return per episode, group id per episode)."""
  tid_B = dense_ids(traj.group_id_B, traj.traj_id_B)
  return_E = np.bincount(tid_B, traj.reward_B.astype(np.float64))
  group_E = np.empty(len(return_E), np.int64)
  group_E[tid_B] = dense_ids(traj.group_id_B)
  return tid_B, return_E, group_E


def _episode_advantage(traj: Trajectories, cfg: AdvantageConfig) -> np.ndarray:
  tid_B, return_E, group_E = _traj_returns(traj)
  if cfg.cross_steps:
    return _normalize_in_groups(return_E[tid_B], group_E[tid_B], cfg)
  return _normalize_in_groups(return_E, group_E, cfg)[tid_B]


def _reverse_discounted_sum(x_B: np.ndarray, coef_B: np.ndarray, traj: Trajectories) -> np.ndarray:
  """y_t = x_t + coef_t · y_{t+1} along each trajectory, t+1 being the trajectory's next step row (0 after its last)."""
  tid_B = dense_ids(traj.group_id_B, traj.traj_id_B)
  y_B = np.zeros(len(x_B))
  following: dict[int, float] = {}
  for i in np.lexsort((traj.step_B, tid_B))[::-1]:
    y_B[i] = x_B[i] + coef_B[i] * following.get(tid_B[i], 0.0)
    following[tid_B[i]] = y_B[i]
  return y_B


def _next_in_traj(x_B: np.ndarray, traj: Trajectories) -> np.ndarray:
  """x of the trajectory's next step row; 0 on its last row."""
  tid_B = dense_ids(traj.group_id_B, traj.traj_id_B)
  order = np.lexsort((traj.step_B, tid_B))
  has_next = tid_B[order[1:]] == tid_B[order[:-1]]
  next_B = np.zeros(len(x_B))
  next_B[order[:-1][has_next]] = x_B[order[1:][has_next]]
  return next_B


def _step_groups(traj: Trajectories, cfg: AdvantageConfig) -> np.ndarray:
  """GiGPO step-group id per row: identical anchors within a rollout group.

  With `step_similarity` (verl-agent's similarity grouping) an anchor joins the first earlier step group of its
  rollout group whose first anchor has a difflib ratio ≥ step_similarity with it, else starts a new one.
  """
  if cfg.step_similarity is None:
    return dense_ids(traj.group_id_B, traj.anchor_B)
  representatives: dict = collections.defaultdict(list)  # rollout group -> first anchor of each step group
  cluster_B = np.empty(len(traj.anchor_B), np.int64)
  for i, (group, anchor) in enumerate(zip(traj.group_id_B.tolist(), traj.anchor_B.tolist())):
    reps = representatives[group]
    cluster_B[i] = next((k for k, rep in enumerate(reps)
                         if difflib.SequenceMatcher(None, anchor, rep).ratio() >= cfg.step_similarity), len(reps))
    if cluster_B[i] == len(reps):
      reps.append(anchor)
  return dense_ids(traj.group_id_B, cluster_B)


def grpo(traj: Trajectories, cfg: AdvantageConfig) -> Advantages:
  """Episode return normalised within its group, broadcast to every step of the trajectory."""
  return Advantages(_episode_advantage(traj, cfg).astype(np.float32), None)


def gigpo(traj: Trajectories, cfg: AdvantageConfig) -> Advantages:
  """GiGPO (Feng et al. 2025): A = A_episode + ω · A_step.

  Step groups: rows of one rollout group with an identical (or similar) anchor state. Step return: discounted return
  Σ_k γ^k r_{t+k} of the step rewards from the step on, normalised within its step group.
  """
  if traj.anchor_B is None:
    raise ValueError("gigpo needs Trajectories.anchor_B (the state key of every step)")
  step_return_B = _reverse_discounted_sum(
      traj.reward_B.astype(np.float64), np.full(len(traj.reward_B), cfg.step_gamma), traj)
  step_adv_B = _normalize_in_groups(step_return_B, _step_groups(traj, cfg), cfg)
  return Advantages((_episode_advantage(traj, cfg) + cfg.step_weight * step_adv_B).astype(np.float32), None)


def rloo(traj: Trajectories, cfg: AdvantageConfig) -> Advantages:
  """Leave-one-out baseline within the group: A_i = R_i − mean_{j≠i} R_j, broadcast to steps."""
  del cfg  # RLOO has no options
  tid_B, return_E, group_E = _traj_returns(traj)
  count_E = np.bincount(group_E)[group_E]
  others_E = np.bincount(group_E, return_E)[group_E] - return_E
  adv_E = np.where(count_E > 1, return_E - others_E / np.maximum(count_E - 1, 1), 0.0)
  return Advantages(adv_E[tid_B].astype(np.float32), None)


def gae(traj: Trajectories, cfg: AdvantageConfig) -> Advantages:
  """Turn-level GAE for PPO (one value per turn, as verl-agent's step-wise PPO).

  δ_t = r_t + γ V_{t+1} (1 − done_t) − V_t,  A_t = δ_t + γλ (1 − done_t) A_{t+1} within the trajectory,
  return_t = A_t + V_t. The last row of a trajectory has no V_{t+1} row, so a truncated episode bootstraps from 0.
  With `gae_whiten` the advantages (not the returns) are whitened over all rows: (A − mean) / sqrt(var + 1e-8),
  as verl does.
  """
  if traj.value_B is None:
    raise ValueError("gae needs Trajectories.value_B (the critic value of every turn)")
  value_B = traj.value_B.astype(np.float64)
  not_done_B = 1.0 - traj.done_B.astype(np.float64)
  delta_B = traj.reward_B + cfg.gae_gamma * _next_in_traj(value_B, traj) * not_done_B - value_B
  adv_B = _reverse_discounted_sum(delta_B, cfg.gae_gamma * cfg.gae_lambda * not_done_B, traj)
  return_B = adv_B + value_B
  if cfg.gae_whiten and len(adv_B) > 1:
    adv_B = (adv_B - adv_B.mean()) / np.sqrt(adv_B.var(ddof=1) + 1e-8)
  return Advantages(adv_B.astype(np.float32), return_B.astype(np.float32))


class Estimator(NamedTuple):
  """A registry entry: the estimator and what it needs from the trainer."""
  fn: Callable[[Trajectories, AdvantageConfig], Advantages]
  needs_critic: bool = False  # the learner then carries the critic plug-in, whose values fill value_B


# The algorithm names of `algo.name`: adding one is a function above and a line here.
ADVANTAGES: dict[str, Estimator] = {"grpo": Estimator(grpo), "gigpo": Estimator(gigpo), "rloo": Estimator(rloo),
                                    "ppo": Estimator(gae, needs_critic=True)}


def compute_advantages(name: str, traj: Trajectories, cfg: AdvantageConfig = AdvantageConfig()) -> Advantages:
  """Looks the estimator up by algorithm name and runs it."""
  if name not in ADVANTAGES:
    raise ValueError(f"unknown algorithm '{name}'; known: {', '.join(ADVANTAGES)}")
  return ADVANTAGES[name].fn(traj, cfg)
