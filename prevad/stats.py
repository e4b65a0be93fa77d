"""Store statistics: counts by category, split, source, stage status; duration distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from prevad import queries
from prevad.store import Store


@dataclass(slots=True)
class StoreStats:
    """Statistics tables of a store (all pa.Table) plus a duration summary."""

    datasets: pa.Table
    categories: pa.Table
    splits: pa.Table
    sources: pa.Table
    stages: pa.Table
    durations: np.ndarray
    videos_total: int

    def duration_summary(self) -> dict[str, float | int | None]:
        """count, missing (null), min, median, mean, p90, max of video durations (seconds)."""
        d = self.durations
        out: dict[str, float | int | None] = {"count": int(d.size),
                                              "missing": self.videos_total - int(d.size)}
        for k, f in (("min", np.min), ("median", np.median), ("mean", np.mean),
                     ("p90", lambda x: np.percentile(x, 90)), ("max", np.max)):
            out[k] = float(f(d)) if d.size else None
        return out


def compute_stats(store: Store) -> StoreStats:
    """Run the statistics queries over a store."""
    durations = store.query(queries.DURATIONS).column("duration_s").to_numpy()
    total = store.query(queries.VIDEO_COUNT).column("n")[0].as_py()
    return StoreStats(
        datasets=store.query(queries.DATASET_COUNTS, {"dataset": None, "split": None}),
        categories=store.query(queries.COUNTS_BY_CATEGORY),
        splits=store.query(queries.COUNTS_BY_SPLIT),
        sources=store.query(queries.COUNTS_BY_SOURCE),
        stages=store.query(queries.COUNTS_BY_STAGE_STATUS, {"stage": None}),
        durations=np.asarray(durations, dtype=np.float64),
        videos_total=int(total),
    )


def markdown_table(tbl: pa.Table, max_rows: int | None = None) -> str:
    """A pa.Table as a GitHub Markdown table ("_none_" when empty)."""
    if tbl.num_rows == 0:
        return "_none_\n"
    rows = tbl.to_pylist()[:max_rows]
    head = "| " + " | ".join(tbl.column_names) + " |\n"
    sep = "|" + "|".join("---" for _ in tbl.column_names) + "|\n"
    body = "".join(
        "| " + " | ".join(_cell(r[c]) for c in tbl.column_names) + " |\n" for r in rows
    )
    more = f"\n_{tbl.num_rows - len(rows)} more rows_\n" if len(rows) < tbl.num_rows else ""
    return head + sep + body + more


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v).replace("|", "\\|")
