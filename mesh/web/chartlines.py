"""The dashboard's chart lines from a node's journal buckets, with their gaps.

``JournalReader.series`` gives only the buckets in which tasks finished. A chart that
joined those points would draw a straight line over a stretch with no data (the
node was down, or idle): it looks like work went on at a steady pace. Here every
bucket of the window gets a point, and a point with no value (None, ``null`` in
JSON) breaks the line (mesh/web/static/chart.js):

* throughput: the tasks finished per second in the bucket; 0 in a bucket with none
  while the node was running (``up_since``, its start), no value before it started
  (it may have been down: nobody can tell from the journal);
* latency (p95): no value in a bucket where nothing finished.
"""
from __future__ import annotations

from collections.abc import Sequence

Point = list[float | None]      # [bucket middle (unix s), value or None: a gap]


def chart_lines(rows: Sequence[Sequence[float]], since: float, until: float, step: int,
                up_since: float) -> dict[str, list[Point]]:
    """``rows``: ``series(since, step)``'s ``[bucket start, finished, mean, max, p50,
    p95]``; one point per bucket, at its middle, from the one holding ``since`` to the
    one holding ``until`` (now). ``{"rate": [...], "latency": [...]}``."""
    step = max(1, int(step))
    by_bucket: dict[int, Sequence[float]] = {int(r[0] // step): r for r in rows}
    rate: list[Point] = []
    latency: list[Point] = []
    for b in range(int(since // step), int(until // step) + 1):
        start = float(b * step)
        mid = min(start + step / 2, until)     # the bucket under way: at ``until``
        row = by_bucket.get(b)
        if row is not None:
            rate.append([mid, row[1] / step])
            latency.append([mid, row[5]])
        else:
            rate.append([mid, 0.0 if start + step > up_since else None])
            latency.append([mid, None])
    return {"rate": rate, "latency": latency}

