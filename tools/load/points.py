"""k6's raw points (its JSON output, one line a point) read back into what
the verdicts, the checker and the plots use.

Only the metrics used are decoded: a line's metric name is matched before
its JSON is, so a long run's millions of lines read in seconds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

WANTED = (
    "http_req_duration",
    "vus",
    "load_acked",
    "load_ws_received",
    "load_ws_watch",
    "load_ws_gap",
    "load_ws_delivery_ms",
    "load_ws_opened",
    "load_ws_errors",
)
_PREFIXES = tuple(f'{{"metric":"{name}","type":"Point"'.encode() for name in WANTED)


@dataclass(frozen=True)
class Ack:
    """A write the server answered 2xx: a post, a message or a like."""

    kind: str
    id: str
    post: str
    user: str
    t: float


@dataclass(frozen=True)
class Watch:
    """A watcher's hold of a post, from its first subscription's ack to its
    end (unix s), across reconnects."""

    id: str
    post: str
    start: float
    end: float


@dataclass
class Points:
    # Every HTTP request: when it ended (unix s), its duration (ms), whether
    # its status was an error (not 2xx or 3xx), and its name (load.js's).
    t: npt.NDArray[np.float64]
    ms: npt.NDArray[np.float64]
    failed: npt.NDArray[np.bool_]
    names: list[str]
    vus: list[tuple[float, float]] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    received: set[tuple[str, str]] = field(default_factory=set)
    watches: list[Watch] = field(default_factory=list)
    # The watches the server told of a gap.
    gaps: set[str] = field(default_factory=set)
    # Each message event a watcher got: when, and after how long (ms).
    delivery: list[tuple[float, float]] = field(default_factory=list)
    sockets_opened: int = 0
    socket_errors: int = 0


def _time(text: str) -> float:
    """Unix seconds of k6's RFC 3339 time (nanoseconds: microseconds are kept)."""
    return dt.datetime.fromisoformat(text).timestamp()


def _lines(path: Path) -> Iterator[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as lines:
        yield from lines


def read(path: Path) -> Points:
    t: list[float] = []
    ms: list[float] = []
    failed: list[bool] = []
    names: list[str] = []
    points = Points(np.empty(0), np.empty(0), np.empty(0, dtype=bool), [])
    for line in _lines(path):
        if not line.startswith(_PREFIXES):
            continue
        point = json.loads(line)
        metric, data = point["metric"], point["data"]
        tags = data.get("tags") or {}
        at = _time(data["time"])
        if metric == "http_req_duration":
            t.append(at)
            ms.append(data["value"])
            failed.append(tags.get("expected_response") == "false")
            names.append(tags.get("name", "?"))
        elif metric == "vus":
            points.vus.append((at, data["value"]))
        elif metric == "load_acked":
            points.acks.append(Ack(tags["kind"], tags["id"], tags["post"], tags["user"], at))
        elif metric == "load_ws_received":
            points.received.add((tags["watch"], tags["message"]))
        elif metric == "load_ws_watch":
            start, end = int(tags["from"]) / 1000, int(tags["to"]) / 1000
            points.watches.append(Watch(tags["watch"], tags["post"], start, end))
        elif metric == "load_ws_gap":
            points.gaps.add(tags["watch"])
        elif metric == "load_ws_delivery_ms":
            points.delivery.append((at, data["value"]))
        elif metric == "load_ws_opened":
            points.sockets_opened += 1
        elif metric == "load_ws_errors":
            points.socket_errors += 1
    order = np.argsort(np.array(t))
    points.t = np.array(t)[order]
    points.ms = np.array(ms)[order]
    points.failed = np.array(failed, dtype=bool)[order]
    points.names = [names[i] for i in order]
    return points
