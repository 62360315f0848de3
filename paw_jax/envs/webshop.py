"""WebShop (Yao et al. 2022): find and buy the product an instruction describes, with WebShop's actions and score.

Actions are WebShop's: `search[query]` while the page has a search bar (the start page), `click[x]` on a clickable of
the current page (matched case-insensitively, as the text env lowercases them). Pages follow WebShop's simple text
mode, fields joined by " [SEP] ":
  start    WebShop [SEP] Instruction: [SEP] <instruction> [SEP] Search
  results  Instruction: [SEP] <instruction> [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP]
           <ASIN> [SEP] <title> [SEP] $<price> ... (10 a page)
  item     ... Back to Search [SEP] < Prev [SEP] <option name> [SEP] <value> ... [SEP] <title> [SEP] Price: $<price>
           [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now
  sub-page ... Back to Search [SEP] < Prev [SEP] <description | features | reviews>
`click[buy now]` ends the episode with reward r_max * score (webshop_reward.get_reward); won iff score == 1.

Sources: "builtin" (default) plays a generated catalogue (webshop_catalog) offline; "official" wraps princeton-nlp's
`WebAgentTextEnv-v0` when its `web_agent_site` package and data are installed. Splits: "eval" is goals [0, 500) (as
WebShop's test split), "train" the rest; Task(split, seed) plays goal `first + seed % count` of its split.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Protocol

from paw_jax.envs.base import Action, EnvError, Task, TextEnv
from paw_jax.envs.webshop_catalog import Goal, Product, load_catalogue
from paw_jax.envs.webshop_reward import get_reward

SEP = " [SEP] "
PAGE_SIZE = 10
EVAL_GOALS = 500  # WebShop's test split: the first 500 goals
SEARCH_TEMPLATE = "search[<your query>]"
SEARCH, RESULTS, ITEM = "search", "results", "item"
SUB_PAGES = ("description", "features", "reviews")
BACK_TO_SEARCH, PREV, NEXT, BUY = "back to search", "< prev", "next >", "buy now"
_DISPLAY = {PREV: "< Prev", NEXT: "Next >"}
_COMMAND = re.compile(r"(search|click)\[(.*)\]", flags=re.DOTALL | re.IGNORECASE)


def parse_command(text: str) -> tuple[str, str] | None:
  """('search' | 'click', argument) of an action such as 'click[Buy Now]'; click arguments are lowercased."""
  match = _COMMAND.fullmatch(text.strip())
  if match is None or not match.group(2).strip():
    return None
  command, argument = match.group(1).lower(), match.group(2).strip()
  return command, argument.lower() if command == "click" else argument


def split_goal_index(task: Task, num_goals: int) -> int:
  """The goal a task plays: eval = goals [0, EVAL_GOALS), train = [EVAL_GOALS, num_goals), seeds wrap around."""
  if num_goals <= EVAL_GOALS:
    raise EnvError(f"webshop: needs more than {EVAL_GOALS} goals for an eval and a train split, got {num_goals}")
  ranges = {"eval": (0, EVAL_GOALS), "train": (EVAL_GOALS, num_goals - EVAL_GOALS)}
  if task.split not in ranges:
    raise EnvError(f"webshop: unknown split '{task.split}'; expected one of {sorted(ranges)}")
  first, count = ranges[task.split]
  return first + task.seed % count


class Shop(Protocol):
  """What WebShopEnv needs from a shop: goals, the current page's actions, and acting on it."""
  num_goals: int

  def reset(self, goal_index: int) -> tuple[str, str, str]:
    """Opens the start page for goal `goal_index`: (observation, instruction, category)."""

  def has_search_bar(self) -> bool:
    """Whether the current page takes `search[...]` (only the start page does)."""

  def clickables(self) -> list[str]:
    """The current page's clickables, lowercased."""

  def resolve_click(self, target: str) -> str | None:
    """The clickable a lowercased click target names, or None when it names none."""

  def act(self, command: str, argument: str) -> tuple[str, dict[str, Any] | None]:
    """Applies a valid command: (observation, purchase info with 'score' when it bought, else None)."""


@dataclasses.dataclass
class _View:
  """Where the shopper is: the page and what it shows."""
  page: str = SEARCH  # SEARCH, RESULTS, ITEM or one of SUB_PAGES
  results: tuple[str, ...] = ()
  page_number: int = 1
  asin: str = ""
  options: dict[str, str] = dataclasses.field(default_factory=dict)  # option name -> selected value


def _results_page(view: _View, shown: list[Product]) -> tuple[list[str], list[str]]:
  """(texts, clickables) of the results page: navigation, then ASIN, title and price of the products shown."""
  has_next = view.page_number * PAGE_SIZE < len(view.results)
  navigation = ([PREV] if view.page_number > 1 else []) + ([NEXT] if has_next else [])
  texts = ["Back to Search", f"Page {view.page_number} (Total results: {len(view.results)})",
           *(_DISPLAY[name] for name in navigation)]
  for product in shown:
    texts += [product.asin, product.title, f"${product.price:.2f}"]
  return texts, [BACK_TO_SEARCH, *navigation, *(product.asin.lower() for product in shown)]


def _item_page(product: Product) -> tuple[list[str], list[str]]:
  """(texts, clickables) of a product page: its option groups, title, price and links to sub-pages."""
  option_texts = [text for name, values in product.options.items() for text in (name, *values)]
  values = [value for group in product.options.values() for value in group]
  texts = ["Back to Search", "< Prev", *option_texts, product.title, f"Price: ${product.price:.2f}",
           "Rating: N.A.", "Description", "Features", "Reviews", "Buy Now"]
  return texts, [BACK_TO_SEARCH, PREV, *values, *SUB_PAGES, BUY]


def _sub_page(product: Product, page: str) -> list[str]:
  content = {"description": [product.description], "features": list(product.features),
             "reviews": [f"{stars} out of 5 stars: {text}" for stars, text in product.reviews]}[page]
  return ["Back to Search", "< Prev", *content]


class BuiltinShop:
  """The generated catalogue behind WebShop's pages; `goal` is the goal being played."""

  def __init__(self, catalogue_seed: int):
    self.catalogue = load_catalogue(catalogue_seed)
    self.num_goals = self.catalogue.num_goals
    self.goal: Goal | None = None
    self._view = _View()

  def reset(self, goal_index: int) -> tuple[str, str, str]:
    self.goal = self.catalogue.goal(goal_index)
    self._view = _View()
    return self.observation(), self.goal.instruction, self.goal.category

  def _shown(self) -> list[Product]:
    """The products on the current results page."""
    start = (self._view.page_number - 1) * PAGE_SIZE
    return [self.catalogue.by_asin[asin] for asin in self._view.results[start:start + PAGE_SIZE]]

  def _page(self) -> tuple[list[str], list[str]]:
    """(texts after the instruction, clickables) of the current page."""
    view = self._view
    if view.page == SEARCH:
      return ["Search"], []
    if view.page == RESULTS:
      return _results_page(view, self._shown())
    product = self.catalogue.by_asin[view.asin]
    if view.page == ITEM:
      return _item_page(product)
    return _sub_page(product, view.page), [BACK_TO_SEARCH, PREV]

  def observation(self) -> str:
    texts, _ = self._page()
    prefix = ["WebShop"] if self._view.page == SEARCH else []
    return SEP.join([*prefix, "Instruction:", self.goal.instruction, *texts])

  def has_search_bar(self) -> bool:
    return self._view.page == SEARCH

  def clickables(self) -> list[str]:
    return self._page()[1]

  def resolve_click(self, target: str) -> str | None:
    clickables = self.clickables()
    if target in clickables:
      return target
    if self._view.page != RESULTS:
      return None
    return next((product.asin.lower() for product in self._shown() if product.title.lower() == target), None)

  def act(self, command: str, argument: str) -> tuple[str, dict[str, Any] | None]:
    view = self._view
    if command == "search":
      self._view = _View(RESULTS, self.catalogue.search(argument))
    elif argument == BACK_TO_SEARCH:
      self._view = _View()
    elif argument == BUY:
      return self._buy()
    elif argument in (PREV, NEXT) and view.page == RESULTS:
      view.page_number += 1 if argument == NEXT else -1
    elif argument == PREV:  # from an item back to its results page; from a sub-page back to the item
      view.page = RESULTS if view.page == ITEM else ITEM
    elif argument in SUB_PAGES and view.page == ITEM:
      view.page = argument
    elif view.page == RESULTS:
      view.page, view.asin, view.options = ITEM, argument.upper(), {}
    else:
      view.options[self._option_name(argument)] = argument
    return self.observation(), None

  def _option_name(self, value: str) -> str:
    product = self.catalogue.by_asin[self._view.asin]
    return next(name for name, values in product.options.items() if value in values)

  def _buy(self) -> tuple[str, dict[str, Any]]:
    product = self.catalogue.by_asin[self._view.asin]
    score = get_reward(product, self.goal, product.price, self._view.options)
    observation = SEP.join(["Thank you for shopping with us!", "Purchased", product.asin, product.title,
                            "Your score (min 0.0, max 1.0)", f"{score.total:.4f}"])
    return observation, {"score": score.total, "r_type": score.r_type, "r_att": score.r_att,
                         "r_option": score.r_option, "r_price": score.r_price, "purchased": product.asin}

  def goal_actions(self) -> list[str]:
    """Buys the goal product with the goal options: search the goal's type and attributes (its title if that
    misses), page to the product, open it, select the options, buy."""
    goal = self.goal
    query = " ".join((goal.query, *goal.attributes))
    results = self.catalogue.search(query)
    if goal.asin not in results:
      query = self.catalogue.by_asin[goal.asin].title
      results = self.catalogue.search(query)
    if goal.asin not in results:
      raise EnvError(f"webshop oracle: goal product {goal.asin} not found by searching its title")
    pages = results.index(goal.asin) // PAGE_SIZE
    return [f"search[{query}]", *["click[next >]"] * pages, f"click[{goal.asin.lower()}]",
            *(f"click[{value}]" for value in goal.options.values()), "click[buy now]"]


class OfficialShop:
  """princeton-nlp/WebShop's text env (`WebAgentTextEnv-v0`, observation_mode='text') behind the Shop protocol."""

  def __init__(self, **env_kwargs: Any):
    try:
      import gym  # pylint: disable=import-outside-toplevel
      import web_agent_site.envs  # pylint: disable=import-outside-toplevel,unused-import  # registers the env id
    except ImportError as error:
      raise EnvError("webshop: source='official' needs princeton-nlp's WebShop (package web_agent_site, with its "
                     f"product data), which is not installed ({error}); use source='builtin'") from error
    self._env = gym.make("WebAgentTextEnv-v0", observation_mode="text", **env_kwargs).unwrapped
    self.num_goals = len(self._env.server.goals)

  def reset(self, goal_index: int) -> tuple[str, str, str]:
    observation, _ = self._env.reset(session=goal_index)
    category = self._env.server.goals[goal_index].get("category", "unknown")
    return observation, self._env.instruction_text, category

  def has_search_bar(self) -> bool:
    return bool(self._env.get_available_actions()["has_search_bar"])

  def clickables(self) -> list[str]:
    return [clickable.lower() for clickable in self._env.get_available_actions()["clickables"]]

  def resolve_click(self, target: str) -> str | None:
    return target if target in self.clickables() else None

  def act(self, command: str, argument: str) -> tuple[str, dict[str, Any] | None]:
    observation, reward, done, _ = self._env.step(f"{command}[{argument}]")
    return observation, {"score": float(reward)} if done else None


class WebShopEnv(TextEnv):
  """WebShop with success reward r_max = 10 and score-proportional partial rewards; see the module docstring."""
  name = "webshop"
  r_max = 10.0
  invalid_penalty = -0.1
  max_steps = 15

  def __init__(self, source: str = "builtin", catalogue_seed: int = 0, max_steps: int | None = None,
               official_kwargs: dict[str, Any] | None = None):
    super().__init__(max_steps)
    if source == "builtin":
      self._shop: Shop = BuiltinShop(catalogue_seed)
    elif source == "official":
      self._shop = OfficialShop(**(official_kwargs or {}))
    else:
      raise EnvError(f"webshop: unknown source '{source}'; expected 'builtin' or 'official'")

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    goal_index = split_goal_index(task, self._shop.num_goals)
    observation, instruction, category = self._shop.reset(goal_index)
    return observation, {"task": instruction, "task_type": category, "goal_index": goal_index}

  def admissible_actions(self) -> list[str]:
    """WebShop's get_available_actions as strings: the search template when there is a search bar, then clicks."""
    search = [SEARCH_TEMPLATE] if self._shop.has_search_bar() else []
    return search + [f"click[{clickable}]" for clickable in self._shop.clickables()]

  def is_valid(self, action: Action) -> bool:
    """Any non-empty search while the search bar is shown; a click on something the page shows."""
    parsed = parse_command(action.text)
    if parsed is None:
      return False
    command, argument = parsed
    if command == "search":
      return self._shop.has_search_bar()
    return self._shop.resolve_click(argument) is not None

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    command, argument = parse_command(action.text)
    if command == "click":
      argument = self._shop.resolve_click(argument)
    observation, purchase = self._shop.act(command, argument)
    if purchase is None:
      return observation, 0.0, False, {}
    return observation, self.r_max * purchase["score"], True, {**purchase, "won": purchase["score"] == 1.0}

  def goal_actions(self) -> list[str]:
    """An action sequence that buys the goal product with the goal options (the tests' oracle); builtin only."""
    if not isinstance(self._shop, BuiltinShop):
      raise EnvError("webshop: goal_actions() needs source='builtin'")
    if self._shop.goal is None:
      raise EnvError("webshop: goal_actions() called before reset()")
    return self._shop.goal_actions()
