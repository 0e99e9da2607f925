"""Synthetic visitors: latent tastes (for everyone) and identities (for registered users)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import numpy as np
import polars as pl

from shopmind.synth import vocab
from shopmind.synth.util import US_PER_DAY, categorical, hex_tokens, ids, scramble, to_datetime

N_TOP = len(vocab.TOP_CATEGORIES)
N_BRANDS = len(vocab.BRANDS[vocab.TOP_CATEGORIES[0]])
# Countries that can appear anywhere in the data: customers' plus fraud-related ones.
ALL_COUNTRIES: tuple[str, ...] = tuple(
    dict.fromkeys(vocab.COUNTRIES + vocab.FRAUD_IP_COUNTRIES + vocab.DROP_COUNTRIES)
)
METHOD_PREFIX = ("card_", "paypal_", "klarna_")
TOP_P = np.array([vocab.TOP_WEIGHTS[t] for t in vocab.TOP_CATEGORIES])
TOP_P = TOP_P / TOP_P.sum()

DRIFT_SHARE = 0.2  # share of visitors whose taste drifts in the second half
TASTE_NOISE = 0.12  # weight of the diffuse (non-core) part of a taste vector


@dataclass
class Profiles:
    """Latent behaviour of visitors; row i describes visitor i."""

    taste: np.ndarray  # (n, N_TOP) float32, rows sum to 1
    fav_brand: np.ndarray  # (n, N_TOP) favourite brand index within each top category
    price_sens: np.ndarray  # (n,) elasticity: purchase odds scale with (price/median)^-sens
    drift_to: np.ndarray  # (n,) top category the taste drifts to, -1 for none
    device: np.ndarray  # (n,) preferred device index into vocab.DEVICES
    country: np.ndarray  # (n,) index into ALL_COUNTRIES

    def __len__(self) -> int:
        return len(self.price_sens)


@dataclass
class Users:
    """Registered users of one chunk: identity frame, latent profile and payment/device data."""

    idx: np.ndarray  # global 0-based user index
    profiles: Profiles
    activity: np.ndarray  # expected sessions per day
    signup_us: np.ndarray  # int64 epoch microseconds
    frame: pl.DataFrame  # email, phone, address, age band, consents (no ids/timestamps yet)
    device_ids: np.ndarray  # (n, 2) S12 hex tokens; column 1 only used if n_devices == 2
    n_devices: np.ndarray
    instruments: np.ndarray  # (n, 2) S12 hex tokens
    instrument_method: np.ndarray  # (n, 2) index into vocab.PAYMENT_METHODS
    n_instruments: np.ndarray
    is_fraudster: np.ndarray  # bool, set by the fraud module

    def __len__(self) -> int:
        return len(self.idx)

    def to_frame(self) -> pl.DataFrame:
        """The public ``users`` rows of this chunk."""
        return pl.DataFrame(
            {
                "user_id": user_ids(self.idx),
                "email": self.frame["email"],
                "phone": self.frame["phone"],
                "address": self.frame["address"],
                "country": pl.Series(ALL_COUNTRIES, dtype=pl.Utf8).gather(self.profiles.country),
                "age_band": self.frame["age_band"],
                "consent_personalization": self.frame["consent_personalization"],
                "consent_advertising": self.frame["consent_advertising"],
                "consent_analytics": self.frame["consent_analytics"],
                "signup_ts": to_datetime(self.signup_us),
            }
        )

    def truth_frame(self) -> pl.DataFrame:
        """Ground truth rows of this chunk (never sent to the service)."""
        tops = pl.Series(vocab.TOP_CATEGORIES, dtype=pl.Utf8)
        p = self.profiles
        drift = np.where(p.drift_to >= 0, p.drift_to, 0)
        return pl.DataFrame(
            {
                "user_id": user_ids(self.idx),
                "favourite_category": tops.gather(p.taste.argmax(axis=1)),
                "taste": pl.Series(p.taste.astype(np.float32)).cast(pl.List(pl.Float32)),
                "drift_to": pl.select(pl.when(pl.lit(p.drift_to >= 0)).then(pl.lit(tops.gather(drift)))).to_series(),
                "is_fraudster": pl.Series(self.is_fraudster, dtype=pl.Boolean),
            }
        )


def user_ids(idx: np.ndarray) -> pl.Series:
    """'u0000001'-style ids for 0-based global user indices."""
    return ids("u", np.asarray(idx) + 1, 7)


def sample_profiles(rng: np.random.Generator, n: int, home_only: bool = False) -> Profiles:
    """Latent tastes: mass concentrated on 1-3 core categories, plus a little everywhere."""
    k = rng.choice([1, 2, 3], size=n, p=[0.35, 0.40, 0.25])
    # Core categories = top-k of (log popularity + Gumbel noise): weighted sampling without replacement.
    keys = np.log(TOP_P)[None, :] + rng.gumbel(size=(n, N_TOP))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    core = rng.gamma(2.0, size=(n, N_TOP)) * (rank < k[:, None])
    core /= core.sum(axis=1, keepdims=True)
    diffuse = rng.dirichlet(np.ones(N_TOP), size=n)
    taste = ((1 - TASTE_NOISE) * core + TASTE_NOISE * diffuse).astype(np.float32)

    drifting = rng.random(n) < DRIFT_SHARE
    # Drift towards a popular category outside the visitor's core interests.
    target_w = np.where(rank < k[:, None], 0.0, TOP_P[None, :])
    drift_to = np.where(drifting, categorical(rng, target_w), -1)
    country_p = np.array(vocab.COUNTRY_WEIGHTS)
    country = rng.choice(len(country_p), size=n, p=country_p / country_p.sum())
    if home_only:
        country[:] = 0
    return Profiles(
        taste=taste,
        fav_brand=rng.integers(0, N_BRANDS, size=(n, N_TOP)),
        price_sens=np.clip(rng.lognormal(np.log(0.8), 0.5, n), 0.1, 3.0),
        drift_to=drift_to,
        device=rng.choice(len(vocab.DEVICES), size=n, p=np.array(vocab.DEVICE_WEIGHTS)),
        country=country,
    )


def sample_users(
    rng: np.random.Generator, idx: np.ndarray, n_total: int, start_us: int, days: int
) -> Users:
    """Registered users with global indices ``idx`` (``n_total`` users overall)."""
    n = len(idx)
    prof = sample_profiles(rng, n)
    activity = rng.lognormal(np.log(0.11), 1.0, n)
    activity[rng.random(n) < 0.1] *= 0.1  # dormant accounts
    # Most users signed up before the window; some join during it (and only act afterwards).
    old = rng.random(n) < 0.85
    before = start_us - (rng.random(n) * 3 * 365 * US_PER_DAY).astype(np.int64) - US_PER_DAY
    during = start_us + (rng.random(n) * 0.85 * days * US_PER_DAY).astype(np.int64)
    signup = np.where(old, before, during)
    n_instr = 1 + (rng.random(n) < 0.3)
    method = np.stack(
        [rng.choice(3, size=n, p=np.array(vocab.PAYMENT_WEIGHTS)), np.zeros(n, dtype=np.int64)], axis=1
    )  # a second instrument is always a card
    return Users(
        idx=idx,
        profiles=prof,
        activity=activity,
        signup_us=signup,
        frame=_identity_frame(rng, idx, n_total, prof.country),
        device_ids=hex_tokens(rng, (n, 2)),
        n_devices=1 + (rng.random(n) < 0.35),
        instruments=hex_tokens(rng, (n, 2)),
        instrument_method=method,
        n_instruments=n_instr,
        is_fraudster=np.zeros(n, dtype=bool),
    )


def _ascii_name(name: str) -> str:
    """Email-safe lowercase form of a name ('Müller' -> 'mueller', 'de Jong' -> 'dejong')."""
    name = name.lower().replace("ä", "ae").replace("ö", "oe").replace("ü", "ue").replace("ß", "ss")
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in name if ch.isalpha())


def _country_lists(table: dict[str, tuple[str, ...]], country: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Index into the flattened per-country lists of ``table`` (home countries only)."""
    sizes = np.array([len(table[c]) for c in vocab.COUNTRIES])
    offs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return offs[country] + (u * sizes[country]).astype(np.int64)


def _flat(table: dict[str, tuple], fn=lambda x: x) -> pl.Series:
    return pl.Series([fn(x) for c in vocab.COUNTRIES for x in table[c]], dtype=pl.Utf8)


def _identity_frame(
    rng: np.random.Generator, idx: np.ndarray, n_total: int, country: np.ndarray
) -> pl.DataFrame:
    """Names, unique emails and phones, addresses, age bands and consents."""
    n = len(idx)
    first_i = _country_lists(vocab.FIRST_NAMES, country, rng.random(n))
    last_i = _country_lists(vocab.LAST_NAMES, country, rng.random(n))
    first_a = _flat(vocab.FIRST_NAMES, _ascii_name).gather(first_i)
    last_a = _flat(vocab.LAST_NAMES, _ascii_name).gather(last_i)
    # Uniqueness by construction: the number is a bijection of the global user index,
    # and names end in letters, so two users can never produce the same local part.
    modulus = 10 ** max(4, len(str(n_total)))
    number = scramble(idx, modulus, key=1)
    style = rng.integers(0, 3, n)
    domain = pl.Series(vocab.EMAIL_DOMAINS, dtype=pl.Utf8).gather(rng.integers(0, len(vocab.EMAIL_DOMAINS), n))
    phone_num = scramble(idx, 10**7, key=2)
    code = pl.Series([vocab.PHONE_FORMATS[c][0] for c in vocab.COUNTRIES], dtype=pl.Utf8).gather(country)
    prefix_i = _country_lists({c: vocab.PHONE_FORMATS[c][1] for c in vocab.COUNTRIES}, country, rng.random(n))
    prefix = _flat({c: vocab.PHONE_FORMATS[c][1] for c in vocab.COUNTRIES}).gather(prefix_i)
    street = _flat(vocab.STREETS).gather(_country_lists(vocab.STREETS, country, rng.random(n)))
    city_i = _country_lists(vocab.CITIES, country, rng.random(n))
    postcode = pl.Series([p for c in vocab.COUNTRIES for p, _ in vocab.CITIES[c]], dtype=pl.Utf8).gather(city_i)
    city = pl.Series([t for c in vocab.COUNTRIES for _, t in vocab.CITIES[c]], dtype=pl.Utf8).gather(city_i)
    house = pl.Series(rng.integers(1, 180, n)).cast(pl.Utf8)
    df = pl.DataFrame(
        {"first": first_a, "last": last_a, "num": pl.Series(number).cast(pl.Utf8), "style": style,
         "domain": domain, "code": code, "prefix": prefix, "phone_num": pl.Series(phone_num).cast(pl.Utf8),
         "street": street, "house": house, "postcode": postcode, "city": city,
         "fr": pl.Series(country == vocab.COUNTRIES.index("FR"))}
    )
    c = pl.col
    local = (
        pl.when(c("style") == 0).then(pl.concat_str([c("first"), pl.lit("."), c("last"), c("num")]))
        .when(c("style") == 1).then(pl.concat_str([c("first").str.slice(0, 1), c("last"), c("num")]))
        .otherwise(pl.concat_str([c("first"), pl.lit("_"), c("last"), c("num")]))
    )
    street_part = (
        pl.when(c("fr")).then(pl.concat_str([c("house"), pl.lit(" "), c("street")]))
        .otherwise(pl.concat_str([c("street"), pl.lit(" "), c("house")]))
    )
    age = np.array(vocab.AGE_WEIGHTS)
    personal = rng.random(n) < 0.85
    return df.select(
        email=pl.concat_str([local, pl.lit("@"), c("domain")]),
        phone=pl.concat_str([c("code"), pl.lit(" "), c("prefix"), pl.lit(" "), c("phone_num").str.zfill(7)]),
        address=pl.concat_str([street_part, pl.lit(", "), c("postcode"), pl.lit(" "), c("city")]),
    ).with_columns(
        age_band=pl.Series(vocab.AGE_BANDS, dtype=pl.Utf8).gather(rng.choice(len(age), size=n, p=age / age.sum())),
        consent_personalization=pl.Series(personal),
        # People who refuse personalisation mostly refuse advertising too.
        consent_advertising=pl.Series(rng.random(n) < np.where(personal, 0.68, 0.15)),
        consent_analytics=pl.Series(rng.random(n) < 0.75),
    )
