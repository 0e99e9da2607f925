"""Shopping behaviour: browsing funnels, ads, repeat purchases and ratings (vectorised).

Everything is driven by the latent :class:`~shopmind.synth.population.Profiles`, so
tastes, brand affinity and price sensitivity are what a model can learn back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shopmind.synth.catalog import QUERY_PATTERN_P, Catalog
from shopmind.synth.population import Profiles
from shopmind.synth.sessions import (
    AD_CLICK, AD_IMPRESSION, CART, CLICK, PURCHASE, RATING, REMOVE, SEARCH, VIEW, EventParts, SessionTable, Window,
)
from shopmind.synth.util import US_PER_DAY, US_PER_HOUR, categorical, first_occurrence, offsets, within_group_index

# Funnel parameters (tuned so that view -> purchase conversion lands at a few percent).
KIND_P = np.array([0.45, 0.35, 0.20])  # browse, search, ad-entry sessions
BROWSE, SEARCH_SESSION, AD_SESSION = 0, 1, 2
VIEW_STOP_P = 0.27  # views per session ~ geometric: mean ~3.7
MAX_VIEWS = 25
CART_BASE = 0.035
BRAND_BOOST = 0.6  # log-odds bump for the visitor's favourite brand
REMOVE_P = 0.15
BUY_P = 0.36  # sessions with a non-empty cart that check out
DRIFT_MAX = 0.8  # weight of drift_to in the taste at the end of the window
EXPLORE_P = 0.15  # a view outside the session's category, following taste
RANDOM_P = 0.07  # a view of a random popular category
REBUY_P = 0.6
RATING_P = 0.12
AD_INTENT = 2.5  # clicking a sponsored item signals intent: cart odds multiplier


@dataclass
class Ads:
    """Ad inventory: each ad promotes one item and belongs to a campaign."""

    item: np.ndarray
    campaign: np.ndarray
    by_top: np.ndarray  # ad indices grouped by their item's top category
    top_start: np.ndarray
    top_count: np.ndarray


def build_ads(rng: np.random.Generator, catalog: Catalog) -> Ads:
    """Half of the ads promote popular items, half push random (long-tail) items."""
    n_ads = int(np.clip(catalog.n_items // 15, 40, 5000))
    tops = rng.choice(len(catalog.top_share), size=n_ads, p=catalog.top_share)
    popular = catalog.sample(rng, tops)
    random_items = rng.integers(0, catalog.n_items, n_ads)
    item = np.where(rng.random(n_ads) < 0.5, popular, random_items)
    campaign = rng.integers(0, max(5, n_ads // 8), n_ads)
    ad_top = catalog.top[item]
    by_top = np.argsort(ad_top, kind="stable")
    count = np.bincount(ad_top, minlength=len(catalog.top_share))
    return Ads(item=item, campaign=campaign, by_top=by_top, top_start=offsets(count), top_count=count)


def taste_at(prof: Profiles, rows: np.ndarray, t: np.ndarray, win: Window) -> np.ndarray:
    """Taste vectors of visitors ``rows`` at times ``t``: drifters move towards drift_to."""
    w = DRIFT_MAX * np.clip((t - win.mid) / max(win.end - win.mid, 1), 0.0, 1.0)
    drift = prof.drift_to[rows]
    w = np.where(drift >= 0, w, 0.0)
    taste = prof.taste[rows].astype(np.float64) * (1.0 - w)[:, None]
    has = np.flatnonzero(drift >= 0)
    taste[has, drift[has]] += w[has]
    return taste


def _choose_items(
    rng: np.random.Generator, catalog: Catalog, prof: Profiles, rows: np.ndarray, tops: np.ndarray
) -> np.ndarray:
    """Pick items in categories ``tops``: popularity proposes, brand and price taste decide."""
    k = 3
    cand = catalog.sample(rng, np.repeat(tops, k)).reshape(-1, k)
    fav = prof.fav_brand[rows, tops]
    score = BRAND_BOOST * (catalog.brand[cand] == fav[:, None]) - prof.price_sens[rows, None] * catalog.rel_price[cand]
    score += rng.gumbel(size=score.shape)
    return cand[np.arange(len(cand)), score.argmax(axis=1)]


def cart_probability(
    catalog: Catalog, prof: Profiles, rows: np.ndarray, items: np.ndarray, taste: np.ndarray
) -> np.ndarray:
    """Chance that a viewed item goes into the cart: taste for its category, brand, price."""
    top = catalog.top[items]
    liking = taste[np.arange(len(items)), top]
    brand_match = catalog.brand[items] == prof.fav_brand[rows, top]
    odds = np.exp(BRAND_BOOST * brand_match - prof.price_sens[rows] * catalog.rel_price[items])
    return np.clip(CART_BASE * (0.35 + 3.0 * liking) * odds, 0.0, 0.75)


def simulate_browsing(
    rng: np.random.Generator,
    parts: EventParts,
    sessions: SessionTable,
    sid: np.ndarray,
    rows: np.ndarray,
    prof: Profiles,
    catalog: Catalog,
    ads: Ads,
    win: Window,
) -> None:
    """Browse/search/ad sessions: views with abandonment at every funnel step."""
    n_s = len(sid)
    taste = taste_at(prof, rows, sessions["start"][sid], win)
    s_cat = categorical(rng, taste)
    kind = rng.choice(3, size=n_s, p=KIND_P)

    n_views = np.minimum(rng.geometric(VIEW_STOP_P, n_s), MAX_VIEWS)
    vs = np.repeat(np.arange(n_s), n_views)  # session (local index) of each view
    vk = within_group_index(n_views)
    v_cat = s_cat[vs].copy()
    u = rng.random(len(vs))
    explore = u < EXPLORE_P
    v_cat[explore] = categorical(rng, taste[vs[explore]])
    rand = u > 1.0 - RANDOM_P
    v_cat[rand] = rng.choice(len(catalog.top_share), size=int(rand.sum()), p=catalog.top_share)
    v_item = _choose_items(rng, catalog, prof, rows[vs], v_cat)
    first_view = offsets(n_views)

    ad_clicked, click_pos = _ads(rng, parts, sid, kind, taste, s_cat, catalog, ads)
    clicked_s = np.flatnonzero(ad_clicked >= 0)
    v_item[first_view[clicked_s]] = ads.item[ad_clicked[clicked_s]]

    # Search sessions: a query built from words of the item the visitor then looks at.
    srch = np.flatnonzero(kind == SEARCH_SESSION)
    pattern = rng.choice(len(QUERY_PATTERN_P), size=len(srch), p=QUERY_PATTERN_P)
    parts.add(sid[srch], 0.5, SEARCH, query=pattern * catalog.n_items + v_item[first_view[srch]])

    # Views reached through a click: every search result; some recommendations otherwise.
    via_ad = np.zeros(len(vs), dtype=bool)
    via_ad[first_view[clicked_s]] = True
    click = ((kind[vs] == SEARCH_SESSION) | (rng.random(len(vs)) < 0.25)) & ~via_ad
    parts.add(sid[vs[click]], 1.0 + vk[click] - 0.3, CLICK, item=v_item[click])
    parts.add(sid[vs], 1.0 + vk, VIEW, item=v_item)

    _cart_and_checkout(rng, parts, sid, rows, prof, catalog, taste, vs, vk, v_item, n_views, via_ad,
                       ad_clicked, click_pos, sessions["start"][sid])


def _ads(
    rng: np.random.Generator,
    parts: EventParts,
    sid: np.ndarray,
    kind: np.ndarray,
    taste: np.ndarray,
    s_cat: np.ndarray,
    catalog: Catalog,
    ads: Ads,
) -> tuple[np.ndarray, np.ndarray]:
    """Ad impressions at the start of ad sessions.

    Returns per session the clicked ad (-1: none) and the click's position in the session.

    Half the impressions are targeted at the session's category; click-through rises with
    the visitor's taste for the ad item's category.
    """
    ad_s = np.flatnonzero(kind == AD_SESSION)
    n_imp = 1 + rng.binomial(2, 0.35, len(ad_s))
    imp_s = np.repeat(ad_s, n_imp)
    j = within_group_index(n_imp)
    ad = rng.integers(0, len(ads.item), len(imp_s))
    target_top = s_cat[imp_s]
    targeted = (rng.random(len(imp_s)) < 0.5) & (ads.top_count[target_top] > 0)
    pick = ads.top_start[target_top] + (rng.random(len(imp_s)) * ads.top_count[target_top]).astype(np.int64)
    ad[targeted] = ads.by_top[pick[targeted]]
    liking = taste[imp_s, catalog.top[ads.item[ad]]]
    p_click = 0.008 + 0.09 * liking
    hit = rng.random(len(imp_s)) < p_click
    hit &= first_occurrence(np.where(hit, imp_s, -1 - np.arange(len(imp_s))))  # one click per session
    parts.add(sid[imp_s], 0.01 * j, AD_IMPRESSION, item=ads.item[ad], ad=ad)
    clicked = np.full(len(sid), -1, dtype=np.int64)
    clicked[imp_s[hit]] = ad[hit]
    pos = np.zeros(len(sid))
    pos[imp_s[hit]] = 0.01 * j[hit] + 0.005  # right after its impression
    return clicked, pos


def _cart_and_checkout(
    rng: np.random.Generator,
    parts: EventParts,
    sid: np.ndarray,
    rows: np.ndarray,
    prof: Profiles,
    catalog: Catalog,
    taste: np.ndarray,
    vs: np.ndarray,
    vk: np.ndarray,
    v_item: np.ndarray,
    n_views: np.ndarray,
    via_ad: np.ndarray,
    ad_clicked: np.ndarray,
    click_pos: np.ndarray,
    start: np.ndarray,
) -> None:
    """Add-to-cart, occasional removal, checkout; labels ad clicks with conversion."""
    first_seen = first_occurrence(vs * catalog.n_items + v_item)
    p_cart = cart_probability(catalog, prof, rows[vs], v_item, taste[vs]) * np.where(via_ad, AD_INTENT, 1.0)
    cart = first_seen & (rng.random(len(vs)) < p_cart)
    c_idx = np.flatnonzero(cart)
    c_item = v_item[c_idx]
    n_cart = len(c_idx)
    qty = np.where(catalog.consumable[c_item], 1 + rng.binomial(2, 0.25, n_cart), 1 + (rng.random(n_cart) < 0.04))
    price = catalog.price[c_item]
    c_s = vs[c_idx]
    parts.add(sid[c_s], 1.0 + vk[c_idx] + 0.3, CART, item=c_item, price=price, quantity=qty)

    removed = rng.random(len(c_idx)) < REMOVE_P
    later = vk[c_idx] + (rng.random(len(c_idx)) * (n_views[c_s] - vk[c_idx])).astype(np.int64)
    r = np.flatnonzero(removed)
    parts.add(sid[c_s[r]], 1.0 + later[r] + 0.6, REMOVE, item=c_item[r], price=price[r], quantity=qty[r])

    kept = ~removed
    has_cart = np.bincount(c_s[kept], minlength=len(sid)) > 0
    buys = has_cart & (rng.random(len(sid)) < BUY_P)
    b = np.flatnonzero(kept & buys[c_s])
    b = b[_not_owned_yet(catalog, rows[c_s[b]], c_item[b], start[c_s[b]])]
    parts.add(sid[c_s[b]], n_views[c_s[b]] + 2.0, PURCHASE, item=c_item[b], price=price[b], quantity=qty[b])

    # Ground truth for ads: did the clicked item get bought in the same session?
    clicked_s = np.flatnonzero(ad_clicked >= 0)
    bought = np.isin(clicked_s * catalog.n_items + v_item[offsets(n_views)[clicked_s]],
                     c_s[b] * catalog.n_items + c_item[b])
    parts.add(sid[clicked_s], click_pos[clicked_s], AD_CLICK, item=v_item[offsets(n_views)[clicked_s]],
              ad=ad_clicked[clicked_s], converted=bought.astype(np.int64))


def _not_owned_yet(catalog: Catalog, rows: np.ndarray, items: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Mask of purchases to keep: nobody buys the same durable item twice (consumables: fine)."""
    order = np.argsort(t, kind="stable")
    key = np.where(catalog.consumable[items], -1 - np.arange(len(items)), rows * catalog.n_items + items)
    keep = np.empty(len(items), dtype=bool)
    keep[order] = first_occurrence(key[order])
    return keep


def simulate_reorders(
    rng: np.random.Generator,
    parts: EventParts,
    sessions: SessionTable,
    purchases: dict[str, np.ndarray],
    user_device: np.ndarray,
    user_country: np.ndarray,
    catalog: Catalog,
    win: Window,
) -> int:
    """Rebuy consumables after their refill interval. Returns the number of new sessions.

    ``purchases`` holds assembled purchase events (user row, item, quantity, ts).
    """
    cons = np.flatnonzero(catalog.consumable[purchases["item"]] & (rng.random(len(purchases["item"])) < REBUY_P))
    item = purchases["item"][cons]
    user = purchases["user"][cons]
    days = catalog.refill_days[item] * np.sqrt(purchases["quantity"][cons]) * rng.lognormal(0.0, 0.3, len(cons))
    start = purchases["ts"][cons] + (days * US_PER_DAY).astype(np.int64) + rng.integers(0, US_PER_HOUR * 6, len(cons))
    ok = start < win.stop
    item, user, start = item[ok], user[ok], start[ok]
    n = len(item)
    sid = sessions.add(n, user=user, start=start, device=user_device[user], country=user_country[user])
    searched = rng.random(n) < 0.3
    parts.add(sid[searched], 0.5, SEARCH, query=item[searched])  # pattern 0: the product noun
    parts.add(sid, 1.0, VIEW, item=item)
    qty = 1 + rng.binomial(2, 0.25, n)
    parts.add(sid, 1.3, CART, item=item, price=catalog.price[item], quantity=qty)
    buy = rng.random(n) < 0.85
    parts.add(sid[buy], 3.0, PURCHASE, item=item[buy], price=catalog.price[item[buy]], quantity=qty[buy])
    return n


def simulate_ratings(
    rng: np.random.Generator,
    parts: EventParts,
    sessions: SessionTable,
    purchases: dict[str, np.ndarray],
    prof: Profiles,
    user_device: np.ndarray,
    user_country: np.ndarray,
    catalog: Catalog,
    win: Window,
) -> None:
    """Some purchases get a 1-5 star rating a few days later, higher when the item fits."""
    sel = np.flatnonzero(rng.random(len(purchases["item"])) < RATING_P)
    start = purchases["ts"][sel] + (rng.uniform(1.0, 12.0, len(sel)) * US_PER_DAY).astype(np.int64)
    sel, start = sel[start < win.stop], start[start < win.stop]
    item, user = purchases["item"][sel], purchases["user"][sel]
    taste = taste_at(prof, user, start, win)
    top = catalog.top[item]
    fit = taste[np.arange(len(sel)), top]
    brand_match = catalog.brand[item] == prof.fav_brand[user, top]
    pricey = np.maximum(catalog.rel_price[item], 0.0) * prof.price_sens[user]
    score = 3.7 + 0.6 * brand_match + 1.5 * (fit - 0.25) - 0.5 * pricey + rng.normal(0.0, 0.8, len(sel))
    sid = sessions.add(len(sel), user=user, start=start, device=user_device[user], country=user_country[user])
    parts.add(sid, 1.0, RATING, item=item, rating=np.clip(np.round(score), 1.0, 5.0))
