"""WebShop's purchase score (Yao et al. 2022, `web_agent_site/engine/goal.py: get_reward`) on our Product / Goal.

score = r_type * (matched attributes + matched options + [price <= bound]) / (#goal attributes + #goal options + 1)

Faithful to the original, including its leniency: attributes and options match by thefuzz's `token_set_ratio` > 85
(so "x-large" matches "large"), option values are first reduced to the first colour word they contain, and r_type
accepts any product whose title shares enough nouns with the goal's. Two stand-ins, since this module runs offline:
`token_set_ratio` is re-implemented below (thefuzz >= 0.20 semantics: indel similarity, rounded to an int), and the
nouns of a title are given by the catalogue (brand and product-type words) instead of spaCy's POS tagger.
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable, Mapping

from paw_jax.envs.webshop_catalog import Goal, Product

FUZZY_THRESHOLD = 85  # goal.py: `fuzz.token_set_ratio(...) > 85` counts as a match

# web_agent_site/engine/normalize.py: option values are normalised to the first of these colours they contain.
COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue", "blush",
    "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne", "charcoal", "cheetah",
    "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral", "cranberry", "cream", "crystal",
    "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia", "gold", "granite", "grape", "graphite", "grass",
    "gray", "green", "grey", "heather", "indigo", "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light",
    "lilac", "lime", "magenta", "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom",
    "mustard", "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple", "rainbow",
    "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull", "slate", "steel", "stone",
    "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise", "violet", "walnut", "wheat", "white",
    "wine", "yellow")


@dataclasses.dataclass(frozen=True)
class Score:
  """The score and its parts, as get_reward(verbose=True) reports them."""
  total: float
  r_type: float
  r_att: float
  r_option: float | None  # None when the goal names no option
  r_price: bool
  title_score: float
  query_match: bool
  category_match: bool


def full_process(text: str) -> str:
  """thefuzz's `full_process`: ASCII only, non-alphanumerics to spaces, lowercase, stripped."""
  ascii_text = text.encode("ascii", "ignore").decode()
  return re.sub(r"\W", " ", ascii_text).lower().strip()


@functools.lru_cache(maxsize=65536)
def indel_ratio(first: str, second: str) -> float:
  """100 * 2 * LCS / (len + len): Levenshtein's `ratio` (insertions and deletions only)."""
  if not first and not second:
    return 100.0
  previous = [0] * (len(second) + 1)
  for char in first:
    current = [0]
    for j, other in enumerate(second):
      current.append(previous[j] + 1 if char == other else max(previous[j + 1], current[j]))
    previous = current
  return 200.0 * previous[-1] / (len(first) + len(second))


@functools.lru_cache(maxsize=65536)
def token_set_ratio(first: str, second: str) -> int:
  """thefuzz's `token_set_ratio`: compares the shared tokens with each side's remainder; a subset scores 100."""
  tokens_first, tokens_second = set(full_process(first).split()), set(full_process(second).split())
  if not tokens_first or not tokens_second:
    return 0
  shared = " ".join(sorted(tokens_first & tokens_second))
  with_first = f"{shared} {' '.join(sorted(tokens_first - tokens_second))}".strip()
  with_second = f"{shared} {' '.join(sorted(tokens_second - tokens_first))}".strip()
  pairs = ((shared, with_first), (shared, with_second), (with_first, with_second))
  # An empty intersection compares as 0 against a non-empty side (thefuzz's empty-string check).
  return max(round(indel_ratio(a, b)) if a and b else 0 for a, b in pairs)


def fuzzy_match(first: str, second: str) -> bool:
  return token_set_ratio(first, second) > FUZZY_THRESHOLD


def normalize_color(value: str) -> str:
  """The first colour of COLOR_SET that occurs in `value` (a substring test, as in the original), else `value`."""
  return next((color for color in COLOR_SET if color in value), value)


def _category_levels(path: str) -> set[str]:
  return {level.strip() for level in path.split("›")}


def type_reward(product: Product, goal: Goal) -> tuple[float, float, bool, bool]:
  """(r_type, title_score, query_match, category_match): is the purchase the same kind of product?"""
  query_match = product.query == goal.query
  category_match = len(_category_levels(product.path) & _category_levels(goal.path)) >= 2
  desired = set(goal.nouns)
  title_score = len(set(product.nouns) & desired) / len(desired) if desired else 0.2
  r_type = 1.0 if query_match or category_match or title_score > 0.2 else 0.5
  if title_score < 0.1:
    r_type = 0.1
  if title_score == 0.0:
    r_type = 0.0
  return r_type, title_score, query_match, category_match


def attribute_matches(product: Product, goal_attributes: Iterable[str]) -> int:
  """Goal attributes found among the product's attributes (fuzzily) or in its title, features or description."""
  text = (product.title.lower(), " ".join(product.features).lower(), product.description.lower())
  return sum(any(fuzzy_match(own, wanted) for own in product.attributes) or any(wanted in part for part in text)
             for wanted in goal_attributes)


def option_matches(selected: Iterable[str], goal_options: Iterable[str]) -> int:
  """Goal option values matched (after colour normalisation) by some selected value."""
  selected = [normalize_color(value) for value in selected]
  return sum(any(fuzzy_match(value, normalize_color(wanted)) for value in selected) for wanted in goal_options)


def get_reward(product: Product, goal: Goal, price: float, options: Mapping[str, str]) -> Score:
  """The score of buying `product` at `price` with `options` (option name -> selected value) for `goal`."""
  if goal.price_upper <= 0:
    raise ValueError(f"goal.price_upper must be > 0, got {goal.price_upper}")
  r_type, title_score, query_match, category_match = type_reward(product, goal)
  goal_options = list(goal.options.values())
  num_attributes = attribute_matches(product, goal.attributes)
  num_options = option_matches(options.values(), goal_options)
  r_price = price <= goal.price_upper
  total = (num_attributes + num_options + r_price) / (len(goal.attributes) + len(goal_options) + 1) * r_type
  return Score(total=total, r_type=r_type,
               r_att=num_attributes / len(goal.attributes) if goal.attributes else 0.0,
               r_option=num_options / len(goal_options) if goal_options else None, r_price=r_price,
               title_score=title_score, query_match=query_match, category_match=category_match)
