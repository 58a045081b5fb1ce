"""Simulator: a population of card holders and their phones, produced to Kafka.

Each user has cards, a phone, a home city, a workplace, favourite merchants and habits
(categories, amounts, active hours). The phone reports its position every few seconds like
a location logger: still with GPS jitter at home, at work or in a shop, walking or driving
between them, with a reported accuracy of 3-50 m and a noisy reported speed. Payments
happen where the phone is. On top of that the simulator injects labelled scenarios, each at
its own rate:

- ``impossible_travel``: a card used hundreds of kilometres from its phone within minutes;
- ``malformed``: bad JSON, missing fields, wrong types, out-of-range values;
- ``out_of_order`` and ``late``: records published after newer ones, some later than the
  job's watermark;
- ``no_location``: users whose phone reports nothing (their payments cannot be checked);
- metric incidents (``metric_incidents``), each a stretch of minutes: ``failed_surge`` and
  ``reversal_surge`` (extra payments with status failed or reversed, from users where
  they are), ``approval_outage`` (no approved payment at all while the others go on).

With ``history_min``, payments (no phone positions, scenario ``history``) precede the
simulated period at every user's daytime rate, so the per-minute series have a past for
the metrics detector to learn from before the period starts.

Every transaction (and every malformed location record) gets a row in the Delta table
``ground_truth``. The same ``--seed`` gives the same records.

Run it with ``./spark-submit.sh simulate`` (``jobs/simulate.py``).
"""

from __future__ import annotations

import heapq
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from txwatch.infra.config import Conf
from udfs.geo import haversine_m_py

CITIES = (
    ("Paris", 48.8566, 2.3522, 35),
    ("Lyon", 45.7640, 4.8357, 170),
    ("Marseille", 43.2965, 5.3698, 12),
    ("Berlin", 52.5200, 13.4050, 34),
    ("Munich", 48.1351, 11.5820, 520),
    ("Madrid", 40.4168, -3.7038, 657),
    ("Barcelona", 41.3874, 2.1686, 12),
    ("Milan", 45.4642, 9.1900, 120),
    ("Rome", 41.9028, 12.4964, 21),
    ("Amsterdam", 52.3676, 4.9041, 0),
    ("London", 51.5072, -0.1276, 11),
    ("Warsaw", 52.2297, 21.0122, 100),
    ("Vienna", 48.2082, 16.3738, 190),
    ("Lisbon", 38.7223, -9.1393, 45),
)

# Category -> (mu, sigma) of a log-normal amount in EUR.
CATEGORIES = {
    "grocery": (3.4, 0.6),
    "restaurant": (3.3, 0.5),
    "cafe": (1.9, 0.4),
    "fuel": (3.9, 0.3),
    "pharmacy": (2.9, 0.6),
    "clothing": (4.1, 0.7),
    "electronics": (5.2, 0.9),
    "transport": (2.6, 0.6),
    "entertainment": (3.6, 0.6),
}
STATUSES = {
    "approved": 0.90,
    "denied": 0.04,
    "failed": 0.02,
    "reversed": 0.01,
    "backend_reversed": 0.005,
    "refunded": 0.015,
    "processing": 0.01,
}
CHANNELS = {"contactless": 0.45, "chip": 0.33, "mobile_wallet": 0.17, "swipe": 0.05}
FIRST_NAMES = (
    "Ana",
    "Ben",
    "Chloé",
    "David",
    "Eva",
    "Farid",
    "Greta",
    "Hugo",
    "Ines",
    "Jan",
    "Klara",
    "Luca",
    "Maya",
    "Nils",
    "Olga",
    "Pablo",
    "Rosa",
    "Sven",
    "Tara",
    "Yusuf",
)
LAST_NAMES = (
    "Martin",
    "Müller",
    "Rossi",
    "García",
    "Novak",
    "Dubois",
    "Jansen",
    "Silva",
    "Kowalski",
    "Bauer",
    "Costa",
    "Moreau",
    "Fischer",
    "Romano",
    "Lopez",
    "Weber",
)

METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SimulationParams:
    seed: int = 7
    users: int = 1500
    duration_min: float = 60.0
    max_transactions: int | None = None
    start: datetime = datetime(2026, 1, 5, 11, 0, tzinfo=UTC)
    ping_interval_s: float = 20.0
    tx_per_hour: float = 4.0
    impossible_travel_rate: float = 0.03
    malformed_rate: float = 0.005
    out_of_order_rate: float = 0.02
    late_rate: float = 0.005
    no_location_rate: float = 0.03
    # Payments that do not fit the customer (the model's scenarios), in the period only:
    # a share of ordinary payments with an amount 20-60 times the usual one; bursts of
    # small card tests per simulated hour (population-wide); account takeovers per hour.
    amount_outlier_rate: float = 0.005
    card_testing_per_hour: float = 5.0
    account_takeover_per_hour: float = 6.0
    # Rings of accounts that share devices, shops and places (the similarity job's
    # scenario), in the period.
    fraud_rings: int = 1
    # Known fraud: takeovers in the history (labelled known_fraud, the patterns the stream
    # compares with), and repeats of them on other accounts per hour of the period (the
    # same fraudster's device and shops; labelled known_pattern).
    known_frauds: int = 2
    pattern_repeats_per_hour: float = 3.0
    # Publication delays. Out-of-order records stay inside the job's watermark; late ones
    # come after it (the default watermarks are 2 minutes, the join range 3 minutes before).
    out_of_order_delay_s: tuple[float, float] = (5.0, 90.0)
    late_delay_s: tuple[float, float] = (1800.0, 3600.0)
    # Payments stop this long before the end while phones keep reporting, so the last
    # payments still find the fixes that follow them.
    tail_s: float = 600.0
    # Payments only (no phones), at the daytime rate, for this long before ``start``.
    history_min: float = 0.0
    metric_incidents: tuple[MetricIncident, ...] = ()


@dataclass(frozen=True)
class MetricIncident:
    """Minutes ``[start_min, start_min + duration_min)`` of the simulated period."""

    scenario: str  # one of METRIC_SCENARIOS
    start_min: float
    duration_min: float
    # Surges: extra payments per minute with the scenario's status.
    extra_per_min: float = 0.0

    @property
    def status(self) -> str:
        return METRIC_SCENARIOS[self.scenario]


# The end of the history has no fraud-like payment (see Simulator._history_records).
HISTORY_QUIET_S = 900.0

# The scenarios of payments that do not fit the customer (labelled per transaction).
MODEL_SCENARIOS = ("amount_outlier", "card_testing", "account_takeover")
# Card tests: a burst of this many small payments, most of them refused.
CARD_TEST_ATTEMPTS = (6, 12)
CARD_TEST_STATUSES = {"denied": 0.5, "failed": 0.2, "approved": 0.3}
# Account takeover: this many purchases from the new device, minutes apart.
TAKEOVER_PURCHASES = (2, 4)

# A fraud ring: this many accounts (new ones, without phones), paying this many times each
# during the period, at the ring's few shops of one city, from the ring's shared devices.
RING_ACCOUNTS = (4, 7)
RING_PAYMENTS = (4, 8)
RING_MERCHANTS = 4
RING_DEVICES = 2
RING_SCENARIO = "fraud_ring"
# A known fraud pattern: a fraudster's device buying at a few shops of a far city.
KNOWN_FRAUD_SCENARIO = "known_fraud"
PATTERN_REPEAT_SCENARIO = "known_pattern"
PATTERN_SHOPS = 3
PATTERN_PURCHASES = (2, 4)

# Scenario -> the status it is about.
METRIC_SCENARIOS = {
    "failed_surge": "failed",
    "reversal_surge": "reversed",
    "approval_outage": "approved",
}

# The incidents ``make demo`` injects (jobs/simulate.py's default): inside the first 50
# minutes of a 60-minute period, where payments still flow.
DEMO_METRIC_INCIDENTS = (
    MetricIncident("failed_surge", 10.0, 8.0, extra_per_min=15.0),
    MetricIncident("reversal_surge", 24.0, 8.0, extra_per_min=10.0),
    MetricIncident("approval_outage", 38.0, 7.0),
)


@dataclass(frozen=True)
class Merchant:
    merchant_id: str
    name: str
    category: str
    lat: float
    lon: float


@dataclass
class Segment:
    """The phone's motion from ``start_t`` to ``end_t``: still, walking or driving."""

    start_t: float
    end_t: float
    from_pos: tuple[float, float]
    to_pos: tuple[float, float]
    speed_mps: float

    def position(self, t: float) -> tuple[float, float]:
        if self.end_t <= self.start_t:
            return self.to_pos
        f = min(max((t - self.start_t) / (self.end_t - self.start_t), 0.0), 1.0)
        return (
            self.from_pos[0] + f * (self.to_pos[0] - self.from_pos[0]),
            self.from_pos[1] + f * (self.to_pos[1] - self.from_pos[1]),
        )


@dataclass
class User:
    user_id: str
    name: str
    cards: list[str]
    device_id: str
    city: int
    home: tuple[float, float]
    work: tuple[float, float]
    merchants: list[Merchant]
    active_hours: tuple[int, int]
    tx_per_hour: float
    has_location: bool
    segment: Segment = field(init=False)


@dataclass(frozen=True)
class FraudPattern:
    device_id: str
    merchants: list[Merchant]


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes
    value: bytes


@dataclass(frozen=True)
class TruthRow:
    transaction_id: str | None
    user_id: str
    device_id: str
    scenario: str
    detail: str
    topic: str
    event_time: datetime
    delay_s: float
    end_time: datetime | None = None  # metric incidents: the end of the stretch


def offset(pos: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    lat, lon = pos
    return (
        lat + north_m / METRES_PER_DEGREE,
        lon + east_m / (METRES_PER_DEGREE * math.cos(math.radians(lat))),
    )


def luhn_card_number(rng: random.Random) -> str:
    """A 16-digit number that passes the Luhn check, with a Visa or Mastercard prefix."""
    digits = [4] if rng.random() < 0.6 else [5, rng.randint(1, 5)]
    while len(digits) < 15:
        digits.append(rng.randint(0, 9))
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 0:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    digits.append((10 - total % 10) % 10)
    return "".join(map(str, digits))


def _weighted(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Simulator:
    """Generates records in publication order; ``truth`` collects the labels."""

    def __init__(self, params: SimulationParams, conf: Conf) -> None:
        self.p = params
        self.topics = conf.kafka.topics
        self.rng = random.Random(params.seed)
        self.truth: list[TruthRow] = []
        self.patterns: list[FraudPattern] = []
        self.counts: Counter[str] = Counter()
        self.city_merchants = [self._make_merchants(i) for i in range(len(CITIES))]
        self.users = [self._make_user(i) for i in range(params.users)]

    # -- population ---------------------------------------------------------------

    def _make_merchants(self, city: int) -> list[Merchant]:
        name, lat, lon, _ = CITIES[city]
        merchants = []
        for i in range(60):
            category = self.rng.choice(list(CATEGORIES))
            pos = offset((lat, lon), self.rng.gauss(0, 4000), self.rng.gauss(0, 4000))
            merchants.append(
                Merchant(f"m-{city:02d}-{i:03d}", f"{name} {category} {i}", category, *pos)
            )
        return merchants

    def _make_user(self, i: int) -> User:
        rng = self.rng
        city = rng.randrange(len(CITIES))
        center = CITIES[city][1:3]
        home = offset(center, rng.gauss(0, 5000), rng.gauss(0, 5000))
        work = offset(center, rng.gauss(0, 3000), rng.gauss(0, 3000))
        start_hour = rng.randint(6, 10)
        user = User(
            user_id=f"u-{i:06d}",
            name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            cards=[luhn_card_number(rng) for _ in range(rng.choice((1, 1, 2)))],
            device_id=f"d-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
            city=city,
            home=home,
            work=work,
            merchants=rng.sample(self.city_merchants[city], 8),
            active_hours=(start_hour, min(start_hour + rng.randint(12, 16), 24)),
            tx_per_hour=self.p.tx_per_hour * rng.uniform(0.5, 1.5),
            has_location=rng.random() >= self.p.no_location_rate,
        )
        favourite = rng.choice(user.merchants)
        here = rng.choice((home, work, (favourite.lat, favourite.lon)))
        user.segment = Segment(0.0, rng.uniform(0, 1800), here, here, 0.0)
        return user

    # -- motion -------------------------------------------------------------------

    def _advance(self, user: User, t: float) -> Segment:
        """The segment covering ``t``, planning new stays and trips as time passes."""
        rng = self.rng
        while user.segment.end_t < t:
            seg = user.segment
            if seg.speed_mps == 0.0:  # a stay ends: travel somewhere else
                merchant = rng.choice(user.merchants)
                target = rng.choice((user.home, user.work, (merchant.lat, merchant.lon)))
                distance = haversine_m_py(*seg.to_pos, *target)
                speed = rng.uniform(1.1, 1.6) if distance < 1500 else rng.uniform(7.0, 22.0)
                user.segment = Segment(
                    seg.end_t, seg.end_t + max(distance / speed, 1.0), seg.to_pos, target, speed
                )
            else:  # arrived: stay a while
                user.segment = Segment(
                    seg.end_t, seg.end_t + rng.uniform(600, 5400), seg.to_pos, seg.to_pos, 0.0
                )
        return user.segment

    # -- records ------------------------------------------------------------------

    def _ping(self, user: User, t: float) -> dict:
        rng = self.rng
        seg = self._advance(user, t)
        true_pos = seg.position(t)
        moving = seg.speed_mps > 0
        accuracy = rng.uniform(3, 15) if moving else rng.uniform(5, 50)
        sigma = accuracy / 2  # ~86% of fixes within the reported accuracy
        east, north = rng.gauss(0, sigma), rng.gauss(0, sigma)
        if rng.random() < 0.003:  # multipath outlier: a jump far beyond the stated accuracy
            angle, jump = rng.uniform(0, 2 * math.pi), rng.uniform(300, 2500)
            east, north = jump * math.cos(angle), jump * math.sin(angle)
        lat, lon = offset(true_pos, east, north)
        return {
            "device_id": user.device_id,
            "latitude": round(lat, 6),
            "longitude": round(lon, 6),
            "altitude": round(CITIES[user.city][3] + rng.gauss(0, 4), 1),
            "speed": round(max(seg.speed_mps + rng.gauss(0, 0.4), 0.0), 2),
            "horizontal_accuracy": round(accuracy, 1),
            "event_time": iso(self.p.start + timedelta(seconds=t)),
        }

    def _transaction(
        self, user: User, t: float, merchant: Merchant, pos: tuple[float, float]
    ) -> dict:
        rng = self.rng
        mu, sigma = CATEGORIES[merchant.category]
        return {
            "transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "user_id": user.user_id,
            "card_number": rng.choice(user.cards),
            "device_id": user.device_id,
            "name": user.name,
            "merchant_id": merchant.merchant_id,
            "merchant": merchant.name,
            "merchant_category": merchant.category,
            "amount": round(rng.lognormvariate(mu, sigma), 2),
            "currency": "EUR",
            "status": _weighted(rng, STATUSES),
            "channel": _weighted(rng, CHANNELS),
            "latitude": round(pos[0], 6),
            "longitude": round(pos[1], 6),
            "event_time": iso(self.p.start + timedelta(seconds=t)),
        }

    def _legit_transaction(self, user: User, t: float) -> dict:
        rng = self.rng
        true_pos = self._advance(user, t).position(t)
        # The payment happens where the person is; the terminal is geolocated to the shop,
        # a few tens of metres away.
        pos = offset(true_pos, rng.uniform(-30, 30), rng.uniform(-30, 30))
        return self._transaction(user, t, rng.choice(user.merchants), pos)

    def _fraud_transaction(self, user: User, t: float) -> dict:
        return self._far_away_transaction(user, t, self._advance(user, t).position(t))

    def _fraud_like_transaction(self, user: User, t: float) -> dict:
        """A history payment shaped like the fraud (no phone then: far from home)."""
        return self._far_away_transaction(user, t, user.home)

    def _far_away_transaction(self, user: User, t: float, here: tuple[float, float]) -> dict:
        far_cities = [
            i for i, c in enumerate(CITIES) if haversine_m_py(*here, c[1], c[2]) > 300_000
        ]
        merchant = self.rng.choice(self.city_merchants[self.rng.choice(far_cities)])
        record = self._transaction(user, t, merchant, (merchant.lat, merchant.lon))
        record["amount"] = round(self.rng.lognormvariate(5.5, 0.8), 2)
        return record

    def _malform(self, record: dict, required: tuple[str, ...]) -> tuple[bytes, str]:
        rng = self.rng
        kind = rng.choice(("bad_json", "missing_field", "wrong_type", "out_of_range"))
        broken = dict(record)
        if kind == "missing_field":
            name = rng.choice(required)
            del broken[name]
            return json.dumps(broken).encode(), f"missing_field:{name}"
        if kind == "wrong_type":
            broken["latitude"] = rng.choice(("north", "48,85", "N/A"))
            return json.dumps(broken).encode(), "invalid_type:latitude"
        if kind == "out_of_range":
            broken["latitude"] = round(rng.uniform(90.5, 400.0) * rng.choice((1, -1)), 4)
            return json.dumps(broken).encode(), "out_of_range:latitude"
        text = json.dumps(broken)
        return text[: rng.randint(10, len(text) - 2)].encode(), "malformed_json"

    # -- the run ------------------------------------------------------------------

    def records(self) -> Iterator[tuple[float, Record]]:
        """Yield ``(simulated publication time, record)`` in publication order."""
        p, rng = self.p, self.rng
        yield from self._history_records()
        self._label_metric_incidents()
        end_s = p.duration_min * 60.0
        last_tx_s = max(end_s - p.tail_s, 0.0)
        events: list[tuple[float, int, int, str]] = []  # (time, seq, user index, kind)
        pending: list[tuple[float, int, Record]] = []  # delayed or scheduled records
        seq = 0
        for i, user in enumerate(self.users):
            if user.has_location:
                events.append((rng.uniform(0, p.ping_interval_s), seq, i, "ping"))
                seq += 1
            events.append((self._next_tx_gap(user, 0.0), seq, i, "tx"))
            seq += 1
        located = [i for i, user in enumerate(self.users) if user.has_location]
        for number, incident in enumerate(p.metric_incidents):
            # Surge payments as their own events (kind "surge:<n>"), from located users.
            t = incident.start_min * 60.0
            while incident.extra_per_min > 0:
                t += rng.expovariate(incident.extra_per_min / 60.0)
                if t >= (incident.start_min + incident.duration_min) * 60.0:
                    break
                events.append((t, seq, rng.choice(located), f"surge:{number}"))
                seq += 1
        last_tx_min = last_tx_s / 60.0
        for kind, per_hour in (
            ("card_testing", p.card_testing_per_hour),
            ("account_takeover", p.account_takeover_per_hour),
            ("known_pattern", p.pattern_repeats_per_hour if self.patterns else 0.0),
        ):
            attacks = self._poisson(per_hour * last_tx_min / 60.0) if per_hour > 0 else 0
            for _ in range(attacks):
                events.append((rng.uniform(0, last_tx_s), seq, rng.choice(located), kind))
                seq += 1
        for ring in range(p.fraud_rings):
            for at, record in self._ring(ring, last_tx_s):
                seq += 1
                pending.append((at, seq, record))
        heapq.heapify(events)
        heapq.heapify(pending)
        transactions = 0
        while events:
            t, _, i, kind = heapq.heappop(events)
            while pending and pending[0][0] <= t:
                at, _, record = heapq.heappop(pending)
                yield at, record
            user = self.users[i]
            if kind == "ping":
                if t < end_s:
                    record, delay = self._emit_location(user, t)
                    seq += 1
                    heapq.heappush(pending, (t + delay, seq, record))
                    next_t = t + p.ping_interval_s * rng.uniform(0.8, 1.2)
                    heapq.heappush(events, (next_t, seq, i, "ping"))
                continue
            if t >= last_tx_s or (p.max_transactions and transactions >= p.max_transactions):
                continue
            if kind in ("card_testing", "account_takeover", "known_pattern"):
                attack = {
                    "card_testing": self._card_test,
                    "account_takeover": self._takeover,
                    "known_pattern": self._repeat_pattern,
                }[kind]
                for at, record in attack(user, t):
                    seq += 1
                    heapq.heappush(pending, (at, seq, record))
                    transactions += 1
                continue
            if kind.startswith("surge:"):
                incident = p.metric_incidents[int(kind.split(":")[1])]
                yield t, self._surge_transaction(user, t, incident)
                transactions += 1
                continue
            for at, record in self._emit_transactions(user, t):
                seq += 1
                heapq.heappush(pending, (at, seq, record))
                transactions += 1
            seq += 1
            heapq.heappush(events, (t + self._next_tx_gap(user, t), seq, i, "tx"))
        while pending:
            at, _, record = heapq.heappop(pending)
            yield at, record

    # -- payments that do not fit the customer -------------------------------------

    def _poisson(self, mean: float) -> int:
        """A Poisson draw (Knuth's method: the means here are small)."""
        limit, k, product = math.exp(-mean), 0, self.rng.random()
        while product > limit:
            k += 1
            product *= self.rng.random()
        return k

    def _new_device(self) -> str:
        return f"d-{uuid.UUID(int=self.rng.getrandbits(128)).hex[:12]}"

    def _card_test(self, user: User, t: float) -> Iterator[tuple[float, Record]]:
        """Someone with a stolen card number tries small amounts from their own device."""
        rng = self.rng
        card, device = rng.choice(user.cards), self._new_device()
        merchant = rng.choice(self.city_merchants[rng.randrange(len(CITIES))])
        attempts = rng.randint(*CARD_TEST_ATTEMPTS)
        for n in range(attempts):
            tx = self._transaction(user, t, merchant, (merchant.lat, merchant.lon))
            tx.update(
                card_number=card,
                device_id=device,
                amount=round(rng.uniform(0.5, 3.0), 2),
                status=_weighted(rng, CARD_TEST_STATUSES),
                channel="online",
            )
            detail = f"attempt {n + 1} of {attempts} on one card, from a new device"
            self._label(tx, user, "card_testing", detail, t)
            yield (
                t,
                Record(self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode()),
            )
            t += rng.uniform(10, 60)

    def _takeover(self, user: User, t: float) -> Iterator[tuple[float, Record]]:
        """A new device, then purchases in categories and a city the customer never uses."""
        rng = self.rng
        device = self._new_device()
        used = {m.category for m in user.merchants}
        home = CITIES[user.city][1:3]
        cities = [i for i, c in enumerate(CITIES) if haversine_m_py(*home, c[1], c[2]) > 300_000]
        city_merchants = self.city_merchants[rng.choice(cities)]
        unused = [m for m in city_merchants if m.category not in used] or city_merchants
        purchases = rng.randint(*TAKEOVER_PURCHASES)
        for n in range(purchases):
            merchant = rng.choice(unused)
            tx = self._transaction(user, t, merchant, (merchant.lat, merchant.lon))
            tx.update(device_id=device, channel="mobile_wallet")
            detail = f"purchase {n + 1} of {purchases} from a new device, {merchant.category}"
            self._label(tx, user, "account_takeover", detail, t)
            yield (
                t,
                Record(self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode()),
            )
            t += rng.uniform(60, 600)

    def _ring(self, ring: int, last_tx_s: float) -> Iterator[tuple[float, Record]]:
        """New accounts run by one ring: the same few shops and devices, no phones."""
        rng = self.rng
        city = rng.randrange(len(CITIES))
        merchants = rng.sample(self.city_merchants[city], RING_MERCHANTS)
        devices = [self._new_device() for _ in range(RING_DEVICES)]
        size = rng.randint(*RING_ACCOUNTS)
        for k in range(size):
            user = User(
                user_id=f"u-{self.p.users + ring * RING_ACCOUNTS[1] + k:06d}",
                name=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
                cards=[luhn_card_number(rng)],
                device_id=devices[k % RING_DEVICES],
                city=city,
                home=(merchants[0].lat, merchants[0].lon),
                work=(merchants[0].lat, merchants[0].lon),
                merchants=merchants,
                active_hours=(0, 24),
                tx_per_hour=0.0,
                has_location=False,
            )
            payments = rng.randint(*RING_PAYMENTS)
            for t in sorted(rng.uniform(0, last_tx_s) for _ in range(payments)):
                merchant = rng.choice(merchants)
                tx = self._transaction(user, t, merchant, (merchant.lat, merchant.lon))
                tx["device_id"] = rng.choice(devices)
                detail = f"account {k + 1} of {size} of ring {ring}: shared devices and shops"
                self._label(tx, user, RING_SCENARIO, detail, t)
                yield (
                    t,
                    Record(
                        self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode()
                    ),
                )

    def _pattern_purchases(
        self, user: User, t: float, pattern: FraudPattern, scenario: str, what: str
    ) -> Iterator[tuple[float, Record]]:
        rng = self.rng
        purchases = rng.randint(*PATTERN_PURCHASES)
        for n in range(purchases):
            merchant = rng.choice(pattern.merchants)
            tx = self._transaction(user, t, merchant, (merchant.lat, merchant.lon))
            tx.update(device_id=pattern.device_id, channel="mobile_wallet")
            detail = f"purchase {n + 1} of {purchases}: {what} {pattern.device_id}"
            self._label(tx, user, scenario, detail, t)
            yield (
                t,
                Record(self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode()),
            )
            t += rng.uniform(60, 300)

    def _known_frauds(self, history_s: float) -> list[tuple[float, Record]]:
        """Takeovers early in the history: the fraud patterns the period repeats."""
        rng = self.rng
        records: list[tuple[float, Record]] = []
        latest = -HISTORY_QUIET_S - 1800.0
        if self.p.known_frauds <= 0 or history_s <= -latest:
            return records
        for _ in range(self.p.known_frauds):
            user = rng.choice(self.users)
            home = CITIES[user.city][1:3]
            far = [i for i, c in enumerate(CITIES) if haversine_m_py(*home, c[1], c[2]) > 300_000]
            pattern = FraudPattern(
                self._new_device(), rng.sample(self.city_merchants[rng.choice(far)], PATTERN_SHOPS)
            )
            self.patterns.append(pattern)
            t = rng.uniform(-history_s, latest)
            what = "a takeover from the fraudster's device"
            records += self._pattern_purchases(user, t, pattern, KNOWN_FRAUD_SCENARIO, what)
        return sorted(records, key=lambda r: r[0])  # heapq.merge takes sorted inputs

    def _repeat_pattern(self, user: User, t: float) -> Iterator[tuple[float, Record]]:
        """A known fraud again, on another account: the same device and shops."""
        pattern = self.rng.choice(self.patterns)
        what = "a known fraud repeated from device"
        yield from self._pattern_purchases(user, t, pattern, PATTERN_REPEAT_SCENARIO, what)

    # -- metric scenarios ---------------------------------------------------------

    def _history_records(self) -> Iterator[tuple[float, Record]]:
        """Payments before ``start`` (``history_min``), in time order, at the daytime rate.

        The same mix as the period's payments, fraud-like ones included (at
        ``impossible_travel_rate``, far away and with the fraud's amounts), so the
        per-minute amounts have the same distribution before and during the period.
        """
        history_s = self.p.history_min * 60.0
        if history_s <= 0:
            return
        frauds = self._known_frauds(history_s)
        yield from heapq.merge(self._history_payments(history_s), frauds, key=lambda r: r[0])

    def _history_payments(self, history_s: float) -> Iterator[tuple[float, Record]]:
        p, rng = self.p, self.rng
        events = [
            (-history_s + rng.expovariate(u.tx_per_hour / 3600.0), i, False)
            for i, u in enumerate(self.users)
        ]
        heapq.heapify(events)
        while events:
            t, i, is_fraud_like = heapq.heappop(events)
            if t >= 0:
                continue
            user = self.users[i]
            if is_fraud_like:
                tx = self._fraud_like_transaction(user, t)
                detail = "before the simulated period: a payment like the injected fraud"
            else:
                # Where the phone will be at the start: the join compares the last history
                # payments with the first positions.
                here = user.segment.position(0.0)
                pos = offset(here, rng.uniform(-30, 30), rng.uniform(-30, 30))
                tx = self._transaction(user, t, rng.choice(user.merchants), pos)
                detail = "before the simulated period: no phone positions"
                fraud_like_t = t + rng.uniform(5, 240)
                # Not in reach of the phone's first positions at 0 (the join looks 2
                # minutes after a payment): no phone, no impossible-travel check.
                if rng.random() < p.impossible_travel_rate and fraud_like_t < -HISTORY_QUIET_S:
                    heapq.heappush(events, (fraud_like_t, i, True))
                next_t = t + rng.expovariate(user.tx_per_hour / 3600.0)
                heapq.heappush(events, (next_t, i, False))
            self._label(tx, user, "history", detail, t)
            record = Record(
                self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode()
            )
            yield t, record

    def _label(
        self, tx: dict, user: User, scenario: str, detail: str, t: float, delay: float = 0.0
    ) -> None:
        """A payment's ground-truth row (event time ``t``, published ``delay`` later)."""
        self.truth.append(
            TruthRow(
                tx["transaction_id"],
                user.user_id,
                user.device_id,
                scenario,
                detail,
                self.topics.transactions,
                self.p.start + timedelta(seconds=t),
                delay,
            )
        )
        self.counts[f"transactions_{scenario}"] += 1

    def _label_metric_incidents(self) -> None:
        for incident in self.p.metric_incidents:
            start = self.p.start + timedelta(minutes=incident.start_min)
            what = (
                f"{incident.extra_per_min:g} extra {incident.status} payments a minute"
                if incident.extra_per_min
                else f"no {incident.status} payments"
            )
            self.truth.append(
                TruthRow(
                    None,
                    "",
                    "",
                    incident.scenario,
                    f"{what} for {incident.duration_min:g} min",
                    self.topics.transactions,
                    start,
                    0.0,
                    start + timedelta(minutes=incident.duration_min),
                )
            )

    def _in_outage(self, t: float, status: str) -> bool:
        return any(
            i.status == status
            and i.extra_per_min == 0
            and i.start_min * 60.0 <= t < (i.start_min + i.duration_min) * 60.0
            for i in self.p.metric_incidents
        )

    def _surge_transaction(self, user: User, t: float, incident: MetricIncident) -> Record:
        tx = self._legit_transaction(user, t)
        tx["status"] = incident.status
        self._label(tx, user, incident.scenario, f"status {incident.status}", t)
        return Record(self.topics.transactions, user.user_id.encode(), json.dumps(tx).encode())

    def _next_tx_gap(self, user: User, t: float) -> float:
        hour = (self.p.start + timedelta(seconds=t)).hour
        start, end = user.active_hours
        rate = user.tx_per_hour if start <= hour < end else user.tx_per_hour * 0.05
        return self.rng.expovariate(rate / 3600.0)

    def _delay(self) -> tuple[float, str]:
        r = self.rng.random()
        if r < self.p.late_rate:
            return self.rng.uniform(*self.p.late_delay_s), "late"
        if r < self.p.late_rate + self.p.out_of_order_rate:
            return self.rng.uniform(*self.p.out_of_order_delay_s), "out_of_order"
        return 0.0, ""

    def _emit_location(self, user: User, t: float) -> tuple[Record, float]:
        ping = self._ping(user, t)
        key = user.device_id.encode()
        self.counts["device_locations"] += 1
        if self.rng.random() < self.p.malformed_rate:
            value, detail = self._malform(
                ping, ("device_id", "latitude", "longitude", "event_time")
            )
            self.counts["malformed_locations"] += 1
            self.truth.append(
                TruthRow(
                    None,
                    user.user_id,
                    user.device_id,
                    "malformed_location",
                    detail,
                    self.topics.device_locations,
                    self.p.start + timedelta(seconds=t),
                    0.0,
                )
            )
            return Record(self.topics.device_locations, key, value), 0.0
        delay, lateness = self._delay()
        if lateness:
            self.counts[f"{lateness}_locations"] += 1
        return Record(self.topics.device_locations, key, json.dumps(ping).encode()), delay

    def _emit_transactions(self, user: User, t: float) -> Iterator[tuple[float, Record]]:
        p, rng = self.p, self.rng
        tx = self._legit_transaction(user, t)
        if self._in_outage(t, tx["status"]):
            self.counts["transactions_lost_in_outage"] += 1
            return
        key = user.user_id.encode()
        scenario, detail, delay = (
            ("legit", "", 0.0)
            if user.has_location
            else ("no_location", "the phone reports no positions", 0.0)
        )
        if scenario == "legit" and p.amount_outlier_rate and rng.random() < p.amount_outlier_rate:
            usual = tx["amount"]
            tx["amount"] = round(usual * rng.uniform(20, 60), 2)
            scenario, detail = "amount_outlier", f"{tx['amount']:.2f} instead of about {usual:.2f}"
        value = json.dumps(tx).encode()
        if rng.random() < p.malformed_rate:
            value, detail = self._malform(
                tx, ("transaction_id", "card_number", "amount", "event_time")
            )
            scenario = "malformed"
        elif scenario == "legit":
            delay, lateness = self._delay()
            if lateness:
                scenario, detail = lateness, f"published {delay:.0f} s after its event time"
        self._label(tx, user, scenario, detail, t, delay)
        yield t + delay, Record(self.topics.transactions, key, value)
        if user.has_location and rng.random() < p.impossible_travel_rate:
            fraud_t = t + rng.uniform(5, 240)
            fraud = self._fraud_transaction(user, fraud_t)
            distance_km = (
                haversine_m_py(
                    *self._advance(user, fraud_t).position(fraud_t),
                    fraud["latitude"],
                    fraud["longitude"],
                )
                / 1000
            )
            self._label(
                fraud, user, "impossible_travel", f"{distance_km:.0f} km from the phone", fraud_t
            )
            yield fraud_t, Record(self.topics.transactions, key, json.dumps(fraud).encode())


# ------------------------------------------------------------------------------ output


def produce(
    records: Iterator[tuple[float, Record]],
    bootstrap_servers: str,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send records to Kafka (``rate`` records per second at most); return how many."""
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=20,
        batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
        retries=10,
    )
    sent = 0
    started = time.monotonic()
    try:
        for _, record in records:
            producer.send(record.topic, key=record.key, value=record.value)
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            if progress and sent % 50_000 == 0:
                progress(sent)
        producer.flush()
    finally:
        producer.close()
    return sent


def write_ground_truth(conf: Conf, truth: list[TruthRow], chunk: int = 200_000) -> None:
    """Append the labels to the Delta table ``ground_truth``."""
    from txwatch.infra import tables
    from txwatch.infra.session import create_session

    spark = create_session(conf, "simulate")
    # A lake from before end_time existed gets the column first (appends do not add it).
    tables.ensure_table(spark, conf, tables.GROUND_TRUTH)
    schema = tables.TABLES[tables.GROUND_TRUTH].schema
    for first in range(0, len(truth), chunk):
        rows = [tuple(r.__dict__.values()) for r in truth[first : first + chunk]]
        (
            spark.createDataFrame(rows, schema)
            .write.format("delta")
            .mode("append")
            .save(conf.table_path(tables.GROUND_TRUTH))
        )
