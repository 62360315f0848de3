"""Sokoban: push every box onto a target. Levels come from the Task seed and are solvable by construction.

A level is generated backwards, by reverse play as in gym-sokoban: a random room is carved, the boxes start on
their targets and the player *pulls* them away. Every pull undoes one push, so any position reverse play reaches is
solvable. Instead of one random walk (which mostly left the box a push or two from its target: 26% of random-play
episodes won) we explore reverse play breadth-first, which also gives each position's exact shortest solution, and
deal a position drawn uniformly among those needing `min_moves`..`max_moves` moves (max_moves <= max_steps, so every
level can be finished in time). `solve` (forward breadth-first search) is the independent oracle the tests use.

Reward: exactly `r_max` (10) for the push that puts the last box on a target; optional shaping `box_reward`
(default 0, so returns are 0 or r_max and R/R_max is the success rate) for every other push of a box onto (+) or
off (-) a target.
The grid helpers below (`MOVES`, `task_rng`, `bfs`) are shared with the FrozenLake env.
"""
from __future__ import annotations

import collections
import dataclasses
import random
from typing import Any, Callable, Hashable, Iterable, TypeVar

from paw_jax.envs.base import Action, EnvError, Task, TextEnv

MOVES = ("up", "down", "left", "right")
WALL, FLOOR, TARGET, BOX, BOX_ON_TARGET, PLAYER, PLAYER_ON_TARGET = "#", "_", "O", "X", "√", "P", "S"
LEGEND = (f"{WALL} wall, {FLOOR} floor, {TARGET} target, {BOX} box, {BOX_ON_TARGET} box on target, "
          f"{PLAYER} player, {PLAYER_ON_TARGET} player on target")
_MAX_ROOMS = 1000  # rooms carved before giving up (a room is rejected when its boxes cannot be pulled far enough)

State = TypeVar("State", bound=Hashable)


def task_rng(stream: str, task: Task) -> random.Random:
  """A generator seeded from (stream, split, seed); `random` hashes a str seed with SHA-512, so it is stable across
  processes and runs (unlike `hash()`)."""
  return random.Random(f"{stream}/{task.split}/{task.seed}")


def grid_text(rows: Iterable[str]) -> str:
  """Grid rows as text, cells separated by a space: a BPE tokenizer then keeps one token per cell (a run such as
  `__O` would merge into one token whose cells a model must learn to tell apart)."""
  return "\n".join(" ".join(row) for row in rows)


def grid_rows(text: str) -> list[str]:
  """The inverse of `grid_text` (also accepts rows written without the spaces)."""
  return [row.replace(" ", "") for row in text.strip().split("\n")]


def bfs(start: State, successors: Callable[[State], Iterable[tuple[str, State]]],
        is_goal: Callable[[State], bool]) -> list[str] | None:
  """The shortest action sequence from `start` to a goal state, or None when no goal is reachable."""
  parents: dict[State, tuple[State, str] | None] = {start: None}
  frontier = collections.deque([start])
  while frontier:
    state = frontier.popleft()
    if is_goal(state):
      path = []
      while (link := parents[state]) is not None:
        state, action = link
        path.append(action)
      return path[::-1]
    for action, next_state in successors(state):
      if next_state not in parents:
        parents[next_state] = (state, action)
        frontier.append(next_state)
  return None


@dataclasses.dataclass(frozen=True)
class Level:
  """A Sokoban position on a `width` x `height` grid whose cells are flat indices `row * width + col`. The outer
  ring is always wall, so a move never needs a bounds check."""
  width: int
  height: int
  walls: frozenset[int]
  targets: frozenset[int]
  boxes: frozenset[int]
  player: int

  def deltas(self) -> dict[str, int]:
    return {"up": -self.width, "down": self.width, "left": -1, "right": 1}

  def render(self) -> str:
    def symbol(cell: int) -> str:
      if cell in self.walls:
        return WALL
      on_target = cell in self.targets
      if cell == self.player:
        return PLAYER_ON_TARGET if on_target else PLAYER
      if cell in self.boxes:
        return BOX_ON_TARGET if on_target else BOX
      return TARGET if on_target else FLOOR
    return grid_text("".join(symbol(row * self.width + col) for col in range(self.width))
                     for row in range(self.height))

  @classmethod
  def parse(cls, text: str) -> Level:
    """The inverse of `render` (hand-made levels in tests)."""
    rows = grid_rows(text)
    width, height, flat = len(rows[0]), len(rows), "".join(rows)
    if any(len(row) != width for row in rows) or set(flat) - set(WALL + FLOOR + TARGET + BOX + BOX_ON_TARGET +
                                                                   PLAYER + PLAYER_ON_TARGET):
      raise ValueError(f"sokoban level must be a rectangle of the symbols {LEGEND}; got {text!r}")

    def cells(symbols: str) -> frozenset[int]:
      return frozenset(i for i, symbol in enumerate(flat) if symbol in symbols)

    walls, boxes, players = cells(WALL), cells(BOX + BOX_ON_TARGET), cells(PLAYER + PLAYER_ON_TARGET)
    targets = cells(TARGET + BOX_ON_TARGET + PLAYER_ON_TARGET)
    border = {i for i in range(width * height) if i // width in (0, height - 1) or i % width in (0, width - 1)}
    if not border <= walls or len(players) != 1 or not boxes or len(boxes) != len(targets):
      raise ValueError("sokoban level needs a wall border, one player and as many boxes as targets (at least one)")
    return cls(width, height, walls, targets, boxes, min(players))


def push(level: Level, player: int, boxes: frozenset[int], delta: int) -> tuple[int, frozenset[int]] | None:
  """The (player, boxes) after moving by `delta`, or None when a wall or a blocked box stops the move."""
  ahead = player + delta
  if ahead in level.walls:
    return None
  if ahead in boxes:
    beyond = ahead + delta
    if beyond in level.walls or beyond in boxes:
      return None
    boxes = (boxes - {ahead}) | {beyond}
  return ahead, boxes


def solve(level: Level) -> list[str] | None:
  """A shortest solution (list of moves) of `level`, or None when it has none."""
  deltas = level.deltas()

  def successors(state: tuple[int, frozenset[int]]) -> Iterable[tuple[str, tuple[int, frozenset[int]]]]:
    for move, delta in deltas.items():
      if (moved := push(level, *state, delta)) is not None:
        yield move, moved

  return bfs((level.player, level.boxes), successors, lambda state: state[1] == level.targets)


def _carve_room(rng: random.Random, dim: int, floor_fraction: float) -> list[int]:
  """Floor cells of a connected room carved by a random walk inside a `dim` x `dim` box of walls."""
  interior = {row * dim + col for row in range(1, dim - 1) for col in range(1, dim - 1)}
  num_floor = max(3, round(floor_fraction * len(interior)))
  deltas = (-dim, dim, -1, 1)
  cell = rng.choice(sorted(interior))
  floor = {cell}
  while len(floor) < num_floor:
    if (ahead := cell + rng.choice(deltas)) in interior:
      cell = ahead
      floor.add(cell)
  return sorted(floor)


def _reverse_distances(floor: frozenset[int], targets: frozenset[int], width: int,
                       max_moves: int) -> dict[tuple[int, frozenset[int]], int]:
  """Every (player, boxes) position that reverse play (walking, and pulling the box behind the player) reaches from
  a solved position within `max_moves`, mapped to its reverse distance: exactly its shortest forward solution,
  since each pull undoes one push."""
  solved = [(player, targets) for player in sorted(floor - targets)]
  distances = dict.fromkeys(solved, 0)
  frontier = collections.deque(solved)
  while frontier:
    state = frontier.popleft()
    if distances[state] == max_moves:
      continue
    player, boxes = state
    for delta in (-width, width, -1, 1):
      ahead, behind = player + delta, player - delta
      if ahead not in floor or ahead in boxes:
        continue
      pulled = [(boxes - {behind}) | {player}] if behind in boxes else []
      for next_boxes in [boxes, *pulled]:
        if (ahead, next_boxes) not in distances:
          distances[ahead, next_boxes] = distances[state] + 1
          frontier.append((ahead, next_boxes))
  return distances


def generate_level(rng: random.Random, dim: int, num_boxes: int, min_moves: int, max_moves: int,
                   floor_fraction: float) -> Level:
  """A level whose shortest solution has between `min_moves` and `max_moves` moves."""
  for _ in range(_MAX_ROOMS):
    floor = _carve_room(rng, dim, floor_fraction)
    targets = frozenset(rng.sample(floor, num_boxes))
    distances = _reverse_distances(frozenset(floor), targets, dim, max_moves)
    candidates = [state for state, moves in distances.items() if moves >= min_moves]
    if candidates:  # else the boxes cannot be pulled far enough in this room: carve another
      player, boxes = rng.choice(candidates)
      return Level(dim, dim, frozenset(range(dim * dim)) - set(floor), targets, boxes, player)
  raise EnvError(f"sokoban: no room allows a {min_moves}-move level in {_MAX_ROOMS} tries (dim={dim}, "
                 f"num_boxes={num_boxes}); lower min_moves")


class SokobanEnv(TextEnv):
  """Sokoban on a `dim` x `dim` grid (outer ring of walls included) with `num_boxes` boxes."""
  name = "sokoban"
  # rewards: TextEnv's (10 on success, -0.1 for an invalid action)
  max_steps = 25

  def __init__(self, dim: int = 6, num_boxes: int = 1, min_moves: int = 3, max_moves: int = 12,
               floor_fraction: float = 0.8, box_reward: float = 0.0, max_steps: int | None = None):
    super().__init__(max_steps)
    if dim < 5:
      raise ValueError(f"sokoban: dim must be >= 5 (a 3x3 interior at least), got {dim}")
    if not 0.0 < floor_fraction <= 1.0:
      raise ValueError(f"sokoban: floor_fraction must be in (0, 1], got {floor_fraction}")
    max_boxes = max(1, round(floor_fraction * (dim - 2) ** 2) // 4)
    if not 1 <= num_boxes <= max_boxes:
      raise ValueError(f"sokoban: num_boxes must be in [1, {max_boxes}] for dim={dim}, got {num_boxes}")
    if not 1 <= min_moves <= max_moves <= self.max_steps:
      raise ValueError(f"sokoban: need 1 <= min_moves <= max_moves <= max_steps (so every level can be finished in "
                       f"time), got {min_moves}, {max_moves}, {self.max_steps}")
    self.dim, self.num_boxes, self.min_moves, self.max_moves = dim, num_boxes, min_moves, max_moves
    self.floor_fraction, self.box_reward = floor_fraction, box_reward
    self.level: Level | None = None  # the current position; read by the oracle

  def task_description(self) -> str:
    boxes = "the box onto the target" if self.num_boxes == 1 else f"the {self.num_boxes} boxes onto the targets"
    return (f"You are the player ({PLAYER}) in a Sokoban puzzle. Push {boxes}: walking into a box pushes it one "
            f"cell; a box cannot be pulled, and pushing it against a wall or another box does nothing. The puzzle "
            f"is solved when every box is on a target. Legend: {LEGEND}. "
            f"Actions: {', '.join(MOVES)}.")

  def _generate(self, task: Task) -> Level:
    return generate_level(task_rng(self.name, task), self.dim, self.num_boxes, self.min_moves, self.max_moves,
                          self.floor_fraction)

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    self.level = self._generate(task)
    return self._observation("A new puzzle."), {"task": self.task_description(), "task_type": self.name}

  def admissible_actions(self) -> list[str]:
    return list(MOVES)

  def exploratory_actions(self) -> list[str]:
    """The moves that change the position: walking into a wall or a blocked box does nothing."""
    level = self.level
    return [move for move in MOVES if push(level, level.player, level.boxes, level.deltas()[move]) is not None]

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    level = self.level
    moved = push(level, level.player, level.boxes, level.deltas()[action.text])
    if moved is None:
      return self._observation(f"You cannot move {action.text}."), 0.0, False, {}
    player, boxes = moved
    placed = len(boxes & level.targets) - len(level.boxes & level.targets)
    pushed = boxes != level.boxes
    self.level = dataclasses.replace(level, player=player, boxes=boxes)
    if boxes == level.targets:
      return self._observation("Every box is on a target. You solved the puzzle!"), self.r_max, True, {"won": True}
    message = f"You pushed a box {action.text}." if pushed else f"You moved {action.text}."
    return self._observation(message), placed * self.box_reward, False, {}

  def _observation(self, message: str) -> str:
    return f"{message}\n{self.level.render()}"
