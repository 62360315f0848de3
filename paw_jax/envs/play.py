"""Play an env by hand: `python -m paw_jax.envs.play NAME [--seed N] [--split S] [--kwargs JSON]`.

NAME is a registry name or a "package.module:Class" path. Type the bare action (it is wrapped in the env's first
action tag, so what you type is parsed exactly like a model's reply); "quit" or end of input exits. When an episode
ends, the next seed starts.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, TextIO

from paw_jax.envs import Task, TextEnv, env_class, tagged


def play(env: TextEnv, task: Task, lines: Iterable[str], out: TextIO) -> None:
  """Plays episodes from `task` on (seed + 1 after each), one action per line of `lines`, printing to `out`."""
  tag = env.action_tags[0]
  lines = iter(lines)
  while True:
    observation, info = env.reset(task)
    print(f"=== {env.name} {task.split}/{task.seed}: {info.get('task', '')}\n\n{observation}", file=out)
    admissible, done, episode_return = info["admissible_actions"], False, 0.0
    while not done:
      if admissible:
        print(env.format_admissible(admissible), file=out)
      print("> ", end="", file=out, flush=True)
      line = next(lines, None)
      if line is None or line.strip() == "quit":
        print(file=out)
        return
      result = env.step(tagged(tag, line.strip()))
      episode_return += result.reward
      shown = {key: value for key, value in result.info.items() if key != "admissible_actions"}
      print(f"\n{result.observation}\nreward {result.reward:+g}  done {result.done}  {shown}", file=out)
      admissible, done = result.info["admissible_actions"], result.done
    print(f"=== episode over: won {result.info['won']}, return {episode_return:+g}\n", file=out)
    task = Task(task.split, task.seed + 1)


def json_object(text: str) -> dict[str, Any]:
  try:
    value = json.loads(text)
  except json.JSONDecodeError as error:
    raise argparse.ArgumentTypeError(f"not JSON ({error})") from error
  if not isinstance(value, dict):
    raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"size\": 5}}', got {text}")
  return value


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("name", help="registry name or package.module:Class")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", default="train")
  parser.add_argument("--kwargs", type=json_object, default={}, help='env constructor arguments: \'{"size": 5}\'')
  args = parser.parse_args(argv)
  try:
    env = env_class(args.name)(**args.kwargs)
  except Exception as error:  # unknown env, missing package, bad kwargs: one line, no traceback
    sys.exit(f"play: cannot make env '{args.name}': {error}")
  try:
    play(env, Task(args.split, args.seed), iter(sys.stdin.readline, ""), sys.stdout)
  finally:
    env.close()


if __name__ == "__main__":
  main()
