"""FrozenLake: walk from the top-left corner to the goal in the bottom-right corner without falling into a hole.

Maps follow gym's `generate_random_map`: every other cell is a hole with probability `hole_prob`, and maps are
redrawn from the same task-seeded generator (so deterministically) until the goal is reachable. Slippery dynamics
follow gym too: the intended direction w.p. 1/3, each perpendicular one w.p. 1/3. The slip generator is seeded from
the task as well, so an episode is a function of the task and the action sequence (invalid actions draw nothing).
An observation is the last move's outcome, the map (one space between cells) and a line naming the holes and edges
one step away (`hazard_hint=False` drops it: the policy must then read the map). Reward: `r_max` (10) on reaching the
goal, 0 otherwise; a hole ends the episode as failed.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any

from paw_jax.envs.base import Action, EnvError, Task, TextEnv
from paw_jax.envs.sokoban import MOVES, bfs, grid_rows, grid_text, task_rng  # grid helpers shared by the grid envs

PLAYER, FROZEN, HOLE, GOAL = "P", "_", "O", "G"
LEGEND = f"{PLAYER} player, {FROZEN} frozen ice, {HOLE} hole, {GOAL} goal"
PERPENDICULAR = {"up": ("left", "right"), "down": ("left", "right"), "left": ("up", "down"),
                 "right": ("up", "down")}
_MAX_MAPS = 10_000  # maps drawn before giving up on a reachable goal


@functools.cache
def neighbours(size: int) -> tuple[dict[str, int], ...]:
  """For each flat cell `row * size + col`, the cell each move leads to; a move off the lake stays in place."""
  def target(cell: int, move: str) -> int:
    row, col = divmod(cell, size)
    row += {"up": -1, "down": 1}.get(move, 0)
    col += {"left": -1, "right": 1}.get(move, 0)
    return row * size + col if 0 <= row < size and 0 <= col < size else cell
  return tuple({move: target(cell, move) for move in MOVES} for cell in range(size * size))


@dataclasses.dataclass(frozen=True)
class Lake:
  """A `size` x `size` map; cells are flat indices `row * size + col`."""
  size: int
  holes: frozenset[int]
  start: int
  goal: int

  @functools.cached_property
  def rows(self) -> tuple[str, ...]:
    """The map without the player, one string per row (cached: rendering is on the step hot path)."""
    def symbol(cell: int) -> str:
      return HOLE if cell in self.holes else GOAL if cell == self.goal else FROZEN
    return tuple("".join(symbol(row * self.size + col) for col in range(self.size)) for row in range(self.size))

  def surroundings(self, player: int) -> str:
    """The holes and edges one step away, in words (the grid alone asks a model to find its own cell)."""
    ahead = neighbours(self.size)[player]
    holes = [move for move, cell in ahead.items() if cell != player and cell in self.holes]
    edges = [move for move, cell in ahead.items() if cell == player]
    parts = [f"{name} {', '.join(moves)}" for name, moves in (("hole", holes), ("edge", edges)) if moves]
    return "Around you: " + ("; ".join(parts) if parts else "no hole or edge")

  def render(self, player: int) -> str:
    row, col = divmod(player, self.size)
    rows = list(self.rows)
    rows[row] = rows[row][:col] + PLAYER + rows[row][col + 1:]
    return grid_text(rows)

  @classmethod
  def parse(cls, text: str) -> Lake:
    """The inverse of `render` at the start position (hand-made maps in tests)."""
    rows = grid_rows(text)
    flat = "".join(rows)
    if any(len(row) != len(rows) for row in rows) or sorted(flat.count(s) for s in PLAYER + GOAL) != [1, 1] or \
        set(flat) - set(PLAYER + FROZEN + HOLE + GOAL):
      raise ValueError(f"frozenlake map must be a square of {LEGEND} with one {PLAYER} and one {GOAL}; got {text!r}")
    holes = frozenset(i for i, symbol in enumerate(flat) if symbol == HOLE)
    return cls(len(rows), holes, flat.index(PLAYER), flat.index(GOAL))


def solve(lake: Lake) -> list[str] | None:
  """A shortest hole-free path (list of moves) from start to goal on the non-slippery lake, or None."""
  table = neighbours(lake.size)

  def successors(cell: int) -> list[tuple[str, int]]:
    return [(move, ahead) for move, ahead in table[cell].items() if ahead not in lake.holes]

  return bfs(lake.start, successors, lambda cell: cell == lake.goal)


def generate_lake(rng: random.Random, size: int, hole_prob: float) -> Lake:
  """A random map (start top-left, goal bottom-right) whose goal is reachable."""
  start, goal = 0, size * size - 1
  for _ in range(_MAX_MAPS):
    holes = frozenset(cell for cell in range(1, goal) if rng.random() < hole_prob)
    lake = Lake(size, holes, start, goal)
    if solve(lake) is not None:
      return lake
  raise EnvError(f"frozenlake: no map with a reachable goal in {_MAX_MAPS} draws (size={size}, "
                 f"hole_prob={hole_prob}); lower hole_prob")


class FrozenLakeEnv(TextEnv):
  """FrozenLake on a `size` x `size` map; `slippery` turns on gym's stochastic moves; `hazard_hint` adds the line
  naming the holes and edges next to the player."""
  name = "frozenlake"
  # rewards: TextEnv's (10 on success, -0.1 for an invalid action)
  max_steps = 20

  def __init__(self, size: int = 4, hole_prob: float = 0.2, slippery: bool = False, max_steps: int | None = None,
               hazard_hint: bool = True):
    super().__init__(max_steps)
    if size < 2:
      raise ValueError(f"frozenlake: size must be >= 2, got {size}")
    if not 0.0 <= hole_prob < 1.0:
      raise ValueError(f"frozenlake: hole_prob must be in [0, 1), got {hole_prob}")
    self.size, self.hole_prob, self.slippery, self.hazard_hint = size, hole_prob, slippery, hazard_hint
    self.lake: Lake | None = None  # the current map; read by the oracle
    self.player = 0  # the player's cell
    self._slip_rng: random.Random | None = None

  def task_description(self) -> str:
    slip = (" The ice is slippery: you move in the chosen direction only one time in three, otherwise to one of "
            "the two sides." if self.slippery else "")
    return (f"You are on a frozen lake. Walk from your position ({PLAYER}) to the goal ({GOAL}) without falling "
            f"into a hole ({HOLE}); moving off the edge leaves you where you are.{slip} Legend: {LEGEND}. "
            f"Actions: {', '.join(MOVES)}.")

  def _generate(self, task: Task) -> Lake:
    return generate_lake(task_rng(self.name, task), self.size, self.hole_prob)

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    self.lake = self._generate(task)
    self.player = self.lake.start
    self._slip_rng = task_rng(f"{self.name}-slip", task)
    return self._observation("You are at the start."), {"task": self.task_description(), "task_type": self.name}

  def admissible_actions(self) -> list[str]:
    return list(MOVES)

  def exploratory_actions(self) -> list[str]:
    """The moves that stay on the lake: walking into the edge does nothing."""
    return [move for move, cell in neighbours(self.lake.size)[self.player].items() if cell != self.player]

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    intended = action.text
    move = self._slip_rng.choice((intended, *PERPENDICULAR[intended])) if self.slippery else intended
    message = f"You slipped and went {move} instead of {intended}." if move != intended else f"You went {move}."
    ahead = neighbours(self.lake.size)[self.player][move]
    if ahead == self.player:
      return self._observation(f"{message} You hit the edge of the lake and stay where you are."), 0.0, False, {}
    self.player = ahead
    if ahead in self.lake.holes:
      return self._observation(f"{message} You fell into a hole. Game over."), 0.0, True, {}
    if ahead == self.lake.goal:
      return self._observation(f"{message} You reached the goal!"), self.r_max, True, {"won": True}
    return self._observation(message), 0.0, False, {}

  def _observation(self, message: str) -> str:
    hint = f"\n{self.lake.surroundings(self.player)}." if self.hazard_hint else ""
    return f"{message}\n{self.lake.render(self.player)}{hint}"
