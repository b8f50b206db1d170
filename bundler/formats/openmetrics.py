"""ztunnel's metrics exposition (port 15020): render it as ztunnel writes it, and parse it (formats.md §1.2, §6).

ztunnel encodes with the Rust ``prometheus-client`` crate's OpenMetrics text encoder:

* ``# HELP <name> <help>.``: the crate appends a period to the registered help text;
* ``# TYPE <name> counter`` (no ``_total`` on HELP/TYPE lines), then ``# UNIT <name> <unit>`` for metrics registered
  with a unit (the name then ends in ``_<unit>``, e.g. ``istio_xds_message_bytes``);
* samples ``<name>_total{k="v",...} N`` for counters, ``<name>{...} N`` for gauges; histograms write ``_sum``,
  ``_count`` and then the cumulative ``_bucket{...,le="..."}`` lines; a family without labels has no braces;
* integers without a decimal point, floats like Rust (``1.0``, ``0.0005``), label values escaped (``\\\\``, ``\\"``,
  ``\\n``); empty families are left out (crate >= 0.24.1); the body ends with ``# EOF\\n``.

Parsing uses prometheus_client's OpenMetrics parser, so counters keep their type (the classic parser splits them into
``unknown`` families, python-stack.md §6). Text without ``# EOF`` (a truncated scrape, or classic Prometheus text) is
tried with the OpenMetrics parser first and then with the classic one. Any parse failure is a :class:`ValueError` with
a one-line message.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bundler.formats.ztunnel_log import rust_float

__all__ = [
    "COMMON_TRAFFIC_LABELS",
    "LOCALITY_TRAFFIC_LABELS",
    "ZTUNNEL_METRICS",
    "MetricFamily",
    "MetricInfo",
    "ParsedFamily",
    "ParsedSample",
    "Sample",
    "format_value",
    "histogram_samples",
    "parse",
    "render",
    "samples",
    "traffic_labels",
    "ztunnel_family",
]

COMMON_TRAFFIC_LABELS: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
)
"""ztunnel's CommonTrafficLabels in encoding order (formats.md §6, ``Z:src/proxy/metrics.rs:258-311``)."""

LOCALITY_TRAFFIC_LABELS: tuple[str, ...] = ("source_region", "source_zone", "destination_region", "destination_zone")
"""Appended after :data:`COMMON_TRAFFIC_LABELS` (>= 1.25), only when a source/destination is known."""

UNKNOWN = "unknown"
"""The value ztunnel writes for a missing label value."""


@dataclass(frozen=True)
class MetricInfo:
    """A ztunnel metric family as registered: exposed family name, type, help (without the period), unit."""

    name: str
    type: str
    help: str
    unit: str = ""


def _catalog(*infos: MetricInfo) -> dict[str, MetricInfo]:
    return {i.name: i for i in infos}


ZTUNNEL_METRICS: dict[str, MetricInfo] = _catalog(
    # Help texts from ztunnel's registrations (src/proxy/metrics.rs, src/xds/metrics.rs, src/metrics/meta.rs,
    # src/inpod/metrics.rs). The two marked "not verified" were not found upstream and are written in the same style.
    MetricInfo("istio_tcp_connections_opened", "counter", "The total number of TCP connections opened"),
    MetricInfo("istio_tcp_connections_closed", "counter", "The total number of TCP connections closed"),
    MetricInfo(
        "istio_tcp_received_bytes", "counter",
        "The size of total bytes received during request in case of a TCP connection",
    ),
    MetricInfo(
        "istio_tcp_sent_bytes", "counter", "The size of total bytes sent during response in case of a TCP connection"
    ),
    MetricInfo(  # not verified
        "istio_tcp_connections_failed", "counter", "The total number of TCP connections that failed (unstable)"
    ),
    MetricInfo("istio_tcp_sockets_open", "gauge", "The current number of open TCP sockets (unstable)"),  # not verified
    MetricInfo("istio_build", "gauge", "Istio component build info"),
    MetricInfo(
        "istio_xds_connection_terminations", "counter",
        "The total number of completed connections to xds server (unstable)",
    ),
    MetricInfo("istio_xds_message", "counter", "Total number of messages received (unstable)"),
    MetricInfo("istio_xds_message_bytes", "counter", "Total number of bytes received (unstable)", unit="bytes"),
    MetricInfo(
        "workload_manager_active_proxy_count", "gauge",
        "The total number current workloads with active proxies (unstable)",
    ),
    MetricInfo(
        "workload_manager_pending_proxy_count", "gauge",
        "The total number current workloads with pending proxies (unstable)",
    ),
    MetricInfo(
        "workload_manager_proxies_started", "counter", "The total number of proxies that were started (unstable)"
    ),
    MetricInfo(
        "workload_manager_proxies_stopped", "counter", "The total number of proxies that were stopped (unstable)"
    ),
)
"""The ztunnel families the synthetic mesh writes, keyed by exposed family name (without ``_total``)."""


# ---------------------------------------------------------------------------------------------------------------------
# Rendering

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Sample:
    """One sample line.

    Attributes:
        labels: label pairs in encoding order.
        value: ``int`` (written without a decimal point) or ``float``.
        suffix: appended to the family name; ``None`` means ``_total`` for a counter and nothing otherwise.
            Histogram samples use ``_sum``, ``_count``, ``_bucket`` (see :func:`histogram_samples`).
    """

    labels: Labels = ()
    value: int | float = 0
    suffix: str | None = None


@dataclass(frozen=True)
class MetricFamily:
    """A metric family to render.

    Attributes:
        name: exposed family name without ``_total`` (including the unit suffix, if any).
        type: ``counter``, ``gauge``, ``histogram`` (or ``unknown``/``info``/``summary``/…, passed through).
        help: the help text as registered, **without** the period the crate appends.
        samples: the samples, in order.
        unit: ``# UNIT`` value (``bytes``, ``seconds``), or ``""`` for none.
    """

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...] = ()
    unit: str = ""


def traffic_labels(values: Mapping[str, str], *, locality: bool = False) -> Labels:
    """CommonTrafficLabels in encoding order; a label not given is ``unknown``.

    The four locality labels are added when ``locality`` is true or any of them is given.

    Raises:
        ValueError: an unknown label name.
    """
    allowed = set(COMMON_TRAFFIC_LABELS) | set(LOCALITY_TRAFFIC_LABELS)
    unknown = set(values) - allowed
    if unknown:
        raise ValueError(f"not traffic labels: {', '.join(sorted(unknown))}")
    names = COMMON_TRAFFIC_LABELS
    if locality or any(k in values for k in LOCALITY_TRAFFIC_LABELS):
        names += LOCALITY_TRAFFIC_LABELS
    return tuple((k, str(values.get(k, UNKNOWN))) for k in names)


def histogram_samples(
    labels: Labels, bounds: Sequence[float], counts: Sequence[int], total: float
) -> tuple[Sample, ...]:
    """The samples of one histogram series in the crate's order: ``_sum``, ``_count``, then cumulative buckets.

    Args:
        labels: the series labels (``le`` is appended for buckets).
        bounds: finite upper bounds, ascending (``+Inf`` is added).
        counts: per-bucket (non-cumulative) observation counts, one per bound plus optionally one for ``+Inf``.
        total: the sum of the observed values.
    """
    if len(counts) not in (len(bounds), len(bounds) + 1):
        raise ValueError("counts must have one entry per bound (plus optionally one for +Inf)")
    count = sum(counts)
    out = [Sample(labels, float(total), "_sum"), Sample(labels, count, "_count")]
    cumulative = 0
    for bound, c in zip(bounds, counts):
        cumulative += c
        out.append(Sample(labels + (("le", rust_float(float(bound))),), cumulative, "_bucket"))
    out.append(Sample(labels + (("le", "+Inf"),), count, "_bucket"))
    return tuple(out)


def ztunnel_family(name: str, samples: Iterable[Sample]) -> MetricFamily:
    """A :class:`MetricFamily` for a family of :data:`ZTUNNEL_METRICS` (type, help and unit filled in)."""
    info = ZTUNNEL_METRICS[name]
    return MetricFamily(info.name, info.type, info.help, tuple(samples), info.unit)


def format_value(value: int | float) -> str:
    """A sample value: integers as digits, floats as Rust prints them (``1.0``), ``NaN``, ``+Inf``, ``-Inf``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return rust_float(value)


def _escape_label_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _sample_line(fam: MetricFamily, s: Sample) -> str:
    suffix = s.suffix if s.suffix is not None else ("_total" if fam.type == "counter" else "")
    labels = ""
    if s.labels:
        labels = "{" + ",".join(f'{k}="{_escape_label_value(str(v))}"' for k, v in s.labels) + "}"
    return f"{fam.name}{suffix}{labels} {format_value(s.value)}"


def render(families: Iterable[MetricFamily], *, omit_empty: bool = True) -> str:
    """The exposition text, ending with ``# EOF\\n``.

    Args:
        families: families in output order.
        omit_empty: leave out families without samples, as prometheus-client >= 0.24.1 does.
    """
    lines: list[str] = []
    for fam in families:
        if omit_empty and not fam.samples:
            continue
        lines.append(f"# HELP {fam.name} {_escape_help(fam.help)}.")
        lines.append(f"# TYPE {fam.name} {fam.type}")
        if fam.unit:
            lines.append(f"# UNIT {fam.name} {fam.unit}")
        lines.extend(_sample_line(fam, s) for s in fam.samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class ParsedSample:
    """A parsed sample: full sample name (``..._total``, ``..._bucket``), labels, value (int if written as one)."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    value: int | float = 0


@dataclass(frozen=True)
class ParsedFamily:
    """A parsed family: name (counters without ``_total``), type, help as written (with the period), unit, samples."""

    name: str
    type: str
    help: str
    unit: str
    samples: tuple[ParsedSample, ...]


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else type(e).__name__
    return msg if len(msg) <= 200 else msg[:197] + "..."


def _convert(metrics: Iterable[object]) -> list[ParsedFamily]:
    out = []
    for m in metrics:
        out.append(
            ParsedFamily(
                m.name,  # type: ignore[attr-defined]
                m.type,  # type: ignore[attr-defined]
                m.documentation,  # type: ignore[attr-defined]
                getattr(m, "unit", "") or "",
                tuple(ParsedSample(s.name, dict(s.labels), s.value) for s in m.samples),  # type: ignore[attr-defined]
            )
        )
    return out


def _has_eof(text: str) -> bool:
    tail = text.rstrip("\n")
    return tail.endswith("# EOF") and (len(tail) == 5 or tail[-6] == "\n")


def parse(text: str | bytes) -> list[ParsedFamily]:
    """Parse an exposition (OpenMetrics, or classic Prometheus text when there is no ``# EOF``).

    Raises:
        ValueError: the text is not a valid exposition (one-line message).
    """
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
    from prometheus_client.parser import text_string_to_metric_families as classic_parse

    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"invalid metrics text: not UTF-8 ({_one_line(e)})") from None
    if _has_eof(text):
        try:
            return _convert(om_parse(text.rstrip("\n") + "\n"))
        except Exception as e:  # noqa: BLE001 - the parser raises ValueError, but also others on odd input
            raise ValueError(f"invalid OpenMetrics text: {_one_line(e)}") from None
    try:
        sep = "" if not text or text.endswith("\n") else "\n"
        return _convert(om_parse(text + sep + "# EOF\n"))
    except Exception:  # noqa: BLE001 - not OpenMetrics: try the classic format
        pass
    try:
        return _convert(classic_parse(text))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"invalid Prometheus text: {_one_line(e)}") from None


def samples(source: str | bytes | Sequence[ParsedFamily], name: str) -> list[tuple[dict[str, str], int | float]]:
    """``(labels, value)`` of every sample called ``name``.

    ``name`` may be a sample name (``istio_tcp_connections_opened_total``) or a counter/gauge family name
    (``istio_tcp_connections_opened``). ``source`` is exposition text or the result of :func:`parse`.

    Raises:
        ValueError: ``source`` is text that does not parse.
    """
    families = parse(source) if isinstance(source, (str, bytes)) else source
    wanted = {name}
    for fam in families:
        if fam.name == name and fam.type == "counter":
            wanted.add(name + "_total")
    return [(dict(s.labels), s.value) for fam in families for s in fam.samples if s.name in wanted]
