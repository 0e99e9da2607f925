"""Synthetic product catalog: items with titles, descriptions, prices and popularity.

Besides the public ``items`` frame, :class:`Catalog` keeps numpy arrays (category,
brand, price, popularity) that the behaviour simulation indexes into, so the hot
paths never touch strings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shopmind.synth import vocab
from shopmind.synth.util import ids

ZIPF_EXPONENT = 1.05  # exposure ~ rank^-a within a top-level category
N_QUERY_PATTERNS = 4  # noun | adjective+noun | brand+noun | leaf name
QUERY_PATTERN_P = np.array([0.5, 0.2, 0.15, 0.15])


@dataclass(frozen=True)
class Leaf:
    """One leaf of the taxonomy, flattened."""

    top: int
    path: str
    name: str
    median_price: float
    nouns: tuple[str, ...]


@dataclass
class Catalog:
    """The items frame plus the numeric arrays the simulation samples from."""

    items: pl.DataFrame
    item_ids: pl.Series
    top: np.ndarray  # int64 top-level category index per item
    brand: np.ndarray  # int64 brand index within the item's top-level category
    price: np.ndarray  # float64
    rel_price: np.ndarray  # log(price / leaf median): >0 means pricier than usual
    consumable: np.ndarray  # bool
    refill_days: np.ndarray  # typical rebuy interval of consumables (0 otherwise)
    pop_order: np.ndarray  # item indices grouped by top category
    pop_cdf: np.ndarray  # top + cumulative popularity within the top, aligned with pop_order
    top_share: np.ndarray  # share of exposure per top category (for "global" sampling)
    queries: pl.Series  # search query per (pattern, item): index pattern * n_items + item

    @property
    def n_items(self) -> int:
        return len(self.price)

    def sample(self, rng: np.random.Generator, tops: np.ndarray) -> np.ndarray:
        """Draw one item per entry of ``tops`` from that category's Zipf popularity."""
        x = tops + rng.random(len(tops))
        pos = np.searchsorted(self.pop_cdf, x, side="right")
        return self.pop_order[np.minimum(pos, len(self.pop_order) - 1)]


def flatten_taxonomy() -> list[Leaf]:
    """All leaves in a fixed order (top-level order follows ``vocab.TOP_CATEGORIES``)."""
    leaves = []
    for t, (top, subs) in enumerate(vocab.TAXONOMY.items()):
        for sub, leaf_map in subs.items():
            for leaf, (median, nouns) in leaf_map.items():
                leaves.append(Leaf(t, f"{top} > {sub} > {leaf}", leaf, median, nouns))
    return leaves


def default_n_items(n_users: int) -> int:
    """Catalog size rule: a fifth of the user count, between 500 and 200,000."""
    return int(min(200_000, max(500, n_users // 5)))


def build_catalog(rng: np.random.Generator, n_items: int, currency: str) -> Catalog:
    """Generate ``n_items`` items spread over the taxonomy."""
    leaves = flatten_taxonomy()
    leaf_of = _allocate_items(rng, leaves, n_items)
    leaf_top = np.array([lf.top for lf in leaves])
    top = leaf_top[leaf_of]
    tops = vocab.TOP_CATEGORIES

    median = np.array([lf.median_price for lf in leaves])[leaf_of]
    sigma = np.array([vocab.PRICE_SIGMA[t] for t in tops])[top]
    log_dev = rng.normal(0.0, 1.0, n_items) * sigma
    price = _shop_price(median * np.exp(log_dev))
    rel_price = np.log(price / median)

    brand = rng.integers(0, len(vocab.BRANDS[tops[0]]), n_items)
    noun_u = rng.random(n_items)
    adj = rng.integers(0, len(vocab.ADJECTIVES[tops[0]]), n_items)
    consumable = np.isin(top, [tops.index(t) for t in vocab.CONSUMABLE_DAYS])
    base_days = np.array([vocab.CONSUMABLE_DAYS.get(t, 0.0) for t in tops])[top]
    refill_days = base_days * np.exp(rng.normal(0.0, 0.25, n_items))

    # Popularity: a random rank inside the top-level category, Zipf weight by rank.
    order, cdf, share = _zipf_popularity(rng, top, len(tops))

    item_ids = ids("i", np.arange(1, n_items + 1), 6).rename("item_id")
    texts = _texts(rng, leaves, leaf_of, top, brand, adj, noun_u)
    attributes, variant = _attributes(rng, top)
    title = pl.concat_str(
        [texts["brand"], pl.lit(" "), texts["adjective"], pl.lit(" "), texts["noun"], pl.lit(" "), variant]
    )
    stock = rng.negative_binomial(2, 0.04, n_items)
    stock[rng.random(n_items) < 0.04] = 0  # a few items are sold out
    frame = pl.DataFrame(
        {
            "item_id": item_ids,
            "title": pl.select(title).to_series(),
            "description": texts["description"],
            "category": texts["category"],
            "brand": texts["brand"],
            "price": pl.Series(price, dtype=pl.Float64),
            "currency": pl.Series([currency] * n_items, dtype=pl.Utf8),
            "stock": pl.Series(stock, dtype=pl.Int64),
            "attributes": attributes,
            "consumable": pl.Series(consumable, dtype=pl.Boolean),
        }
    )
    return Catalog(
        items=frame,
        item_ids=item_ids,
        top=top,
        brand=brand,
        price=price,
        rel_price=rel_price,
        consumable=consumable,
        refill_days=refill_days,
        pop_order=order,
        pop_cdf=cdf,
        top_share=share,
        queries=texts["queries"],
    )


def _allocate_items(rng: np.random.Generator, leaves: list[Leaf], n_items: int) -> np.ndarray:
    """Leaf index per item: every leaf gets one item, the rest follows category weights."""
    n_leaves = len(leaves)
    top_w = np.array([vocab.TOP_WEIGHTS[t] for t in vocab.TOP_CATEGORIES])
    leaf_top = np.array([lf.top for lf in leaves])
    per_top = np.bincount(leaf_top)
    w = (0.5 * top_w + 0.5 / len(top_w))[leaf_top] / per_top[leaf_top]
    w = w * rng.dirichlet(np.full(n_leaves, 8.0)) * n_leaves  # leaves differ in size
    counts = np.ones(n_leaves, dtype=np.int64) if n_items >= n_leaves else np.zeros(n_leaves, np.int64)
    counts += rng.multinomial(n_items - counts.sum(), w / w.sum())
    return rng.permutation(np.repeat(np.arange(n_leaves), counts))


def _shop_price(raw: np.ndarray) -> np.ndarray:
    """Shop-style prices: x.99 above 5 EUR, otherwise cents, never below 0.49."""
    raw = np.maximum(raw, 0.49)
    return np.where(raw >= 5.0, np.floor(raw) + 0.99, np.round(raw, 2))


def _zipf_popularity(
    rng: np.random.Generator, top: np.ndarray, n_top: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per top category: item order and a cumulative distribution offset by the top index."""
    order_parts, cdf_parts = [], []
    for t in range(n_top):
        members = rng.permutation(np.flatnonzero(top == t))
        w = np.arange(1, len(members) + 1, dtype=np.float64) ** -ZIPF_EXPONENT
        cum = np.cumsum(w) / w.sum()
        cum[-1] = 1.0
        order_parts.append(members)
        cdf_parts.append(t + cum)
    share = np.array([vocab.TOP_WEIGHTS[t] for t in vocab.TOP_CATEGORIES])
    return np.concatenate(order_parts), np.concatenate(cdf_parts), share / share.sum()


def _pick(
    rng: np.random.Generator, table: dict[str, tuple[str, ...]], top: np.ndarray, distinct: int = 1
) -> list[pl.Series]:
    """``distinct`` different entries per item from the item's top-level list in ``table``."""
    names = vocab.TOP_CATEGORIES
    sizes = np.array([len(table[t]) for t in names])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    flat = pl.Series([w for t in names for w in table[t]], dtype=pl.Utf8)
    first = (rng.random(len(top)) * sizes[top]).astype(np.int64)
    # Later picks step forward by 1..k-1 so no item repeats a word within its sentence.
    steps = [first] + [first + k for k in range(1, distinct)]
    shift = (rng.random(len(top)) * (sizes[top] - distinct + 1)).astype(np.int64) if distinct > 1 else 0
    return [flat.gather(offsets[top] + (s + shift * (k > 0)) % sizes[top]) for k, s in enumerate(steps)]


def _texts(
    rng: np.random.Generator,
    leaves: list[Leaf],
    leaf_of: np.ndarray,
    top: np.ndarray,
    brand: np.ndarray,
    adj: np.ndarray,
    noun_u: np.ndarray,
) -> dict[str, pl.Series]:
    """Brand, noun, category path, description and search queries per item."""
    names = vocab.TOP_CATEGORIES
    n = len(top)
    brand_flat = pl.Series([b for t in names for b in vocab.BRANDS[t]], dtype=pl.Utf8)
    adj_flat = pl.Series([a for t in names for a in vocab.ADJECTIVES[t]], dtype=pl.Utf8)
    n_brands = len(vocab.BRANDS[names[0]])
    n_adj = len(vocab.ADJECTIVES[names[0]])
    brand_s = brand_flat.gather(top * n_brands + brand)
    adj_s = adj_flat.gather(top * n_adj + adj)

    noun_flat = pl.Series([w for lf in leaves for w in lf.nouns], dtype=pl.Utf8)
    noun_count = np.array([len(lf.nouns) for lf in leaves])
    noun_off = np.concatenate([[0], np.cumsum(noun_count)[:-1]])
    noun_s = noun_flat.gather(noun_off[leaf_of] + (noun_u * noun_count[leaf_of]).astype(np.int64))
    path_s = pl.Series([lf.path for lf in leaves], dtype=pl.Utf8).gather(leaf_of)
    leaf_s = pl.Series([lf.name for lf in leaves], dtype=pl.Utf8).gather(leaf_of)

    feat1, feat2 = _pick(rng, vocab.FEATURES, top, distinct=2)
    (benefit,) = _pick(rng, vocab.BENEFITS, top)
    (use,) = _pick(rng, vocab.USES, top)
    has_benefit = pl.Series(rng.random(n) < 0.7)
    has_use = pl.Series(rng.random(n) < 0.5)
    df = pl.DataFrame(
        {"brand": brand_s, "adj": adj_s, "noun": noun_s, "leaf": leaf_s, "f1": feat1, "f2": feat2,
         "benefit": benefit, "use": use, "hb": has_benefit, "hu": has_use}
    )
    c = pl.col
    # Sentence 1 always names the product; 2 and 3 are optional and category-specific.
    desc = pl.concat_str(
        [
            c.adj, pl.lit(" "), c.noun.str.to_lowercase(), pl.lit(" from "), c.brand,
            pl.lit(" with "), c.f1, pl.lit(" and "), c.f2, pl.lit("."),
            pl.when(c.hb).then(pl.concat_str([pl.lit(" "), c.benefit, pl.lit(".")])).otherwise(pl.lit("")),
            pl.when(c.hu).then(
                pl.concat_str([pl.lit(" A favourite in our "), c.leaf.str.to_lowercase(),
                               pl.lit(" range, perfect for "), c.use, pl.lit(".")])
            ).otherwise(pl.lit("")),
        ]
    )
    noun_l = c.noun.str.to_lowercase()
    out = df.select(
        description=desc,
        q0=noun_l,
        q1=pl.concat_str([c.adj.str.to_lowercase(), pl.lit(" "), noun_l]),
        q2=pl.concat_str([c.brand.str.to_lowercase(), pl.lit(" "), noun_l]),
        q3=c.leaf.str.to_lowercase(),
    )
    queries = pl.concat([out[f"q{k}"] for k in range(N_QUERY_PATTERNS)]).rename("query")
    return {"brand": brand_s, "noun": noun_s, "adjective": adj_s, "category": path_s,
            "description": out["description"], "queries": queries}


def _attributes(rng: np.random.Generator, top: np.ndarray) -> tuple[pl.Series, pl.Series]:
    """JSON attribute object per item and the title variant (value of the first attribute)."""
    names = vocab.TOP_CATEGORIES
    n = len(top)
    parts: list[pl.Series] = []
    variant = None
    max_slots = max(len(vocab.ATTRIBUTES[t]) for t in names)
    for slot in range(max_slots):
        values = [vocab.ATTRIBUTES[t][slot][1] if slot < len(vocab.ATTRIBUTES[t]) else ("",) for t in names]
        keys = [vocab.ATTRIBUTES[t][slot][0] if slot < len(vocab.ATTRIBUTES[t]) else "" for t in names]
        sizes = np.array([len(v) for v in values])
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        flat = pl.Series([x for v in values for x in v], dtype=pl.Utf8)
        val = flat.gather(offsets[top] + (rng.random(n) * sizes[top]).astype(np.int64))
        key = pl.Series(keys, dtype=pl.Utf8).gather(top)
        sep = "{" if slot == 0 else ","
        frag = pl.select(
            pl.when(pl.lit(key) != "")
            .then(pl.concat_str([pl.lit(sep + '"'), pl.lit(key), pl.lit('":"'), pl.lit(val), pl.lit('"')]))
            .otherwise(pl.lit(""))
        ).to_series()
        parts.append(frag)
        if slot == 0:
            variant = val
    attrs = pl.select(pl.concat_str([pl.lit(p) for p in parts] + [pl.lit("}")])).to_series()
    assert variant is not None
    return attrs.rename("attributes"), variant
