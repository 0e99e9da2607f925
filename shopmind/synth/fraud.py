"""Labelled fraud: account takeover, card testing, promotion abuse and reshipping.

Fraud is injected per chunk after the legitimate behaviour is known, so that the
fraudulent share of orders matches ``fraud_share``. Every fraudulent order comes with a
short session (view -> add_to_cart -> purchase) like any other order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shopmind.synth import vocab
from shopmind.synth.catalog import Catalog
from shopmind.synth.population import ALL_COUNTRIES, Users
from shopmind.synth.sessions import CART, PURCHASE, VIEW, EventParts, SessionTable, Window
from shopmind.synth.util import US_PER_DAY, US_PER_HOUR, US_PER_SECOND, hex_tokens, within_group_index

ATO, CARD_TESTING, PROMO, RESHIP = range(4)  # indices into sessions.FRAUD_PATTERNS
PATTERN_P = np.array([0.30, 0.15, 0.30, 0.25])  # share of fraudulent orders per pattern
MIN_RING, MAX_RING = 3, 10  # accounts per promotion-abuse ring
DESKTOP, MOBILE = vocab.DEVICES.index("desktop"), vocab.DEVICES.index("mobile")
FRAUD_IP = np.array([ALL_COUNTRIES.index(c) for c in vocab.FRAUD_IP_COUNTRIES])
DROP = np.array([ALL_COUNTRIES.index(c) for c in vocab.DROP_COUNTRIES])


@dataclass
class TokenBank:
    """Device ids and cards that do not belong to any user's usual set."""

    rng: np.random.Generator
    devices: list[np.ndarray] = field(default_factory=list)
    cards: list[np.ndarray] = field(default_factory=list)
    n_devices: int = 0
    n_cards: int = 0

    def new_devices(self, n: int) -> np.ndarray:
        self.devices.append(hex_tokens(self.rng, n))
        self.n_devices += n
        return np.arange(self.n_devices - n, self.n_devices)

    def new_cards(self, n: int) -> np.ndarray:
        self.cards.append(hex_tokens(self.rng, n))
        self.n_cards += n
        return np.arange(self.n_cards - n, self.n_cards)

    def device_array(self) -> np.ndarray:
        return np.concatenate(self.devices) if self.devices else np.zeros(0, dtype="S12")

    def card_array(self) -> np.ndarray:
        return np.concatenate(self.cards) if self.cards else np.zeros(0, dtype="S12")


@dataclass
class ExtraPayments:
    """Payment attempts that are not the successful payment of an order."""

    user: list[np.ndarray] = field(default_factory=list)
    ts: list[np.ndarray] = field(default_factory=list)
    amount: list[np.ndarray] = field(default_factory=list)
    card: list[np.ndarray] = field(default_factory=list)  # row into TokenBank cards
    # The order's session, or -1. For linked attempts ``ts`` is relative to the order time.
    session: list[np.ndarray] = field(default_factory=list)
    declined: list[np.ndarray] = field(default_factory=list)
    pattern: list[np.ndarray] = field(default_factory=list)

    def add(self, **cols: np.ndarray | int) -> None:
        n = len(np.asarray(cols["ts"]))
        for name, v in cols.items():
            getattr(self, name).append(np.broadcast_to(np.asarray(v), (n,)))

    def arrays(self) -> dict[str, np.ndarray]:
        names = ("user", "ts", "amount", "card", "session", "declined", "pattern")
        return {k: np.concatenate(getattr(self, k)) if getattr(self, k) else np.zeros(0) for k in names}


def fraud_accounts_needed(n_users: int, days: int, fraud_share: float) -> int:
    """Users to hold back from normal activity as fraudster accounts (generous estimate)."""
    if fraud_share <= 0:
        return 0
    return int(np.ceil(1.2 * fraud_share * n_users * max(days, 30) / 60)) + 12


def plan(rng: np.random.Generator, n_legit_orders: int, fraud_share: float) -> np.ndarray:
    """Fraudulent orders per pattern so that they make up ``fraud_share`` of all orders."""
    if fraud_share <= 0 or n_legit_orders == 0:
        return np.zeros(4, dtype=np.int64)
    # Every pattern at least once; promotion abuse needs a ring of several accounts.
    minimum = np.array([1, 1, MIN_RING, 1])
    total = max(int(minimum.sum()), int(round(n_legit_orders * fraud_share / (1.0 - fraud_share))))
    return minimum + rng.multinomial(total - minimum.sum(), PATTERN_P)


def inject(
    rng: np.random.Generator,
    counts: np.ndarray,
    parts: EventParts,
    sessions: SessionTable,
    users: Users,
    pool: np.ndarray,
    victims: np.ndarray,
    catalog: Catalog,
    bank: TokenBank,
    extra: ExtraPayments,
    win: Window,
) -> None:
    """Create the fraudulent sessions/orders; marks fraudster accounts in ``users``."""
    n_ato, n_ct, n_promo, n_resh = (int(c) for c in counts)
    need_ct, need_resh = -(-n_ct // 2), -(-n_resh // 3)
    # If the held-back pool is too small, the shortfall becomes account takeovers.
    n_promo_ok = min(n_promo, max(len(pool) - need_ct - need_resh, 0))
    n_ato += n_promo - n_promo_ok
    acc = iter(np.split(pool, np.cumsum([need_ct, need_resh, n_promo_ok]))[:3])
    ct_acc, resh_acc, promo_acc = next(acc), next(acc), next(acc)
    _account_takeover(rng, n_ato, parts, sessions, users, victims, catalog, bank, win)
    _card_testing(rng, n_ct, ct_acc, parts, sessions, users, catalog, bank, extra, win)
    _reshipping(rng, n_resh, resh_acc, parts, sessions, users, catalog, bank, extra, win)
    _promotion_abuse(rng, promo_acc, parts, sessions, users, catalog, bank, win)
    users.is_fraudster[np.concatenate([ct_acc, resh_acc, promo_acc])] = True


def _expensive(catalog: Catalog, tops: tuple[str, ...], quantile: float) -> np.ndarray:
    """Items of the given top categories priced above the quantile (resellable goods)."""
    idx = [vocab.TOP_CATEGORIES.index(t) for t in tops]
    members = np.flatnonzero(np.isin(catalog.top, idx))
    return members[catalog.price[members] >= np.quantile(catalog.price[members], quantile)]


def _basket(
    rng: np.random.Generator,
    parts: EventParts,
    sid: np.ndarray,
    pool: np.ndarray,
    max_items: int,
    catalog: Catalog,
) -> np.ndarray:
    """Quick scripted sessions: view each item, add it to the cart, buy everything.

    Returns the basket value per session.
    """
    n_items = rng.integers(1, max_items + 1, len(sid))
    s = np.repeat(sid, n_items)
    k = within_group_index(n_items)
    item = pool[rng.integers(0, len(pool), len(s))]
    price = catalog.price[item]
    parts.add(s, 1.0 + k, VIEW, item=item)
    parts.add(s, 1.3 + k, CART, item=item, price=price, quantity=1)
    parts.add(s, 1.0 + max_items + 1.0, PURCHASE, item=item, price=price, quantity=1)
    return np.bincount(np.repeat(np.arange(len(sid)), n_items), weights=price, minlength=len(sid))


def _times(rng: np.random.Generator, n: int, lo: int, hi: int) -> np.ndarray:
    return lo + (rng.random(n) * max(hi - lo, 1)).astype(np.int64)


def _other_country(rng: np.random.Generator, choices: np.ndarray, avoid: np.ndarray) -> np.ndarray:
    """A country from ``choices`` (distinct values) that differs from ``avoid`` element-wise."""
    idx = rng.integers(0, len(choices), len(avoid))
    pick = choices[idx]
    clash = pick == avoid
    pick[clash] = choices[(idx[clash] + 1) % len(choices)]
    return pick


def _signed_up_before(rng: np.random.Generator, users: Users, rows: np.ndarray, t: np.ndarray) -> None:
    """Fraudster accounts exist shortly before they first strike."""
    lead = (rng.uniform(0.5, 48.0, len(rows)) * US_PER_HOUR).astype(np.int64)
    np.minimum.at(users.signup_us, rows, t - lead)


def _account_takeover(rng, n, parts, sessions, users, victims, catalog, bank, win) -> None:
    """A legit customer's account suddenly buys high-end electronics from a new device,
    a foreign IP and to a foreign address; the stored card is used half of the time."""
    if n == 0:
        return
    victim = victims[rng.integers(0, len(victims), n)] if len(victims) else rng.integers(0, len(users), n)
    home = users.profiles.country[victim]
    own_card = rng.random(n) < 0.5
    card = np.where(own_card, -1, bank.new_cards(n))
    t = _times(rng, n, win.start + (win.end - win.start) // 4, win.stop)
    t = np.minimum(np.maximum(t, users.signup_us[victim] + US_PER_DAY), win.stop)  # an established account
    sid = sessions.add(
        n, user=victim, start=t,
        device=DESKTOP, country=_other_country(rng, FRAUD_IP, home), fraud=ATO,
        ship_country=_other_country(rng, DROP, home), device_id=bank.new_devices(n), instrument=card,
    )
    _basket(rng, parts, sid, _expensive(catalog, ("Electronics",), 0.8), 2, catalog)


def _card_testing(rng, n, accounts, parts, sessions, users, catalog, bank, extra, win) -> None:
    """Bursts of tiny payments on many fresh cards within minutes, most declined; one
    card that works is then used for a small real order."""
    if n == 0:
        return
    user = accounts[np.arange(n) // 2 % max(len(accounts), 1)]
    t = _times(rng, n, win.start + US_PER_DAY, win.stop)
    _signed_up_before(rng, users, user, t)
    cheap = np.flatnonzero(catalog.price <= np.quantile(catalog.price, 0.05))
    sid = sessions.add(n, user=user, start=t, device=DESKTOP, country=FRAUD_IP[rng.integers(0, len(FRAUD_IP), n)],
                       fraud=CARD_TESTING, device_id=bank.new_devices(n), instrument=bank.new_cards(n))
    _basket(rng, parts, sid, cheap, 1, catalog)
    tries = rng.integers(8, 26, n)
    b = np.repeat(np.arange(n), tries)
    offset = (rng.uniform(-300, 0, len(b)) * US_PER_SECOND).astype(np.int64)  # the minutes before the order
    extra.add(user=user[b], ts=t[b] + offset, amount=np.round(rng.uniform(0.5, 3.0, len(b)), 2),
              card=bank.new_cards(len(b)), session=-1, declined=rng.random(len(b)) < 0.75, pattern=CARD_TESTING)


def _reshipping(rng, n, accounts, parts, sessions, users, catalog, bank, extra, win) -> None:
    """Resellable high-value goods on stolen cards, shipped abroad to a few drop addresses
    from an IP in yet another country; each account keeps one device."""
    if n == 0:
        return
    k = max(len(accounts), 1)
    owner = np.arange(n) % k
    user = accounts[owner] if len(accounts) else rng.integers(0, len(users), n)
    drops = rng.choice(DROP, size=min(2, len(DROP)), replace=False)  # the ring's few drop points
    ship = drops[rng.integers(0, len(drops), n)]
    device = bank.new_devices(k)[owner]
    t = _times(rng, n, win.start + US_PER_DAY, win.stop)
    _signed_up_before(rng, users, user, t)
    sid = sessions.add(
        n, user=user, start=t, device=DESKTOP,
        country=_other_country(rng, FRAUD_IP, ship), fraud=RESHIP, ship_country=ship,
        device_id=device, instrument=bank.new_cards(n),
    )
    value = _basket(rng, parts, sid, _expensive(catalog, ("Electronics", "Fashion"), 0.75), 3, catalog)
    f = np.flatnonzero(rng.random(n) < 0.4)  # stolen cards that did not work first
    # Linked to the order: ts is relative to the order's time (resolved in commerce).
    extra.add(user=user[f], ts=-(rng.uniform(20, 90, len(f)) * US_PER_SECOND).astype(np.int64),
              amount=np.round(value[f], 2), card=bank.new_cards(len(f)), session=sid[f], declined=True,
              pattern=RESHIP)


def _ring_sizes(rng: np.random.Generator, n: int) -> list[int]:
    """Split ``n`` accounts into rings of MIN_RING..MAX_RING (one ring if n is small)."""
    sizes: list[int] = []
    while n > 0:
        size = min(int(rng.integers(MIN_RING, MAX_RING + 1)), n)
        size = n if n - size < MIN_RING else size  # no ring smaller than MIN_RING
        sizes.append(size)
        n -= size
    return sizes


def _promotion_abuse(rng, accounts, parts, sessions, users, catalog, bank, win) -> None:
    """Rings of brand-new accounts at one address and one device, each cashing in the
    first-order discount on a small order."""
    n = len(accounts)
    if n == 0:
        return
    sizes = _ring_sizes(rng, n)
    n_rings = len(sizes)
    ring = np.repeat(np.arange(n_rings), sizes)
    ring_t = _times(rng, n_rings, win.start, win.stop - 4 * US_PER_DAY)
    signup = ring_t[ring] + (rng.uniform(0, 72, n) * US_PER_HOUR).astype(np.int64)
    users.signup_us[accounts] = signup
    leader = accounts[np.searchsorted(ring, np.arange(n_rings))]
    address = users.frame["address"].gather(leader[ring])
    users.frame = users.frame.with_columns(address=users.frame["address"].scatter(accounts, address))
    users.profiles.country[accounts] = users.profiles.country[leader[ring]]
    device = bank.new_devices(n_rings)[ring]
    cards = bank.new_cards(2 * n_rings).reshape(n_rings, 2)[ring, rng.integers(0, 2, n)]
    sid = sessions.add(
        n, user=accounts, start=signup + (rng.uniform(0.2, 6, n) * US_PER_HOUR).astype(np.int64),
        device=MOBILE, country=users.profiles.country[accounts], fraud=PROMO, device_id=device,
        instrument=cards, discount=np.round(rng.uniform(0.3, 0.5, n), 2),
    )
    # Just enough to qualify for the voucher: one modest item.
    modest = np.flatnonzero((catalog.price > 8) & (catalog.price < 35))
    _basket(rng, parts, sid, modest if len(modest) else np.arange(catalog.n_items), 1, catalog)
