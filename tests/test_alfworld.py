"""ALFWorld: the offline generator, play through the real TextWorld-PDDL engine, and the official-data loader."""
from __future__ import annotations

import hashlib
import json
import random
import re
import sys
from pathlib import Path

import pytest

from paw_jax.envs import EnvError, Task, alfworld, alfworld_gen, make
from paw_jax.envs.alfworld import AlfWorldEnv
from paw_jax.envs.alfworld_gen import TASK_TYPES

# Task sentences as ALFWorld words them (alfworld/gen/goal_library.py templates, objects lower-cased).
SENTENCE = {
    "pick_and_place_simple": r"put (a|some) [a-z]+ (in|on) [a-z]+\.",
    "look_at_obj_in_light": r"(look at [a-z]+ under the desklamp|examine the [a-z]+ with the desklamp)\.",
    "pick_clean_then_place_in_recep": r"(put a clean [a-z]+ in|clean some [a-z]+ and put it in) [a-z]+\.",
    "pick_heat_then_place_in_recep": r"(put a hot [a-z]+ in|heat some [a-z]+ and put it in) [a-z]+\.",
    "pick_cool_then_place_in_recep": r"(put a cool [a-z]+ in|cool some [a-z]+ and put it in) [a-z]+\.",
    "pick_two_obj_and_place": r"(put two [a-z]+ in|find two [a-z]+ and put them in) [a-z]+\.",
}

# Task("train", 0) over all task types, in FloorPlan5 (the env plays this plan through the engine before serving it).
REFERENCE_TASK = ("pick_two_obj_and_place", 5, "find two bowl and put them in sinkbasin")
REFERENCE_PLAN = ["go to cabinet 6", "open cabinet 6", "take bowl 1 from cabinet 6", "go to sinkbasin 1",
                  "move bowl 1 to sinkbasin 1", "go to cabinet 8", "open cabinet 8", "take bowl 2 from cabinet 8",
                  "go to sinkbasin 1", "move bowl 2 to sinkbasin 1"]
REFERENCE_PDDL_SHA = "cb3646e20d266ee8"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
  """One cache per module: each problem's engine translation (~1 s) is paid once."""
  return tmp_path_factory.mktemp("alfworld-cache")


def wrap(command: str) -> str:
  return f"<think>Let me see.</think><action>{command}</action>"


def play(env: AlfWorldEnv, commands: list[str]) -> list:
  return [env.step(wrap(command)) for command in commands]


# --- the generator (pure Python, no engine) ---------------------------------------------------------------------
def test_seed_0_problem_is_stable():
  """A reference problem: generation must not drift between runs, processes or refactors."""
  problem = alfworld_gen.sample_problem("train", 0)
  assert (problem.task_type, problem.scene, problem.description) == REFERENCE_TASK
  assert alfworld_gen.expert_plan(problem) == REFERENCE_PLAN
  assert hashlib.sha256(alfworld_gen.pddl_problem(problem).encode()).hexdigest()[:16] == REFERENCE_PDDL_SHA


def test_ids_and_names_follow_alfred():
  """Ids as in an official game file (`Drawer|-00.03|+00.87|-02.47` in FloorPlan221), names as ALFWorld shows them."""
  assert alfworld_gen.pddl_id("Drawer|-00.03|+00.87|-02.47") == (
      "Drawer_bar__minus_00_dot_03_bar__plus_00_dot_87_bar__minus_02_dot_47")
  problem = alfworld_gen.sample_problem("train", 0)
  names = alfworld_gen.display_names(problem)
  sink = next(r for r in problem.receptacles if r.type == "SinkBasin")
  assert sink.id.startswith("Sink|") and sink.id.endswith("|SinkBasin") and names[sink.id] == "sinkbasin 1"
  cabinets = sorted(names[r.id] for r in problem.receptacles if r.type == "Cabinet")
  assert cabinets == sorted(f"cabinet {i}" for i in range(1, len(cabinets) + 1))


def test_splits_draw_different_problems_and_eval_out_keeps_its_rooms():
  for seed in range(20):
    train, eval_in, eval_out = (alfworld_gen.sample_problem(split, seed) for split in ("train", "eval_in", "eval_out"))
    assert train == alfworld_gen.sample_problem("train", seed)
    assert alfworld_gen.pddl_problem(train) != alfworld_gen.pddl_problem(eval_in)
    assert train.scene not in alfworld_gen.EVAL_OUT_SCENES and eval_in.scene not in alfworld_gen.EVAL_OUT_SCENES
    assert eval_out.scene in alfworld_gen.EVAL_OUT_SCENES


def test_problem_follows_the_official_format():
  problem = alfworld_gen.sample_problem("train", 2, ("pick_heat_then_place_in_recep",))
  data = alfworld_gen.game_data(problem)
  assert set(data) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"}
  assert data["pddl_domain"] == alfworld_gen.DOMAIN_PATH.read_text()
  assert f'"rhs": "Your task is to: {problem.description}."' in data["grammar"]
  pddl = data["pddl_problem"]
  assert "(:domain alfred)" in pddl and "(objectType ?o " + problem.object_target + "Type)" in pddl
  assert re.search(r"\(receptacleType Microwave_bar__[a-z_0-9]+ MicrowaveType\)", pddl)
  assert problem.parent_target != "Microwave"  # the object is heated in the microwave and put elsewhere
  receptacle_type = {r.id: r.type for r in problem.receptacles}
  start_types = {receptacle_type[problem.container[o.id]] for o in problem.objects if o.type == problem.object_target}
  assert start_types and not start_types & {problem.parent_target, "Microwave"}


def test_bad_task_types_and_splits_are_one_clear_error(cache_dir: Path):
  with pytest.raises(EnvError, match=r"task_types must be a non-empty subset .*\['fly'\]"):
    AlfWorldEnv(task_types=("fly",), cache_dir=cache_dir)
  with pytest.raises(EnvError, match="source must be one of generated, official"):
    AlfWorldEnv(source="web", cache_dir=cache_dir)
  with pytest.raises(EnvError, match="unknown split 'test'"):
    AlfWorldEnv(cache_dir=cache_dir).reset(Task("test", 0))


# --- playing through the engine -------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_type", TASK_TYPES)
def test_expert_wins_each_task_type(task_type: str, cache_dir: Path):
  env = make("alfworld", task_types=(task_type,), cache_dir=cache_dir)
  observation, info = env.reset(Task("train", 0))
  assert observation.startswith("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking "
                                "quickly around you, you see a ")
  assert observation.endswith(f"\n\nYour task is to: {info['task']}")
  assert re.fullmatch(SENTENCE[task_type], info["task"]) and info["task_type"] == task_type
  commands = env.expert_actions()
  assert 2 <= len(commands) <= 20
  results = []
  for command in commands:
    assert command in env.admissible_actions()
    results.append(env.step(wrap(command)))
  assert [r.reward for r in results] == [0.0] * (len(commands) - 1) + [10.0]
  assert [r.done for r in results] == [False] * (len(commands) - 1) + [True]
  assert results[-1].info["won"] and results[-1].info["task_type"] == task_type
  assert results[-1].info["admissible_actions"] is None


def transcript(env: AlfWorldEnv, task: Task, rng: random.Random, steps: int) -> list:
  """Reset, random admissible commands (and some junk), then the expert's plan: everything the env said."""
  said = [env.reset(task)]
  plan = env.expert_actions()
  for _ in range(steps):
    said.append(env.step(wrap(rng.choice(env.admissible_actions())) if rng.random() < 0.8 else "junk"))
  return said + play(env, plan)  # after the detour the plan may no longer fit: invalid steps are said too


def test_same_task_same_observations_and_trajectory(cache_dir: Path):
  first, second = (transcript(make("alfworld", task_types=("pick_two_obj_and_place",), cache_dir=cache_dir),
                              Task("train", 0), random.Random(0), steps=12) for _ in range(2))
  assert first == second
  assert len({said.observation for said in first[1:]}) > 5  # the commands did things


def test_engine_speedups_change_nothing(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
  """The memoised translation / parses and shallow context copies against textworld's own code, step by step."""
  task, rng_seed = Task("train", 0), 1
  fast = transcript(make("alfworld", task_types=("pick_two_obj_and_place",), cache_dir=cache_dir), task,
                    random.Random(rng_seed), steps=8)
  env = make("alfworld", task_types=("pick_two_obj_and_place",), cache_dir=cache_dir)
  for module, name, original in alfworld.ENGINE_ORIGINALS:
    monkeypatch.setattr(module, name, original)
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # the original translator overwrites it
  assert fast == transcript(env, task, random.Random(rng_seed), steps=8)


def test_random_admissible_play_mostly_fails(cache_dir: Path):
  """Uniform-random admissible commands for all 50 steps, on the six tasks the expert test plays (already compiled).

  Measured on 120 train tasks (seeds 1000-1119, all types): random play won 2 (1.7%; 95% upper bound 5.9%). Its
  commands are mostly "go to", "examine", "look", "inventory", "help", and a win needs the right take / heat / move
  in order. At that rate two wins in six would happen 0.4% of the time (4.4% at the upper bound), while a generator
  that leaves tasks half done (targets starting in the parent, already hot / cool / clean) or an engine that accepted
  any "move" would let random play win every few episodes."""
  wins = 0
  for index, task_type in enumerate(TASK_TYPES):
    env, rng = make("alfworld", task_types=(task_type,), cache_dir=cache_dir), random.Random(index)
    env.reset(Task("train", 0))
    while not (result := env.step(wrap(rng.choice(env.admissible_actions())))).done:
      pass
    wins += result.info["won"]
    assert result.info["won"] or result.info["truncated"]
  assert wins <= 1


def test_invalid_replies_are_penalised_and_change_nothing(cache_dir: Path):
  env = make("alfworld", task_types=("pick_clean_then_place_in_recep",), cache_dir=cache_dir)
  env.reset(Task("train", 0))
  commands = env.expert_actions()
  play(env, commands[:2])
  admissible = env.admissible_actions()
  tags = "Invalid action: your reply must end with <action>...</action>. Nothing happens."
  invalid = {
      commands[2]: tags,  # a right command, but without tags
      wrap("teleport to fridge 1"): "Invalid action: 'teleport to fridge 1' is not admissible here. Nothing happens.",
      wrap("go to cabinet 99"): "Invalid action: 'go to cabinet 99' is not admissible here. Nothing happens.",
      "x" * 10_000: tags,
      "x" * 10_000 + wrap(commands[2]): tags,  # longer than max_reply_chars, even with a valid action inside
  }
  for count, (reply, observation) in enumerate(invalid.items(), start=1):
    result = env.step(reply)
    assert (result.observation, result.reward, result.done) == (observation, -0.1, False)
    assert (result.info["invalid"], result.info["invalid_count"], result.info["steps"]) == (True, count, 2 + count)
    assert result.info["admissible_actions"] == admissible
  results = play(env, commands[2:])  # the game is where it was: the rest of the plan still wins
  assert results[-1].info["won"] and sum(r.reward for r in results) == 10.0


def test_compiled_games_are_reused_from_disk(cache_dir: Path, monkeypatch: pytest.MonkeyPatch):
  task = Task("train", 0)
  env = make("alfworld", task_types=("pick_and_place_simple",), cache_dir=cache_dir)
  observation = env.reset(task)[0]
  assert sorted((cache_dir / "compiled").glob("*.pkl.gz"))
  monkeypatch.setattr(alfworld, "_compiled", type(alfworld._compiled)())  # a fresh process: no translations in memory
  translations = []
  monkeypatch.setattr(alfworld, "_ORIGINAL_PDDL2SAS", lambda *args, **kwargs: translations.append(args))
  assert env.reset(task)[0] == observation and translations == []  # both translations came from disk


def test_translation_is_memoised_and_keeps_sys_argv(monkeypatch: pytest.MonkeyPatch):
  calls = []

  def translate(domain: str, problem: str, verbose: bool, optimize: bool) -> tuple:
    calls.append(optimize)
    sys.argv = ["translate.py", "domain", "task"]  # what fast-downward's translator does to its caller
    return ("task", f"sas of {problem}")

  monkeypatch.setattr(alfworld, "_ORIGINAL_PDDL2SAS", translate)
  monkeypatch.setattr(alfworld, "_compiled", type(alfworld._compiled)())
  argv = list(sys.argv)
  for _ in range(2):
    assert alfworld._cached_pddl2sas("(domain)", "(problem 1)") == ("task", "sas of (problem 1)")
  assert alfworld._cached_pddl2sas("(domain)", "(problem 1)", optimize=True) == ("task", "sas of (problem 1)")
  assert calls == [False, True] and sys.argv == argv


# --- official data ----------------------------------------------------------------------------------------------
def test_official_loader_plays_the_official_layout(tmp_path: Path, cache_dir: Path):
  """A fake $ALFWORLD_DATA laid out as the download is, holding copies of one of our games."""
  problem = alfworld_gen.sample_problem("train", 0, ("pick_clean_then_place_in_recep",))
  split_dir = tmp_path / "json_2.1.1" / "valid_seen"

  def add_trial(task_dir: str, solvable: bool = True) -> Path:
    trial = split_dir / task_dir / "trial_T20190909_000000_000000"
    trial.mkdir(parents=True)
    (trial / "game.tw-pddl").write_text(json.dumps({**alfworld_gen.game_data(problem), "solvable": solvable}))
    (trial / "traj_data.json").write_text(json.dumps(alfworld_gen.traj_data(problem)))
    return trial / "game.tw-pddl"

  real = add_trial(problem.trial_dir)
  renamed = add_trial("pick_and_place_simple-Cloth-None-Cart-401")  # sorts first; its type comes from its name
  add_trial("look_at_obj_in_light-KeyChain-None-FloorLamp-221", solvable=False)  # skipped, as AlfredTWEnv does

  env = make("alfworld", source="official", data_path=tmp_path, expert_plan=True, cache_dir=cache_dir)
  assert [env.gamefile(Task("eval_in", seed)) for seed in (0, 1, 2, 3)] == [renamed, real, renamed, real]
  assert env.reset(Task("eval_in", 0))[1]["task_type"] == "pick_and_place_simple"
  clean_only = make("alfworld", source="official", data_path=tmp_path, expert_plan=True, cache_dir=cache_dir,
                    task_types=("pick_clean_then_place_in_recep",))
  observation, info = clean_only.reset(Task("eval_in", 0))
  assert (info["gamefile"], info["task_type"]) == (str(real), "pick_clean_then_place_in_recep")
  assert info["task"] == problem.description + "." and observation.endswith(info["task"])
  assert info["expert_plan"] == ["look"]  # the package's handcoded expert always opens with "look"
  assert clean_only.expert_actions() == alfworld_gen.expert_plan(problem)  # the file's walkthrough
  results = play(clean_only, clean_only.expert_actions())
  assert results[-1].info["won"] and [r.reward for r in results][-2:] == [0.0, 10.0]
  assert all(set(r.info["expert_plan"]) <= set(r.info["admissible_actions"]) for r in results[:-1])
  with pytest.raises(EnvError, match="no playable games .* under .*valid_unseen"):
    env.reset(Task("eval_out", 0))


def test_official_data_path_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
  (tmp_path / "json_2.1.1").mkdir()
  monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
  assert AlfWorldEnv(source="official")._official == tmp_path / "json_2.1.1"


def test_missing_official_data_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
  monkeypatch.delenv("ALFWORLD_DATA", raising=False)
  with pytest.raises(EnvError) as unset:
    AlfWorldEnv(source="official")
  missing = tmp_path / "nowhere"
  with pytest.raises(EnvError) as wrong:
    AlfWorldEnv(source="official", data_path=missing)
  for error in (unset, wrong):
    message = str(error.value)
    assert "\n" not in message and "$ALFWORLD_DATA" in message and "source='generated'" in message
  assert str(missing / "json_2.1.1") in str(wrong.value)
  with pytest.raises(EnvError, match="data_path is only read with source='official'"):
    AlfWorldEnv(data_path=missing)
