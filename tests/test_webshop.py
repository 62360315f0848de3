"""WebShop: the reward against hand-computed values, pages and navigation, the oracle, invalid actions, splits."""
from __future__ import annotations

import dataclasses
import itertools
import random

import pytest

from paw_jax.envs import make
from paw_jax.envs.base import EnvError, Task
from paw_jax.envs.webshop import WebShopEnv, split_goal_index
from paw_jax.envs.webshop_catalog import CATEGORIES, Catalogue, Goal, Product, load_catalogue
from paw_jax.envs import webshop_reward as wr


def act(text: str) -> str:
  return f"I think so. <action>{text}</action>"


def play(env: WebShopEnv, actions: list[str]):
  result = None
  for action in actions:
    result = env.step(act(action))
  return result


@pytest.fixture(name="env")
def fixture_env() -> WebShopEnv:
  return WebShopEnv()


# --- the fuzzy matcher, against values worked out by hand ---------------------------------------------------------
@pytest.mark.parametrize("first, second, expected", [
    ("x-large", "large", 100),      # "x large" ⊇ {"large"}: a token subset scores 100
    ("Natural Looking", "natural looking", 100),
    ("pack of 2", "pack of 4", 89),  # LCS("of pack 2", "of pack 4") = 8: 200 * 8 / 18 = 88.9
    ("1 liter", "3 liter", 86),      # LCS("liter 1", "liter 3") = 6: 200 * 6 / 14 = 85.7 -> a (lenient) match
    ("8 fl oz", "16 fl oz", 83),     # shared "fl oz" vs "fl oz 8": 200 * 5 / 12 = 83.3
    ("red", "blue", 29),             # no shared token; LCS("red", "blue") = 1: 200 / 7 = 28.6
    ("", "blue", 0),
])
def test_token_set_ratio_reference_values(first, second, expected):
  assert wr.token_set_ratio(first, second) == expected


def test_normalize_color_takes_first_colour_of_the_set():
  assert wr.normalize_color("dark brown") == "brown"  # "brown" precedes "dark" in COLOR_SET
  assert wr.normalize_color("light blue") == "blue"
  assert wr.normalize_color("peppermint") == "mint"
  assert wr.normalize_color("queen") == "queen"
  assert wr.option_matches(["light blue"], ["blue"]) == 1
  assert wr.token_set_ratio("brown", "brownish") == 77  # matches only through normalisation, on either side:
  assert wr.option_matches(["brown"], ["brownish"]) == 1 and wr.option_matches(["brownish"], ["brown"]) == 1
  assert wr.option_matches(["navy", "large"], ["blue", "large", "small"]) == 1


# --- get_reward on hand-made products ------------------------------------------------------------------------------
def _product(**fields) -> Product:
  base = dict(asin="B000000001", title="Acme Pro Vegan Lipstick", category="beauty",
              path="Beauty & Personal Care › Makeup › Lips › Lipstick", query="lipstick", nouns=("acme", "lipstick"),
              attributes=("vegan", "matte finish"), options={"color": ("red", "pink")}, price=15.99,
              features=("Vegan lipstick", "Matte finish lipstick"), description="Acme Pro Vegan Lipstick.",
              reviews=())
  return Product(**{**base, **fields})


def _goal(**fields) -> Goal:
  base = dict(index=0, asin="B000000002", category="beauty", path="Beauty & Personal Care › Makeup › Lips › Lipstick",
              query="lipstick", nouns=("lumina", "lipstick"), attributes=("vegan", "long lasting", "cruelty free"),
              options={"color": "pink"}, price_upper=20.0, instruction="i need a vegan lipstick")
  return Goal(**{**base, **fields})


@pytest.mark.parametrize("product_fields, goal_fields, options, expected", [
    # 1 of 3 attributes ("vegan"), the option, the price: (1 + 1 + 1) / (3 + 1 + 1)
    ({}, {}, {"color": "pink"}, 3 / 5),
    ({}, {}, {"color": "red"}, 2 / 5),                    # wrong option
    ({}, {}, {}, 2 / 5),                                  # no option selected
    ({"price": 25.99}, {}, {"color": "pink"}, 2 / 5),     # over budget
    # "long lasting" is found in the description text, "cruelty free" fuzzily among the attributes
    ({"description": "A long lasting formula.", "attributes": ("vegan", "cruelty-free")}, {}, {"color": "pink"}, 1.0),
    ({}, {"options": {}}, {}, 2 / 4),                     # no goal options: (1 + 0 + 1) / (3 + 0 + 1)
    # r_type 0.5 (no query / category match, title score 1/6) halves (1 + 1 + 1) / 5
    ({"query": "x", "path": "A › B"}, {"nouns": ("lipstick", "n1", "n2", "n3", "n4", "n5")}, {"color": "pink"},
     0.5 * 3 / 5),
])
def test_get_reward_hand_computed(product_fields, goal_fields, options, expected):
  product = _product(**product_fields)
  score = wr.get_reward(product, _goal(**goal_fields), product.price, options)
  assert score.total == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("product_fields, goal_nouns, expected_r_type", [
    ({}, ("lumina", "lipstick"), 1.0),  # query match (title score 1/2 alone would do too)
    # no query, category or title match: title score 1/6 -> 0.5; 1/11 -> 0.1; 0 -> 0
    ({"query": "x", "path": "A › B"}, ("lipstick", "n1", "n2", "n3", "n4", "n5"), 0.5),
    ({"query": "x", "path": "A › B"}, ("lipstick", *(f"n{i}" for i in range(10))), 0.1),
    ({"query": "x", "path": "A › B"}, ("lipstick", "n1", "n2", "n3"), 1.0),  # title score 1/4 > 0.2
    ({"query": "x", "path": "Beauty & Personal Care › Makeup › Eyes"}, ("lipstick", "n1", "n2", "n3", "n4", "n5"),
     1.0),  # 2 shared category levels
    ({"nouns": ("acme", "mascara")}, ("lumina", "lipstick"), 0.0),  # same query but no shared noun
])
def test_type_reward_branches(product_fields, goal_nouns, expected_r_type):
  r_type, *_ = wr.type_reward(_product(**product_fields), _goal(nouns=goal_nouns))
  assert r_type == expected_r_type


def test_get_reward_rejects_missing_price_bound():
  with pytest.raises(ValueError, match="price_upper"):
    wr.get_reward(_product(), _goal(price_upper=0.0), 1.0, {})


# --- the catalogue ---------------------------------------------------------------------------------------------------
def test_catalogue_is_deterministic_by_seed():
  fresh, cached, other = Catalogue(0), load_catalogue(0), Catalogue(1, products_per_type=5, num_goals=10)
  assert [p.asin for p in fresh.products] == [p.asin for p in cached.products]
  assert [p.title for p in fresh.products] == [p.title for p in cached.products]
  assert fresh.goal(123) == cached.goal(123)
  assert {p.asin for p in other.products}.isdisjoint(p.asin for p in fresh.products)
  assert len(fresh.products) == 25 * 60 and len(fresh.by_asin) == len(fresh.products)
  assert {p.category for p in fresh.products} == {"beauty", "electronics", "fashion", "food", "furniture"}


def test_catalogue_vocabulary_has_no_accidental_matches():
  """Distinct option values of a type never match each other, and a product's text never gives it an attribute of
  its type that it does not have: otherwise a wrong choice could score as a right one."""
  for kind in (kind for category in CATEGORIES for kind in category.types):
    values = [value for group in kind.options.values() for value in group]
    assert len(values) == len(set(values)), kind.name
    for first, second in itertools.combinations(values, 2):
      assert wr.option_matches([first], [second]) == 0, (kind.name, first, second)
  for product in load_catalogue(0).products:
    kind = load_catalogue(0).types[product.query]
    missing = [attribute for attribute in kind.attributes if attribute not in product.attributes]
    assert wr.attribute_matches(product, missing) == 0, (product.title, missing)
    assert wr.attribute_matches(product, product.attributes) == len(product.attributes)


def test_goal_is_drawn_from_its_product():
  catalogue = load_catalogue(0)
  for index in range(50):
    goal = catalogue.goal(index)
    product = catalogue.by_asin[goal.asin]
    assert set(goal.attributes) <= set(product.attributes) and 1 <= len(goal.attributes) <= 3
    assert all(goal.options[name] in values for name, values in product.options.items())
    assert product.price < goal.price_upper <= 1.5 * product.price + 10
    assert goal.instruction.endswith(f"and price lower than {goal.price_upper:.2f} dollars")
    assert goal.query in goal.instruction and all(a in goal.instruction for a in goal.attributes)
  with pytest.raises(EnvError, match="goal index 6000 out of range"):
    catalogue.goal(6000)


def test_bm25_finds_each_goal_product_by_its_title_on_page_one(env):
  catalogue = load_catalogue(0)
  for seed in range(60):
    env.reset(Task("train", seed))
    goal = catalogue.goal(split_goal_index(Task("train", seed), catalogue.num_goals))
    result = env.step(act(f"search[{catalogue.by_asin[goal.asin].title}]"))
    assert result.observation.split(" [SEP] ")[5] == goal.asin  # the first result
    assert f"click[{goal.asin.lower()}]" in result.info["admissible_actions"]


# --- episodes -------------------------------------------------------------------------------------------------------
def test_reset_is_deterministic_and_seeds_differ():
  first, second = WebShopEnv(), make("webshop")
  assert first.reset(Task("train", 7)) == second.reset(Task("train", 7))
  assert first.goal_actions() == second.goal_actions()
  instructions = {first.reset(Task("train", seed))[1]["task"] for seed in range(20)}
  assert len(instructions) == 20


def test_start_page_and_reset_info(env):
  observation, info = env.reset(Task("eval", 2))
  instruction = ("i need a protein bar that is gluten free and keto friendly with lemon flavor and 6 count size, "
                 "and price lower than 25.00 dollars")
  assert observation == f"WebShop [SEP] Instruction: [SEP] {instruction} [SEP] Search"
  assert info["task"] == instruction and info["task_type"] == "food" and info["goal_index"] == 2
  assert info["admissible_actions"] == ["search[<your query>]"]
  assert "'search[<your query>]'" in env.format_admissible(info["admissible_actions"])


@pytest.mark.parametrize("split, seeds", [("train", range(150)), ("eval", range(0, 500, 5))])
def test_oracle_always_wins(env, split, seeds):
  for seed in seeds:
    env.reset(Task(split, seed))
    actions = env.goal_actions()
    assert len(actions) <= env.max_steps
    result = play(env, actions)
    assert result.done and not result.info["truncated"]
    assert result.info["score"] == 1.0 and result.reward == 10.0 and result.info["won"] is True, (split, seed)
    assert result.info["invalid_count"] == 0


def test_wrong_option_scores_exactly_by_formula(env):
  env.reset(Task("eval", 2))  # protein bar; 2 goal attributes; flavor lemon, size 6 count
  oracle = env.goal_actions()
  assert oracle[-3:] == ["click[lemon]", "click[6 count]", "click[buy now]"]
  result = play(env, [*oracle[:-3], "click[vanilla]", "click[6 count]", "click[buy now]"])
  # (2 attributes + 1 of 2 options + price) / (2 + 2 + 1)
  assert result.info["score"] == pytest.approx(0.8) and result.reward == pytest.approx(8.0)
  assert result.info["r_option"] == 0.5 and result.info["won"] is False and result.done
  env.reset(Task("eval", 2))
  result = play(env, [*oracle[:-3], "click[buy now]"])  # no option selected: (2 + 0 + 1) / 5
  assert result.reward == pytest.approx(6.0)
  env.reset(Task("eval", 2))
  result = play(env, [*oracle[:-3], "click[vanilla]", "click[lemon]", "click[6 count]", "click[buy now]"])
  assert result.reward == 10.0  # a later click replaces the selection
  env.reset(Task("eval", 2))
  result = play(env, [*oracle[:-3], "click[lemon]", "click[6 count]", "click[features]", "click[< prev]",
                      "click[< prev]", oracle[-4], "click[buy now]"])
  assert result.reward == pytest.approx(6.0)  # sub-pages keep the selection; reopening the product clears it


def test_over_budget_purchase_loses_the_price_term():
  catalogue = load_catalogue(0)
  goal = catalogue.goal(2)
  product = catalogue.by_asin[goal.asin]
  over = dataclasses.replace(goal, price_upper=product.price - 1.0)
  score = wr.get_reward(product, over, product.price, goal.options)
  assert score.total == pytest.approx(4 / 5) and score.r_price is False  # (2 + 2 + 0) / (2 + 2 + 1)


def test_wrong_type_scores_zero(env):
  env.reset(Task("eval", 2))  # a protein bar (food)
  catalogue = load_catalogue(0)
  # Within budget ($25), so only r_type = 0 (no shared noun) makes the score 0 rather than (0 + 0 + 1) / 5.
  case = next(p for p in catalogue.products if p.query == "phone case" and p.price <= 25.0)
  result = play(env, [f"search[{case.title}]", f"click[{case.title}]", "click[buy now]"])  # opened by title
  assert result.info["purchased"] == case.asin and result.info["r_price"] is True
  assert result.info["r_type"] == 0.0 and result.info["score"] == 0.0 and result.reward == 0.0
  assert result.done and result.info["won"] is False


def test_random_admissible_play_mostly_fails(env):
  rng = random.Random(0)
  wins = 0
  for seed in range(60):
    _, info = env.reset(Task("train", seed))
    instruction, result = info["task"], None
    while result is None or not result.done:
      action = rng.choice(info["admissible_actions"])
      if action.startswith("search"):  # a relevant query, so the failures come from the clicks
        action = f"search[{instruction}]"
      result = env.step(act(action))
      info = result.info
    wins += result.info["won"]
  assert wins <= 6


def test_navigation_pages_and_sub_pages(env):
  header = "Instruction: [SEP] " + env.reset(Task("eval", 2))[1]["task"]
  page_one = env.step(act("search[protein bar]")).observation
  assert page_one.startswith(f"{header} [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] B0")
  page_two = env.step(act("click[Next >]"))
  assert page_two.observation.startswith(f"{header} [SEP] Back to Search [SEP] Page 2 (Total results: 50) "
                                         "[SEP] < Prev [SEP] Next > [SEP] B0")
  assert page_two.info["admissible_actions"][:3] == ["click[back to search]", "click[< prev]", "click[next >]"]
  assert len(page_two.info["admissible_actions"]) == 3 + 10
  for _ in range(3):
    last = env.step(act("click[next >]"))
  assert "Page 5 (Total results: 50)" in last.observation and "click[next >]" not in last.info["admissible_actions"]
  assert env.step(act("click[< prev]")).observation.count("Page 4") == 1

  clicked = env.admissible_actions()[3]  # the first product on page 4, after "back to search", "< prev", "next >"
  product = load_catalogue(0).by_asin[clicked[len("click["):-1].upper()]
  item = env.step(act(f"click[{product.asin}]"))  # ASINs match case-insensitively
  option_texts = " [SEP] ".join(t for name, values in product.options.items() for t in (name, *values))
  assert item.observation == (f"{header} [SEP] Back to Search [SEP] < Prev [SEP] {option_texts} [SEP] "
                              f"{product.title} [SEP] Price: ${product.price:.2f} [SEP] Rating: N.A. [SEP] "
                              "Description [SEP] Features [SEP] Reviews [SEP] Buy Now")
  features = env.step(act("click[features]"))
  assert features.observation == f"{header} [SEP] Back to Search [SEP] < Prev [SEP] " + " [SEP] ".join(product.features)
  assert features.info["admissible_actions"] == ["click[back to search]", "click[< prev]"]
  assert env.step(act("click[< prev]")).observation == item.observation
  assert "[SEP] Page 4 (Total results: 50) [SEP]" in env.step(act("click[< prev]")).observation
  back = env.step(act("click[back to search]"))
  assert back.observation.startswith("WebShop [SEP] Instruction:") and back.info["admissible_actions"] == [
      "search[<your query>]"]


@pytest.mark.parametrize("reply", [
    "search[protein bar]",                        # no action tags
    "<action></action>",                          # empty action
    "<action>click[buy now]</action>",            # not on the start page
    "<action>click[b0zzzzzzzz]</action>",         # not on the page
    "<action>buy[now]</action>",                  # unknown command
    "<action>search[]</action>",                  # empty query
    "x" * 10_000 + "<action>search[protein bar]</action>",  # too long
])
def test_invalid_actions_are_penalised_and_change_nothing(env, reply):
  reference = WebShopEnv()
  reference.reset(Task("eval", 2))
  expected = play(reference, ["search[protein bar]"])
  observation, info = env.reset(Task("eval", 2))
  result = env.step(reply)
  assert result.reward == -0.1 and result.info["invalid"] and not result.done
  assert result.observation.startswith("Invalid action") and result.info["invalid_count"] == 1
  assert result.info["admissible_actions"] == info["admissible_actions"]
  after = env.step(act("search[protein bar]"))
  assert after.observation == expected.observation and after.info["admissible_actions"] == expected.info[
      "admissible_actions"]


def test_search_is_invalid_without_a_search_bar(env):
  env.reset(Task("eval", 2))
  results = env.step(act("search[protein bar]"))
  again = env.step(act("search[coffee]"))
  assert again.info["invalid"] and again.reward == -0.1
  assert env.admissible_actions() == results.info["admissible_actions"]


def test_max_steps_truncates():
  env = WebShopEnv()
  env.reset(Task("train", 0))
  for step in range(1, 16):
    result = env.step(act("search[chair]" if step % 2 else "click[back to search]"))
    assert result.done == (step == 15) and result.reward == 0.0
  assert result.info["truncated"] and not result.info["won"] and result.info["admissible_actions"] is None
  with pytest.raises(EnvError, match="finished episode"):
    env.step(act("search[chair]"))
  short = WebShopEnv(max_steps=2)
  short.reset(Task("train", 0))
  assert not short.step("no tags").done and short.step("no tags").info["truncated"]


def test_splits_are_disjoint_and_wrap():
  assert split_goal_index(Task("eval", 0), 6000) == 0
  assert split_goal_index(Task("eval", 499), 6000) == 499
  assert split_goal_index(Task("eval", 500), 6000) == 0
  assert split_goal_index(Task("train", 0), 6000) == 500
  assert split_goal_index(Task("train", 5500), 6000) == 500
  with pytest.raises(EnvError, match="unknown split 'test'"):
    split_goal_index(Task("test", 0), 6000)
  with pytest.raises(EnvError, match="more than 500 goals"):
    split_goal_index(Task("train", 0), 500)


def test_bad_source_and_missing_official_package():
  with pytest.raises(EnvError, match="unknown source 'amazon'"):
    WebShopEnv(source="amazon")
  try:
    import web_agent_site  # pylint: disable=import-outside-toplevel,unused-import
    pytest.skip("the official WebShop package is installed")
  except ImportError:
    pass
  with pytest.raises(EnvError, match=r"source='official' needs .*web_agent_site.*use source='builtin'"):
    WebShopEnv(source="official")
