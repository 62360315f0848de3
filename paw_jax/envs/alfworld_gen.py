"""Offline ALFWorld problems: official-format `game.tw-pddl` files sampled from the room layouts alfworld ships.

ALFWorld's games are PDDL problems over AI2-THOR rooms, played by TextWorld's PDDL engine with the package's own
domain (`alfred.pddl`) and grammar (`alfred.twl2`). The official problems are a download; this module builds new ones
the same way: a real FloorPlan's receptacles and their navigation points (`alfworld/gen/layouts`), objects of the
room's own types placed in receptacles that may hold them (`constants.VAL_RECEPTACLE_OBJECTS`), the official goal
PDDL and task templates (`goal_library`), and AI2-THOR ids mangled as in ALFRED (`Cabinet|+00.68|...` ->
`Cabinet_bar__plus_00_dot_68...`), so the package's demangler names them `cabinet 1` exactly as in ALFWorld.
Everything is a pure function of (split, seed, task types). `expert_plan` writes the winning command sequence from
the problem's facts (no planner).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
import types
from pathlib import Path
from typing import NamedTuple

import alfworld.gen.constants as constants
import alfworld.gen.goal_library as goal_library
from alfworld.agents.utils.misc import Demangler
from alfworld.gen.utils.py_util import multireplace

from paw_jax.envs.base import EnvError

TASK_TYPES = ("pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
              "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place")
SPLITS = ("train", "eval_in", "eval_out")

_ALFWORLD_ROOT = Path(constants.__file__).resolve().parents[1]
DOMAIN_PATH = _ALFWORLD_ROOT / "data" / "alfred.pddl"
GRAMMAR_PATH = _ALFWORLD_ROOT / "data" / "alfred.twl2"
_LAYOUTS = _ALFWORLD_ROOT / "gen" / "layouts"

# ALFRED's valid_unseen rooms (a kitchen, living room, bedroom and bathroom): held out of train / eval_in.
EVAL_OUT_SCENES = (10, 219, 308, 424)


class _Appliance(NamedTuple):
  receptacle: str  # the receptacle type the domain's action requires
  ability: str  # the constants.VAL_ACTION_OBJECTS key objects need
  verb: str  # the command: "<verb> X with Y"


_APPLIANCE = {"pick_clean_then_place_in_recep": _Appliance("SinkBasin", "Cleanable", "clean"),
              "pick_heat_then_place_in_recep": _Appliance("Microwave", "Heatable", "heat"),
              "pick_cool_then_place_in_recep": _Appliance("Fridge", "Coolable", "cool")}
_LAMP = "DeskLamp"  # a FloorLamp stands in no receptacle, so the domain's ToggleObject can never use it
_LAMP_HOLDERS = ("Desk", "Dresser", "SideTable")
# Receptacle types the layout files omit (appliances, holders) get this many instances when the room has the type.
_EXTRA_RECEPTACLE_COUNT = {"StoveBurner": 4}
_MAX_DISTRACTOR_TYPES = 10  # bounds the engine's work per step; rooms list 8-28 movable types (median 12)

_STATIC_RECEPTACLES = frozenset(constants.RECEPTACLES) - frozenset(constants.MOVABLE_RECEPTACLES)
_OBJECT_TYPES = sorted((frozenset(constants.OBJECTS) | frozenset(constants.MOVABLE_RECEPTACLES)) - _STATIC_RECEPTACLES)
_HOLDERS_OF = {}  # object type -> receptacle types that may hold it
for _recep, _objs in constants.VAL_RECEPTACLE_OBJECTS.items():
  if _recep in _STATIC_RECEPTACLES:
    for _obj in _objs:
      _HOLDERS_OF.setdefault(_obj, set()).add(_recep)
_PDDL_CHARS = {"-": "_minus_", "|": "_bar_", "+": "_plus_", ".": "_dot_", ",": "_comma_"}


@dataclasses.dataclass(frozen=True)
class Entity:
  """One object or receptacle instance: its AI2-THOR id (`Mug|+01.20|+00.90|-00.33`), type and location id."""
  id: str
  type: str
  location: str


@dataclasses.dataclass(frozen=True)
class Problem:
  """A sampled ALFWorld task: what to do, and where everything is."""
  task_type: str
  scene: int
  object_target: str
  parent_target: str  # '' for look_at_obj_in_light
  toggle_target: str  # '' unless look_at_obj_in_light
  description: str  # "put a clean mug in coffeemachine"
  receptacles: tuple[Entity, ...]
  objects: tuple[Entity, ...]
  container: dict[str, str]  # object id -> receptacle id
  agent_location: str

  @property
  def trial_dir(self) -> str:
    """The official directory name: `<task_type>-<Object>-<Mrecep>-<Parent or Toggle>-<scene>`."""
    return f"{self.task_type}-{self.object_target}-None-{self.parent_target or self.toggle_target}-{self.scene}"


# --- rooms -------------------------------------------------------------------------------------------------------
@functools.cache
def _room(scene: int) -> tuple[frozenset[str], dict[str, tuple[float, float, int, int]]]:
  """(object types present, receptacle id -> navigation point (x, z, rotation, horizon)) of FloorPlan`scene`."""
  types_present = frozenset(json.loads((_LAYOUTS / f"FloorPlan{scene}-objects.json").read_text()))
  points = json.loads((_LAYOUTS / f"FloorPlan{scene}-openable.json").read_text())
  return types_present, {rid: tuple(point) for rid, point in points.items()}


def _room_type(scene: int) -> str:
  return next(name for name, numbers in constants.SCENE_TYPE.items() if scene in numbers)


@functools.cache
def _scenes(split: str) -> tuple[int, ...]:
  if split == "eval_out":
    return EVAL_OUT_SCENES
  every = sorted(int(re.findall(r"\d+", p.name)[0]) for p in _LAYOUTS.glob("FloorPlan*-objects.json"))
  return tuple(s for s in every if s not in EVAL_OUT_SCENES)


def _receptacle_type(rid: str) -> str:
  parts = rid.split("|")
  return parts[4] if len(parts) > 4 else parts[0]  # `Sink|x|y|z|SinkBasin` is a SinkBasin


def _location_id(point: tuple[float, float, int, int]) -> str:
  """ALFRED's location id: grid cell of 0.25 m, rotation / 90, camera horizon."""
  x, z, rotation, horizon = point
  return f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{round(rotation / 90) % 4}|{round(horizon)}"


def _thor_id(type_: str, xyz: tuple[float, float, float]) -> str:
  coords = "|".join(f"{v:+06.2f}" for v in xyz)
  if type_.endswith("Basin"):  # AI2-THOR names basins after their sink / bathtub
    return f"{type_[:-len('Basin')]}|{coords}|{type_}"
  return f"{type_}|{coords}"


def _random_point(rng: random.Random, taken: set[str]) -> tuple[float, float, int, int]:
  while True:
    point = (rng.randint(-16, 16) * 0.25, rng.randint(-16, 16) * 0.25, rng.choice((0, 90, 180, 270)), 30)
    if _location_id(point) not in taken:
      return point


def _receptacles(scene: int, rng: random.Random) -> list[Entity]:
  """The room's receptacles from its layout, plus the appliances / holders the layout omits."""
  types_present, points = _room(scene)
  receptacles = [Entity(rid, _receptacle_type(rid), _location_id(point)) for rid, point in sorted(points.items())]
  taken = {r.location for r in receptacles}
  listed = {r.type for r in receptacles}
  for type_ in sorted((types_present & _STATIC_RECEPTACLES) - listed):
    for _ in range(_EXTRA_RECEPTACLE_COUNT.get(type_, 1)):
      point = _random_point(rng, taken)
      taken.add(_location_id(point))
      xyz = (point[0] + rng.uniform(-0.5, 0.5), rng.uniform(0.0, 1.8), point[1] + rng.uniform(-0.5, 0.5))
      receptacles.append(Entity(_thor_id(type_, xyz), type_, _location_id(point)))
  return receptacles


# --- task parameters -----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Params:
  object_target: str
  parent_target: str
  toggle_target: str


def _movable_types(scene: int, receptacle_types: set[str]) -> list[str]:
  """Object types of the room that can be picked up and put in one of its receptacles."""
  types_present, _ = _room(scene)
  return sorted(t for t in types_present if _HOLDERS_OF.get(t, set()) & receptacle_types)


def _candidate_params(task_type: str, scene: int, receptacle_types: set[str]) -> list[_Params]:
  """Every valid (object, parent, toggle) for `task_type` in the room: the parent is not the task's appliance and the
  object has somewhere else to start from (`_start_holders`)."""
  movable = _movable_types(scene, receptacle_types)
  if task_type == "look_at_obj_in_light":
    has_lamp = _LAMP in _room(scene)[0] and receptacle_types & set(_LAMP_HOLDERS)
    return [_Params(o, "", _LAMP) for o in movable] if has_lamp else []
  appliance = _APPLIANCE.get(task_type)
  if appliance is not None:
    if appliance.receptacle not in receptacle_types:
      return []
    movable = [o for o in movable if o in constants.VAL_ACTION_OBJECTS[appliance.ability]]
  params = [_Params(obj, parent, "") for obj in movable for parent in sorted(_HOLDERS_OF[obj] & receptacle_types)]
  return [p for p in params if p.parent_target not in _appliances(task_type)
          and _start_holders(task_type, p) & receptacle_types]


def _appliances(task_type: str) -> set[str]:
  appliance = _APPLIANCE.get(task_type)
  return {appliance.receptacle} if appliance else set()


def _start_holders(task_type: str, params: _Params) -> set[str]:
  """Where target objects may start: not in the parent type, nor in the appliance (a fridge's objects are cold)."""
  return _HOLDERS_OF[params.object_target] - {params.parent_target} - _appliances(task_type)


def _describe(task_type: str, params: _Params, rng: random.Random) -> str:
  template = rng.choice(goal_library.gdict[task_type]["templates"])
  return template.format(obj=params.object_target.lower(), recep=params.parent_target.lower(),
                         toggle=params.toggle_target.lower(), mrecep="")


# --- sampling ------------------------------------------------------------------------------------------------------
def sample_problem(split: str, seed: int, task_types: tuple[str, ...] = TASK_TYPES) -> Problem:
  """The problem for Task(split, seed): deterministic, and `split` selects its own random stream (and rooms)."""
  if split not in SPLITS:
    raise EnvError(f"alfworld: unknown split '{split}'; expected one of {', '.join(SPLITS)}")
  unknown = sorted(set(task_types) - set(TASK_TYPES))
  if not task_types or unknown:
    raise EnvError(f"alfworld: task_types must be a non-empty subset of {', '.join(TASK_TYPES)}; got {unknown}")
  rng = random.Random(f"alfworld/{split}/{seed}")
  task_type = rng.choice(sorted(task_types))
  scenes = [s for s in _scenes(split) if _room_type(s) in constants.GOALS_VALID[task_type]]  # ALFRED's room rule
  for scene in rng.sample(scenes, len(scenes)):  # a room may lack what the task needs (a lamp, a sink)
    receptacles = _receptacles(scene, rng)
    if candidates := _candidate_params(task_type, scene, {r.type for r in receptacles}):
      break
  else:
    raise EnvError(f"alfworld: no {split} room supports {task_type}")
  params = rng.choice(candidates)
  objects, container = _place_objects(task_type, params, scene, receptacles, rng)
  taken = {r.location for r in receptacles}
  return Problem(task_type=task_type, scene=scene, object_target=params.object_target,
                 parent_target=params.parent_target, toggle_target=params.toggle_target,
                 description=_describe(task_type, params, rng), receptacles=tuple(receptacles),
                 objects=tuple(objects), container=container,
                 agent_location=_location_id(_random_point(rng, taken)))


def _place_objects(task_type: str, params: _Params, scene: int, receptacles: list[Entity],
                   rng: random.Random) -> tuple[list[Entity], dict[str, str]]:
  """Target instances (see `_start_holders`), the lamp, and a few distractor types anywhere they may go."""
  receptacle_types = {r.type for r in receptacles}
  target_count = rng.randint(2, 4) if task_type == "pick_two_obj_and_place" else rng.randint(1, 3)
  others = [t for t in _movable_types(scene, receptacle_types) if t != params.object_target]
  distractors = rng.sample(others, min(len(others), rng.randint(_MAX_DISTRACTOR_TYPES // 2, _MAX_DISTRACTOR_TYPES)))
  placements = [(params.object_target, _start_holders(task_type, params))] * target_count
  placements += [(t, _HOLDERS_OF[t]) for t in distractors for _ in range(rng.randint(1, 2))]
  if params.toggle_target:
    placements.append((params.toggle_target, set(_LAMP_HOLDERS)))
  objects, container, ids = [], {}, set()
  for type_, holder_types in placements:
    receptacle = rng.choice([r for r in receptacles if r.type in holder_types])
    while True:
      xyz = (rng.uniform(-4.0, 4.0), rng.uniform(0.0, 2.0), rng.uniform(-4.0, 4.0))
      if (oid := _thor_id(type_, xyz)) not in ids:
        break
    ids.add(oid)
    objects.append(Entity(oid, type_, receptacle.location))
    container[oid] = receptacle.id
  return objects, container


# --- the game file -------------------------------------------------------------------------------------------------
def pddl_id(thor_id: str) -> str:
  """ALFRED's PDDL-safe id (`Cabinet|+00.68` -> `Cabinet_bar__plus_00_dot_68`)."""
  return multireplace(thor_id, _PDDL_CHARS)


def pddl_problem(problem: Problem) -> str:
  """The problem in the official `initial_state.pddl` layout (objects, init facts, the goal from goal_library)."""
  objects, receptacles, at = problem.objects, problem.receptacles, pddl_id
  container = {oid: at(rid) for oid, rid in problem.container.items()}
  locations = sorted({e.location for e in (*objects, *receptacles)} | {problem.agent_location})
  present_rtypes = sorted({r.type for r in receptacles})
  present_otypes = sorted({o.type for o in objects})
  has = lambda ability: [o for o in objects if o.type in constants.VAL_ACTION_OBJECTS[ability]]
  facts = [f"(receptacleType {at(r.id)} {r.type}Type)" for r in receptacles]
  facts += [f"(objectType {at(o.id)} {o.type}Type)" for o in objects]
  facts += [f"(canContain {rt}Type {ot}Type)" for rt in present_rtypes for ot in present_otypes
            if ot in constants.VAL_RECEPTACLE_OBJECTS.get(rt, ())]
  facts += [f"(pickupable {at(o.id)})" for o in objects if o.type in _HOLDERS_OF]
  facts += [f"(isReceptacleObject {at(o.id)})" for o in objects if o.type in constants.MOVABLE_RECEPTACLES_SET]
  facts += [f"(openable {at(r.id)})" for r in receptacles if r.type in constants.OPENABLE_CLASS_SET]
  facts.append(f"(atLocation agent1 {at(problem.agent_location)})")
  for predicate, ability in (("cleanable", "Cleanable"), ("heatable", "Heatable"), ("coolable", "Coolable"),
                             ("toggleable", "Toggleable"), ("sliceable", "Sliceable")):
    facts += [f"({predicate} {at(o.id)})" for o in has(ability)]
  # ALFRED marks objects that start in a fridge as already cool.
  fridges = {at(r.id) for r in receptacles if r.type == "Fridge"}
  facts += [f"(isCool {at(o.id)})" for o in has("Coolable") if container[o.id] in fridges]
  facts += [f"(inReceptacle {at(o.id)} {container[o.id]})" for o in objects]
  facts += [f"(receptacleAtLocation {at(r.id)} {at(r.location)})" for r in receptacles]
  facts += [f"(objectAtLocation {at(o.id)} {at(o.location)})" for o in objects]
  declarations = (["agent1 - agent"] + [f"{t}Type - otype" for t in _OBJECT_TYPES]
                  + [f"{t}Type - rtype" for t in sorted(_STATIC_RECEPTACLES)]
                  + [f"{at(o.id)} - object" for o in objects] + [f"{at(r.id)} - receptacle" for r in receptacles]
                  + [f"{at(loc)} - location" for loc in locations])
  goal = goal_library.gdict[problem.task_type]["pddl"].format(
      obj=problem.object_target, recep=problem.parent_target, toggle=problem.toggle_target, mrecep="")
  indent = "\n        "
  return (f"\n(define (problem plan_{at(problem.trial_dir)})\n(:domain alfred)\n(:objects{indent}"
          f"{indent.join(declarations)}\n        )\n\n(:init{indent}{indent.join(facts)}\n        )\n"
          + goal.replace("#", "-"))


@functools.cache
def _domain_and_grammar() -> tuple[str, str]:
  return DOMAIN_PATH.read_text(), GRAMMAR_PATH.read_text()


def game_data(problem: Problem) -> dict:
  """The `game.tw-pddl` JSON: domain, grammar with the task sentence, problem, and the verified expert walkthrough."""
  domain, grammar = _domain_and_grammar()
  return {"pddl_domain": domain, "grammar": grammar.replace("UNKNOWN GOAL", problem.description),
          "pddl_problem": pddl_problem(problem), "solvable": True, "walkthrough": expert_plan(problem)}


def traj_data(problem: Problem) -> dict:
  """The subset of ALFRED's `traj_data.json` that alfworld reads (task type, targets; the handcoded expert uses it)."""
  return {"task_type": problem.task_type, "scene": {"floor_plan": f"FloorPlan{problem.scene}"},
          "pddl_params": {"object_target": problem.object_target, "parent_target": problem.parent_target,
                          "toggle_target": problem.toggle_target, "mrecep_target": "", "object_sliced": False}}


# --- names and the expert --------------------------------------------------------------------------------------------
def display_names(problem: Problem) -> dict[str, str]:
  """AI2-THOR id -> the name the game shows (`apple 1`), by alfworld's own Demangler on the engine's lower-cased ids."""
  entities = (*problem.objects, *problem.receptacles)
  infos = {e.id: types.SimpleNamespace(id=pddl_id(e.id).lower()) for e in entities}
  demangler = Demangler(game_infos=infos)
  return {thor_id: demangler.demangle_alfred_name(info.id) for thor_id, info in infos.items()}


def _name_order(name: str) -> tuple[str, int]:
  word, number = name.rsplit(" ", 1)
  return word, int(number)


class _PlanWriter:
  """Writes commands while tracking where the agent stands and which receptacles it opened."""

  def __init__(self, problem: Problem):
    self.problem = problem
    self.names = display_names(problem)
    self.receptacle = {r.id: r for r in problem.receptacles}
    self.commands: list[str] = []
    self._at = problem.agent_location
    self._opened: set[str] = set()

  def first(self, entities: list[Entity], count: int = 1) -> list[Entity]:
    return sorted(entities, key=lambda e: _name_order(self.names[e.id]))[:count]

  def go(self, rid: str) -> None:
    if self.receptacle[rid].location != self._at:
      self.commands.append(f"go to {self.names[rid]}")
      self._at = self.receptacle[rid].location

  def reach_into(self, rid: str) -> None:
    """Goes to `rid` and opens it if it is closed (taking and putting need it open; heating, cooling do not)."""
    self.go(rid)
    if self.receptacle[rid].type in constants.OPENABLE_CLASS_SET and rid not in self._opened:
      self.commands.append(f"open {self.names[rid]}")
      self._opened.add(rid)

  def take(self, obj: Entity) -> None:
    rid = self.problem.container[obj.id]
    self.reach_into(rid)
    self.commands.append(f"take {self.names[obj.id]} from {self.names[rid]}")

  def use(self, verb: str, obj: Entity, appliance: Entity) -> None:
    self.go(appliance.id)
    self.commands.append(f"{verb} {self.names[obj.id]} with {self.names[appliance.id]}")

  def put(self, obj: Entity, parent: Entity) -> None:
    self.reach_into(parent.id)
    self.commands.append(f"move {self.names[obj.id]} to {self.names[parent.id]}")


def expert_plan(problem: Problem) -> list[str]:
  """The command sequence that wins `problem`, written from its facts (first instances by name, no search)."""
  plan = _PlanWriter(problem)
  of_type = lambda entities, type_: [e for e in entities if e.type == type_]
  targets = plan.first(of_type(problem.objects, problem.object_target),
                       2 if problem.task_type == "pick_two_obj_and_place" else 1)
  if problem.task_type == "look_at_obj_in_light":
    lamp = of_type(problem.objects, problem.toggle_target)[0]
    plan.take(targets[0])
    plan.go(problem.container[lamp.id])
    plan.commands.append(f"use {plan.names[lamp.id]}")
    return plan.commands
  parent = plan.first(of_type(problem.receptacles, problem.parent_target))[0]
  for target in targets:
    plan.take(target)
    if appliance := _APPLIANCE.get(problem.task_type):
      plan.use(appliance.verb, target, plan.first(of_type(problem.receptacles, appliance.receptacle))[0])
    plan.put(target, parent)
  return plan.commands
