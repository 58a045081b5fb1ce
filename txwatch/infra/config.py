"""Configuration: YAML files in ``conf/`` loaded into frozen dataclasses.

An environment file names its parent with ``extends``; mappings merge key by key, the child
winning. Two environment variables override the file, so one config can serve a laptop, a
test and a cluster: ``TXWATCH_LAKE_ROOT`` and ``TXWATCH_KAFKA_BOOTSTRAP``. Any string may
name an environment variable as ``${NAME}`` (Kafka credentials, say): it is replaced when
the config is loaded, and an unset one is an error.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, cast

import yaml

from txwatch.infra.errors import UserError
from txwatch.infra.webhooks import check_url
from udfs.anonymity import Hierarchies
from udfs.similarity import BehaviourTokens, SimilarityParams
from udfs.travel import ImpossibleTravelRule, TravelJoin

DEFAULT_CONF = "conf/local.yaml"


class ConfigError(UserError, ValueError):
    """A configuration file is missing, malformed or holds an unknown key."""


@dataclass(frozen=True)
class Topics:
    transactions: str
    device_locations: str
    potential_fraud: str
    enrichment_candidates: str
    metrics: str


@dataclass(frozen=True)
class KafkaConf:
    bootstrap_servers: str
    topics: Topics
    partitions: int
    replication_factor: int
    starting_offsets: str
    max_offsets_per_trigger: int
    fail_on_data_loss: bool
    create_topics: bool = True
    options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamConf:
    trigger_interval: str
    alert_trigger_interval: str
    alert_table_trigger_interval: str
    scoring_trigger_interval: str
    enrich_trigger_interval: str
    transactions_watermark: str
    device_locations_watermark: str
    join_before: str
    join_after: str
    join_state_format: int
    max_future_skew: str
    max_event_time_lead: str
    watermark_max_lead: str
    watermark_max_lag: str


@dataclass(frozen=True)
class MetricsConf:
    """The per-series anomaly detection of ``txwatch.queries.metrics``."""

    window: str
    watermark: str
    series_expiry: str
    trigger_interval: str


@dataclass(frozen=True)
class ModelConf:
    """The outlier model: training (``jobs/train.py``), registry and stream scoring."""

    name: str
    registry_uri: str
    clusters: int
    threshold_quantile: float
    seed: int
    refresh_interval: str
    hour_min_history: str

    def registry(self, lake_root: str) -> str:
        """The MLflow tracking/registry URI, ``{lake_root}`` filled in."""
        return self.registry_uri.replace("{lake_root}", lake_root.rstrip("/"))


@dataclass(frozen=True)
class SimilarityConf:
    """Account similarity (``jobs/similarity.py``); see ``similarity`` in conf/base.yaml."""

    window: str
    cell_precision: int
    hour_bucket_hours: int
    max_accounts_per_token: int
    min_tokens: int
    num_hashes: int
    min_jaccard: float
    min_ring_size: int
    seed: int
    fraud_labels: str
    new_window: str
    habit_window: str
    num_perm: int
    pattern_min_jaccard: float
    pattern_min_shared_kinds: int
    refresh_interval: str

    def labels(self) -> tuple[str, ...]:
        """The ground-truth scenarios that count as confirmed fraud."""
        return tuple(s.strip() for s in self.fraud_labels.split(",") if s.strip())

    def tokens(self) -> BehaviourTokens:
        return BehaviourTokens(self.cell_precision, self.hour_bucket_hours)

    def params(self) -> SimilarityParams:
        return SimilarityParams(
            self.max_accounts_per_token,
            self.min_tokens,
            self.num_hashes,
            self.min_jaccard,
            self.seed,
        )


@dataclass(frozen=True)
class AnonymizeConf:
    """The k-anonymous release (``jobs/anonymize.py``); see ``anonymize`` in conf/base.yaml."""

    k: int
    min_location_precision: int
    max_suppression: float
    geohash_precision: int
    amount_edges: str
    category_groups: str

    def hierarchies(self) -> Hierarchies:
        try:
            edges = tuple(float(e) for e in self.amount_edges.split(",") if e.strip())
            groups = dict(
                (part.split(":")[0].strip(), part.split(":")[1].strip())
                for part in self.category_groups.split(",")
                if part.strip()
            )
        except (ValueError, IndexError):
            raise ConfigError(
                "conf.anonymize: amount_edges must be numbers separated by commas and "
                "category_groups category:group pairs separated by commas"
            ) from None
        if list(edges) != sorted(set(edges)) or not edges or edges[0] != 0:
            raise ConfigError(
                "conf.anonymize.amount_edges must start at 0 and be ascending and distinct"
            )
        if not 1 <= self.min_location_precision <= self.geohash_precision <= 12:
            raise ConfigError(
                "conf.anonymize: need 1 <= min_location_precision <= geohash_precision <= 12"
            )
        return Hierarchies(self.geohash_precision, edges, groups)


@dataclass(frozen=True)
class DeltaConf:
    maintenance_interval: str
    table_properties: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PrivacyConf:
    token_key_env: str


SEVERITIES = ("low", "medium", "high")


@dataclass(frozen=True)
class WebhooksConf:
    """Where new alerts are posted (``txwatch.queries.webhooks``); no URL: no query."""

    slack: dict[str, str]
    teams: dict[str, str]
    min_severity: str
    trigger_interval: str
    max_alerts_per_message: int
    max_messages_per_minute: int
    timeout: str
    attempts: int
    backoff: str

    def targets(self) -> dict[str, tuple[str, str]]:
        """Target name -> (format, URL), for every configured webhook."""
        named = [("slack", n, u) for n, u in self.slack.items()]
        named += [("teams", n, u) for n, u in self.teams.items()]
        seen: set[str] = set()
        for _, name, _ in named:
            if name in seen:
                raise ConfigError(f"conf.webhooks: target name {name!r} is used twice")
            seen.add(name)
        return {name: (kind, url) for kind, name, url in named}


@dataclass(frozen=True)
class CatalogConf:
    """The SQL catalog every table is registered in (``txwatch.catalog``)."""

    database: str
    metastore_uri: str
    thrift_host: str
    thrift_port: int

    def metastore_dir(self, lake_root: str) -> str | None:
        """Where the embedded metastore lives: ``<lake_root>/_catalog`` (None: a remote one)."""
        return None if self.metastore_uri else f"{lake_root.rstrip('/')}/_catalog"


@dataclass(frozen=True)
class SparkConf:
    app_name: str
    shuffle_partitions: int
    options: dict[str, str] = field(default_factory=dict)


# A query whose state changed in a way Spark cannot resume from its older checkpoints gets
# a new checkpoint folder, <query>.v<version>, and starts over from
# kafka.starting_offsets. payment_scoring 2: its history is one map state by customer,
# with a TTL, where version 1 kept one value per bucket of customers.
CHECKPOINT_VERSIONS = {"payment_scoring": 2}


@dataclass(frozen=True)
class Conf:
    lake_root: str
    kafka: KafkaConf
    stream: StreamConf
    # The rule's parameters are the pure transform's own dataclass.
    impossible_travel: ImpossibleTravelRule
    metrics: MetricsConf
    model: ModelConf
    similarity: SimilarityConf
    anonymize: AnonymizeConf
    delta: DeltaConf
    privacy: PrivacyConf
    spark: SparkConf
    webhooks: WebhooksConf
    catalog: CatalogConf
    source: str = ""

    def table_path(self, table: str) -> str:
        """Where the Delta table ``table`` lives: ``lake_root/<table>``."""
        return f"{self.lake_root.rstrip('/')}/{table}"

    def checkpoint_path(self, query_name: str, version: int | None = None) -> str:
        """The checkpoint folder of the streaming query ``query_name``: of this code's
        version of its state (``CHECKPOINT_VERSIONS``), or of ``version``."""
        version = version or CHECKPOINT_VERSIONS.get(query_name, 1)
        folder = query_name if version == 1 else f"{query_name}.v{version}"
        return f"{self.lake_root.rstrip('/')}/_checkpoints/{folder}"

    def travel_join(self) -> TravelJoin:
        """The join parameters of the impossible-travel transform."""
        stream = self.stream
        return TravelJoin(
            transactions_watermark=stream.transactions_watermark,
            device_locations_watermark=stream.device_locations_watermark,
            join_before=stream.join_before,
            join_after=stream.join_after,
        )

    def kafka_options(self) -> dict[str, str]:
        """Options every Spark Kafka source and sink of this job passes."""
        return {"kafka.bootstrap.servers": self.kafka.bootstrap_servers, **self.kafka.options}


# Spark's stream-stream join state formats this job can run (1 is deprecated).
JOIN_STATE_FORMATS = (2, 3, 4)

_DURATION_UNITS_S = {
    "microsecond": 1e-6,
    "millisecond": 1e-3,
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 604800.0,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*(?=\d|$)")


def duration_s(text: str) -> float:
    """Seconds in a Spark interval string such as ``5 minutes`` or ``1 hour 30 minutes``."""
    total, position, cleaned = 0.0, 0, text.strip().lower()
    for match in _DURATION_PART.finditer(cleaned):
        if match.start() != position or match.group(2) not in _DURATION_UNITS_S:
            break
        total += float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]
        position = match.end()
    else:
        if position == len(cleaned) and position:
            return total
    raise ConfigError(f"{text!r} is not a duration such as '5 minutes' or '1 hour 30 minutes'")


def _check_durations(conf: Conf) -> None:
    where_values = [
        (f"conf.stream.{spec.name}", getattr(conf.stream, spec.name))
        for spec in fields(conf.stream)
        if spec.type == "str"
    ]
    where_values += [
        (f"conf.metrics.{spec.name}", getattr(conf.metrics, spec.name))
        for spec in fields(conf.metrics)
    ]
    where_values += [
        (f"conf.model.{name}", getattr(conf.model, name))
        for name in ("refresh_interval", "hour_min_history")
    ]
    where_values += [
        (f"conf.similarity.{name}", getattr(conf.similarity, name))
        for name in (
            "window",
            "new_window",
            "habit_window",
            "refresh_interval",
        )
    ]
    where_values.append(("conf.delta.maintenance_interval", conf.delta.maintenance_interval))
    where_values += [
        (f"conf.webhooks.{name}", getattr(conf.webhooks, name))
        for name in ("trigger_interval", "timeout", "backoff")
    ]
    for where, value in where_values:
        try:
            duration_s(value)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (the configs are in conf/: local.yaml, "
            "cluster.yaml; pass one with --conf)"
        )
    if path in seen:
        raise ConfigError(f"config files extend each other in a loop: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_read_yaml(path.parent / parent, (*seen, path)), data)


def raw_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of ``path`` with its ``extends`` merged, as written: nothing expanded or
    checked. For ``spark-submit.sh``, which needs the sizes before the job starts, in a
    shell that may not hold the secrets the config names (cluster deploy mode)."""
    return _read_yaml(Path(path))


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _expand_env(value: Any, where: str, source: Path) -> Any:
    """``${NAME}`` in every string of the config replaced by the environment variable NAME
    (secrets such as Kafka credentials stay out of the files); an unset one is an error."""
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{where}.{k}", source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, where, source) for v in value]
    if not isinstance(value, str):
        return value

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(
                f"{source}: {where} refers to environment variable {name}, which is not set"
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(lookup, value)


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, known, n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise ConfigError(
            f"unknown key(s) in {where}: {', '.join(hints)}; the keys are documented in "
            "conf/base.yaml"
        )
    values: dict[str, Any] = {}
    for name, spec in known.items():
        if name not in data:
            if spec.default is not MISSING or spec.default_factory is not MISSING:
                continue
            raise ConfigError(f"missing key {where}.{name} (see conf/base.yaml)")
        value = data[name]
        nested = _NESTED.get((cls, name))
        if nested is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}.{name} must be a mapping")
            value = _build(nested, value, f"{where}.{name}")
        elif spec.type == "dict[str, str]":
            value = {str(k): str(v) for k, v in (value or {}).items()}
        elif spec.type in ("int", "float", "bool", "str"):
            value = _coerce(value, spec.type, f"{where}.{name}")
        values[name] = value
    return cls(**values)


_EXPECTED_TYPES: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "float": (int, float),
    "bool": bool,
    "str": str,
}


def _coerce(value: Any, type_name: str, where: str) -> Any:
    is_bool_for_number = isinstance(value, bool) and type_name != "bool"
    if is_bool_for_number or not isinstance(value, _EXPECTED_TYPES[type_name]):
        raise ConfigError(f"{where} must be {type_name}, not {value!r}")
    if type_name == "float":
        return float(cast(float, value))
    return value


_NESTED: dict[tuple[type, str], type] = {
    (Conf, "kafka"): KafkaConf,
    (KafkaConf, "topics"): Topics,
    (Conf, "stream"): StreamConf,
    (Conf, "impossible_travel"): ImpossibleTravelRule,
    (Conf, "metrics"): MetricsConf,
    (Conf, "model"): ModelConf,
    (Conf, "similarity"): SimilarityConf,
    (Conf, "anonymize"): AnonymizeConf,
    (Conf, "delta"): DeltaConf,
    (Conf, "privacy"): PrivacyConf,
    (Conf, "spark"): SparkConf,
    (Conf, "webhooks"): WebhooksConf,
    (Conf, "catalog"): CatalogConf,
}


def load_conf(path: str | os.PathLike[str] = DEFAULT_CONF) -> Conf:
    """Load ``path`` (following ``extends``) and apply the environment overrides."""
    conf_path = Path(path)
    if not conf_path.is_file() and Path(conf_path.name).is_file():
        # In cluster deploy mode spark-submit.sh's --files puts conf/*.yaml in the driver's
        # working directory.
        conf_path = Path(conf_path.name)
    data = _expand_env(_read_yaml(conf_path), "conf", conf_path)
    if lake_root := os.environ.get("TXWATCH_LAKE_ROOT"):
        data["lake_root"] = lake_root
    if bootstrap := os.environ.get("TXWATCH_KAFKA_BOOTSTRAP"):
        data.setdefault("kafka", {})["bootstrap_servers"] = bootstrap
    root = str(data.get("lake_root", ""))
    if root and "://" not in root:
        # Relative local paths are relative to where the job starts; Delta wants them absolute.
        data["lake_root"] = os.path.abspath(root)
    data["source"] = str(conf_path)
    conf: Conf = _build(Conf, data, "conf")
    _check_durations(conf)
    if conf.stream.join_state_format not in JOIN_STATE_FORMATS:
        raise ConfigError(
            f"stream.join_state_format must be one of {', '.join(map(str, JOIN_STATE_FORMATS))}, "
            f"not {conf.stream.join_state_format}"
        )
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", conf.catalog.database):
        raise ConfigError(
            f"catalog.database must be a plain SQL name (letters, digits, _), not "
            f"{conf.catalog.database!r}"
        )
    hooks = conf.webhooks
    if hooks.min_severity not in SEVERITIES:
        raise ConfigError(
            f"webhooks.min_severity must be one of {', '.join(SEVERITIES)}, not "
            f"{hooks.min_severity!r}"
        )
    if min(hooks.max_alerts_per_message, hooks.max_messages_per_minute, hooks.attempts) < 1:
        raise ConfigError(
            "webhooks.max_alerts_per_message, max_messages_per_minute and attempts must be >= 1"
        )
    for name, (_, url) in hooks.targets().items():  # a name used twice is an error too
        if (problem := check_url(url)) is not None:
            raise ConfigError(f"webhooks: the webhook {name!r} cannot be used: {problem}")
    return conf
