"""The built-in WebShop catalogue: products generated from a seed, goals (instructions) drawn from them, BM25 search.

WebShop's data (1.18M scraped Amazon products, 12k instructions) is a download that cannot happen here, so this
module builds a shop with the same shape: five categories (beauty, electronics, fashion, food, furniture), products
with an ASIN, title, Amazon-style category path, attributes, option groups (color, size, ...), price, features,
description and reviews; and goals as WebShop builds them from a target product: some of its attributes, one value
per option group, a price bound above its price, and an instruction in the dataset's lowercase style
("i need a natural looking hair extension with black color, and price lower than 40.00 dollars").
Everything is a pure function of the catalogue seed (and the goal index).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import random
import string

from paw_jax.envs.base import EnvError
from paw_jax.envs.retrieval import BM25Retriever, Passage

RESULTS_LIMIT = 50  # WebShop's search engine returns the top 50 ("Total results: 50")


@dataclasses.dataclass(frozen=True)
class ProductType:
  """A kind of product: its name is the search query it was 'scraped' with and the type words of its titles."""
  name: str
  path: str  # "Beauty & Personal Care › Hair Care › Hair Extensions"
  attributes: tuple[str, ...]
  options: dict[str, tuple[str, ...]]  # option name -> the values products of this type may offer
  price_range: tuple[int, int]

  @property
  def plural(self) -> bool:
    return self.name.endswith("s")


@dataclasses.dataclass(frozen=True)
class Category:
  name: str
  brands: tuple[str, ...]
  blurb: str  # the generic sentence of descriptions; must name no attribute (tests check)
  types: tuple[ProductType, ...]


@dataclasses.dataclass(frozen=True)
class Product:
  asin: str
  title: str
  category: str
  path: str
  query: str
  nouns: tuple[str, ...]  # the title's nouns for r_type: brand and type words (spaCy's NOUN/PROPN in WebShop)
  attributes: tuple[str, ...]
  options: dict[str, tuple[str, ...]]
  price: float
  features: tuple[str, ...]
  description: str
  reviews: tuple[tuple[int, str], ...]  # (stars, text)


@dataclasses.dataclass(frozen=True)
class Goal:
  """What the shopper wants; the target product's `query`, `path` and `nouns` are what r_type compares with."""
  index: int
  asin: str
  category: str
  path: str
  query: str
  nouns: tuple[str, ...]
  attributes: tuple[str, ...]
  options: dict[str, str]  # option name -> wanted value
  price_upper: float
  instruction: str


def _product_type(root: str, name: str, path: str, attributes: str, options: str,
                  price_range: tuple[int, int]) -> ProductType:
  """Builds a type from compact text: attributes 'a, b, c'; options 'color: black, red; size: small, large'."""
  groups = (group.split(":") for group in options.split(";"))
  return ProductType(name, f"{root} › {path}", tuple(a.strip() for a in attributes.split(",")),
                     {key.strip(): tuple(v.strip() for v in values.split(",")) for key, values in groups},
                     price_range)


def _category(name: str, root: str, brands: str, blurb: str, *types: tuple) -> Category:
  return Category(name, tuple(brands.split()), blurb, tuple(_product_type(root, *spec) for spec in types))


# Option values are chosen so that no two values of one product type match each other under the reward's fuzzy
# matcher (e.g. no "12 count" / "24 count": token_set_ratio 88), and attribute texts never occur inside another
# attribute of the same type; tests/test_webshop.py checks both.
CATEGORIES = (
    _category(
        "beauty", "Beauty & Personal Care", "Lumina Velora Aurelle Botanix Glowra Serenique Purelle Dermique",
        "Made with carefully selected ingredients for your daily routine.",
        ("hair extension", "Hair Care › Hair Extensions", "natural looking, heat resistant, tangle free, "
         "easy to apply, reusable", "color: black, brown, blonde, auburn, burgundy, grey; "
         "style: straight, wavy, curly", (15, 70)),
        ("shampoo", "Hair Care › Shampoos", "sulfate free, paraben free, color safe, dry scalp, volumizing",
         "scent: lavender, coconut, citrus, unscented, eucalyptus; size: 8 fl oz, 16 fl oz, 32 fl oz", (6, 30)),
        ("lipstick", "Makeup › Lips › Lipstick", "long lasting, cruelty free, vegan, matte finish, moisturizing",
         "color: red, pink, nude, coral, plum, berry", (5, 28)),
        ("nail polish", "Makeup › Nails › Nail Polish", "quick drying, chip resistant, non toxic, glossy, "
         "long wearing", "color: red, pink, nude, coral, black, teal", (4, 20)),
        ("face moisturizer", "Skin Care › Face › Moisturizers", "fragrance free, sensitive skin, anti aging, "
         "non greasy, hyaluronic acid", "size: 1.7 oz, 3.4 oz, 5 oz", (9, 55)),
    ),
    _category(
        "electronics", "Electronics", "Voltix Sonique Nexora Quantix Auralink Pixelon Zentrix Corvex",
        "Backed by a one year warranty and friendly customer support.",
        ("wireless earbuds", "Headphones › Earbud Headphones", "noise cancelling, water resistant, "
         "fast charging, touch control, long battery life", "color: black, white, blue, pink", (19, 120)),
        ("headphones", "Headphones › Over-Ear Headphones", "noise cancelling, foldable, built in microphone, "
         "long battery life, memory foam", "color: black, white, silver, navy", (25, 200)),
        ("phone case", "Cell Phone Accessories › Cases", "shockproof, slim fit, kickstand, drop protection, "
         "wireless charging compatible", "color: black, blue, red, pink, green, purple", (7, 35)),
        ("usb cable", "Computer Accessories › Cables › USB Cables", "fast charging, braided nylon, durable, "
         "data transfer", "length: 3 ft, 6 ft, 10 ft; color: black, white, grey", (5, 25)),
        ("bluetooth speaker", "Portable Audio › Speakers", "waterproof, portable, deep bass, "
         "long battery life, dustproof", "color: black, blue, red, teal", (20, 150)),
    ),
    _category(
        "fashion", "Clothing, Shoes & Jewelry", "Urbanis Velvetta Northloom Trendora Kovalo Marisol Aldenwear "
        "Sunvale", "Designed for a comfortable fit that lasts all day.",
        ("t-shirt", "Men › Clothing › T-Shirts", "machine washable, short sleeve, crew neck, moisture wicking, "
         "cotton", "color: black, white, navy, grey, red, olive; size: small, medium, large, xl, xxl", (8, 35)),
        ("running shoes", "Men › Shoes › Athletic", "non slip, lightweight, breathable, arch support, "
         "rubber sole", "color: black, white, grey, blue; size: 7, 8, 9, 10, 11, 12", (30, 140)),
        ("dress", "Women › Clothing › Dresses", "machine washable, long sleeve, v neck, floral print, "
         "pockets", "color: black, red, navy, green, pink; size: small, medium, large, xl", (18, 90)),
        ("jeans", "Women › Clothing › Jeans", "high waist, stretch, slim fit, button closure, "
         "machine washable", "color: blue, black, grey; size: 26, 28, 30, 32, 34", (20, 80)),
        ("sunglasses", "Men › Accessories › Sunglasses", "polarized, uv protection, lightweight, "
         "scratch resistant, unisex", "color: black, brown, gold, silver", (10, 90)),
    ),
    _category(
        "food", "Grocery & Gourmet Food", "Harvestly Goldfield Nutrava Orchardia Sprouta Pantrio Meadowly Tastara",
        "Packed fresh in small batches and shipped in recyclable packaging.",
        ("protein bar", "Snack Foods › Bars › Protein Bars", "gluten free, low sugar, high protein, "
         "keto friendly, non gmo", "flavor: chocolate, peanut butter, vanilla, cookie dough, lemon; "
         "size: 6 count, 12 count, 30 count", (10, 45)),
        ("ground coffee", "Beverages › Coffee › Ground Coffee", "organic, fair trade, low acid, single origin, "
         "dark roast", "flavor: french vanilla, hazelnut, caramel, mocha; size: 10 ounce, 32 ounce", (8, 40)),
        ("olive oil", "Pantry Staples › Oils › Olive Oils", "extra virgin, cold pressed, organic, non gmo, "
         "kosher", "size: 16.9 fl oz, 33.8 fl oz, 101 fl oz", (9, 60)),
        ("herbal tea", "Beverages › Tea › Herbal Tea", "caffeine free, organic, non gmo, sugar free, "
         "kosher", "flavor: chamomile, peppermint, ginger, hibiscus; size: 16 count, 50 count, 100 count",
         (4, 25)),
        ("mixed nuts", "Snack Foods › Nuts & Seeds › Mixed Nuts", "gluten free, high protein, resealable bag, "
         "unsalted, vegan", "flavor: sea salt, honey roasted, smoked; size: 8 ounce, 16 ounce, 40 ounce",
         (7, 35)),
    ),
    _category(
        "furniture", "Home & Kitchen", "Oakhaven Nordvik Loftline Casamora Woodcrest Elmstead Haldor Brightnest",
        "Ships in one box with every tool you need and clear instructions.",
        ("office chair", "Furniture › Home Office Furniture › Desk Chairs", "ergonomic, lumbar support, "
         "adjustable height, easy assembly, breathable mesh", "color: black, grey, white, blue", (60, 300)),
        ("bookshelf", "Furniture › Living Room Furniture › Bookcases", "easy assembly, solid wood, "
         "space saving, anti tip", "color: walnut, white, black, oak; size: 3 tier, 5 tier", (35, 200)),
        ("end table", "Furniture › Living Room Furniture › End Tables", "easy assembly, storage shelf, "
         "solid wood, space saving, modern design", "color: walnut, white, black, grey", (25, 150)),
        ("bed frame", "Furniture › Bedroom Furniture › Beds", "easy assembly, under bed storage, noise free, "
         "no box spring needed, metal", "size: twin, full, queen, king", (90, 450)),
        ("nightstand", "Furniture › Bedroom Furniture › Nightstands", "easy assembly, storage drawer, "
         "solid wood, space saving, charging station", "color: walnut, white, black, grey", (30, 160)),
    ),
)
SERIES = ("Pro", "Plus", "Classic", "Essential", "Deluxe", "Mini", "Max", "Lite", "Elite", "Prime", "Ultra",
          "Select", "Signature", "Original", "Nova", "Zen")
REVIEWS = ((5, "Exactly as described, would buy again."), (4, "Good value for the price."),
           (5, "Arrived quickly and works great."), (3, "Does the job but nothing special."),
           (4, "My second purchase, still happy with it."), (2, "Not what I expected."))
_OPENERS = ("i need", "i am looking for", "i want", "find me", "i would like", "i'm searching for")


def _asin(rng: random.Random) -> str:
  return "B0" + "".join(rng.choices(string.digits + string.ascii_uppercase, k=8))


def _pick(rng: random.Random, values: tuple[str, ...], low: int, high: int) -> tuple[str, ...]:
  """Between `low` and `high` of `values`, in their original order."""
  chosen = set(rng.sample(values, rng.randint(low, min(high, len(values)))))
  return tuple(value for value in values if value in chosen)


def _make_product(rng: random.Random, category: Category, kind: ProductType, asin: str,
                  taken_titles: set[str]) -> Product:
  attributes = tuple(rng.sample(kind.attributes, rng.randint(2, min(4, len(kind.attributes)))))
  for _ in range(1000):
    brand = rng.choice(category.brands)
    # The first attribute is in the title: as on Amazon, a title advertises a product's selling point.
    title = f"{brand} {rng.choice(SERIES)} {attributes[0].title()} {kind.name.title()}"
    if title not in taken_titles:
      break
  else:
    raise EnvError(f"webshop catalogue: ran out of distinct titles for '{kind.name}'; lower products_per_type")
  taken_titles.add(title)
  return Product(
      asin=asin, title=title, category=category.name, path=kind.path, query=kind.name,
      nouns=(brand.lower(), *kind.name.split()), attributes=attributes,
      options={name: _pick(rng, values, 2, 4) for name, values in kind.options.items()},
      price=rng.randint(*kind.price_range) + 0.99,
      features=tuple(f"{attribute.capitalize()} {kind.name}" for attribute in attributes),
      description=f"{title}. {category.blurb}", reviews=tuple(rng.sample(REVIEWS, rng.randint(1, 3))))


def generate_products(seed: int, products_per_type: int) -> list[Product]:
  """`products_per_type` products of every type, shuffled, with distinct ASINs and titles."""
  rng = random.Random(f"webshop-catalogue/{seed}")
  asins: set[str] = set()
  titles: set[str] = set()
  products = []
  for category in CATEGORIES:
    for kind in category.types:
      for _ in range(products_per_type):
        asin = _asin(rng)
        while asin in asins:
          asin = _asin(rng)
        asins.add(asin)
        products.append(_make_product(rng, category, kind, asin, titles))
  rng.shuffle(products)
  return products


def price_bound(rng: random.Random, price: float) -> float:
  """A round bound 5-50% above `price` ("lower than 40.00 dollars"), in steps of 5 below $20, 10 above."""
  step = 5 if price < 20 else 10
  return float(math.ceil(price * rng.uniform(1.05, 1.5) / step) * step)


def _join(words: list[str] | tuple[str, ...]) -> str:
  return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _with_article(phrase: str, plural: bool) -> str:
  return phrase if plural else f"{'an' if phrase[0] in 'aeiou' else 'a'} {phrase}"


def write_instruction(rng: random.Random, kind: ProductType, attributes: tuple[str, ...],
                      options: dict[str, str], price_upper: float) -> str:
  attribute_text = _join(attributes)
  if rng.random() < 0.5:
    item = _with_article(f"{attribute_text} {kind.name}", kind.plural)
  else:
    item = f"{_with_article(kind.name, kind.plural)} that {'are' if kind.plural else 'is'} {attribute_text}"
  wanted = f" with {_join([f'{value} {name}' for name, value in options.items()])}" if options else ""
  return f"{rng.choice(_OPENERS)} {item}{wanted}, and price lower than {price_upper:.2f} dollars"


def _search_text(product: Product) -> str:
  """What the index sees: the product's text, its option values and its category path."""
  values = " ".join(value for group in product.options.values() for value in group)
  return " ".join((*product.features, product.description, values, product.path))


class Catalogue:
  """The products of one seed, `num_goals` goals over them, and a BM25 (Lucene-default k1, b) product index."""

  def __init__(self, seed: int = 0, products_per_type: int = 60, num_goals: int = 6000):
    if products_per_type < 1 or num_goals < 1:
      raise EnvError(f"webshop catalogue: products_per_type and num_goals must be >= 1, "
                     f"got {products_per_type} and {num_goals}")
    self.seed, self.num_goals = seed, num_goals
    self.products = generate_products(seed, products_per_type)
    self.by_asin = {product.asin: product for product in self.products}
    self.types = {kind.name: kind for category in CATEGORIES for kind in category.types}
    self._index = BM25Retriever([Passage(p.asin, p.title, _search_text(p)) for p in self.products])
    # Rollout groups replay the same queries: remember the recent ones.
    self.search = functools.lru_cache(maxsize=4096)(self._search)

  def _search(self, query: str) -> tuple[str, ...]:
    """The ASINs of the top RESULTS_LIMIT products for `query`, best first."""
    return tuple(passage.id for passage in self._index.search(query, RESULTS_LIMIT))

  def goal(self, index: int) -> Goal:
    """Goal `index`: a product, some of its attributes, one value per option group and a price bound."""
    if not 0 <= index < self.num_goals:
      raise EnvError(f"webshop: goal index {index} out of range [0, {self.num_goals})")
    rng = random.Random(f"webshop-goal/{self.seed}/{index}")
    product = rng.choice(self.products)
    kind = self.types[product.query]
    attributes = _pick(rng, product.attributes, 1, 3)
    options = {name: rng.choice(values) for name, values in product.options.items()}
    price_upper = price_bound(rng, product.price)
    return Goal(index=index, asin=product.asin, category=product.category, path=product.path,
                query=product.query, nouns=product.nouns, attributes=attributes, options=options,
                price_upper=price_upper, instruction=write_instruction(rng, kind, attributes, options, price_upper))


@functools.lru_cache(maxsize=4)
def load_catalogue(seed: int = 0) -> Catalogue:
  """One catalogue per seed and process, shared by every env instance."""
  return Catalogue(seed)
