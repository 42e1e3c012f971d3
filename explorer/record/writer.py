"""Writes a run folder: the JSON manifest and Parquet parts, flushed every N steps, atomically.

No torch here: the importer of the authors' logs and tests use the writer without a model.
Layout and table names: explorer/runs/schema.py.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
import sys
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from explorer.runs import schema


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def package_versions(names: Iterable[str] = ("explorer", "torch", "transformers", "peft", "tokenizers",
                                              "datasets", "pyarrow", "duckdb", "pandas")) -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, default=str, sort_keys=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_parquet_atomic(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, tmp)
    os.replace(tmp, path)


class RunWriter:
    """Owns one run folder.

    >>> w = RunWriter.create(runs_dir, run_id, manifest)   # writes run.json with status running
    >>> w.write_samples(rows)                               # samples.parquet
    >>> w.log("decisions", rows); w.log("steps", [row])     # buffered
    >>> w.flush()                                           # one new part per non-empty table
    >>> w.finish(summary)   /   w.fail(exc)
    """

    def __init__(self, run_dir: Path, manifest: dict[str, Any]):
        self.run_dir = Path(run_dir)
        self.run_id = manifest["run_id"]
        self.manifest = manifest
        self._buffers: dict[str, list[dict]] = {}
        self._next_part: dict[str, int] = {}
        for d in self.run_dir.iterdir() if self.run_dir.exists() else []:
            if d.is_dir():
                parts = sorted(d.glob("part-*.parquet"))
                if parts:
                    self._next_part[d.name] = int(parts[-1].stem.split("-")[1]) + 1

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, runs_dir: str | Path, run_id: str, manifest: dict[str, Any],
               status: str = schema.STATUS_RUNNING) -> "RunWriter":
        run_dir = Path(runs_dir) / run_id
        if (run_dir / schema.MANIFEST).exists():
            raise FileExistsError(f"{run_dir}: a run folder with this id already exists")
        run_dir.mkdir(parents=True, exist_ok=True)
        m = {
            "run_id": run_id,
            "status": status,
            "created_at": _now(),
            "updated_at": _now(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "platform": platform.platform(),
            "versions": package_versions(),
            **manifest,
        }
        m["run_id"] = run_id
        m["status"] = status
        w = cls(run_dir, m)
        w.write_manifest()
        return w

    @classmethod
    def open(cls, run_dir: str | Path) -> "RunWriter":
        """Re-open an existing run folder (to resume it)."""
        run_dir = Path(run_dir)
        with open(run_dir / schema.MANIFEST, encoding="utf-8") as f:
            manifest = json.load(f)
        return cls(run_dir, manifest)

    # -- manifest -------------------------------------------------------------------------------
    def write_manifest(self) -> None:
        self.manifest["updated_at"] = _now()
        write_json_atomic(self.run_dir / schema.MANIFEST, self.manifest)

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.write_manifest()

    # -- tables ---------------------------------------------------------------------------------
    def write_samples(self, rows: list[dict] | pd.DataFrame) -> None:
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        write_parquet_atomic(self.run_dir / schema.SAMPLES, df)

    def write_table(self, name: str, rows: list[dict] | pd.DataFrame) -> None:
        """A static (non-partitioned) table: <run>/<name>.parquet, e.g. pact_tokens, cwac_spectra."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if "run_id" not in df.columns:
            df.insert(0, "run_id", self.run_id)
        write_parquet_atomic(self.run_dir / f"{name}.parquet", df)

    def log(self, table: str, rows: list[dict] | dict) -> None:
        """Buffer rows for a partitioned table; they land on disk at the next flush()."""
        if isinstance(rows, dict):
            rows = [rows]
        if not rows:
            return
        buf = self._buffers.setdefault(table, [])
        for r in rows:
            if "run_id" not in r:
                r = {"run_id": self.run_id, **r}
            buf.append(r)

    def flush(self) -> list[Path]:
        """Write one new part per table with buffered rows. Returns the paths written."""
        written = []
        for table, rows in self._buffers.items():
            if not rows:
                continue
            n = self._next_part.get(table, 0)
            path = self.run_dir / table / f"part-{n:05d}.parquet"
            write_parquet_atomic(path, pd.DataFrame(rows))
            self._next_part[table] = n + 1
            written.append(path)
        self._buffers = {}
        return written

    def next_parts(self) -> dict[str, int]:
        """table -> the number of the next part to write (a checkpoint stores it to truncate on resume)."""
        return dict(self._next_part)

    def truncate_parts(self, next_part: dict[str, int]) -> None:
        """Remove parts numbered at or after `next_part[table]` (records past a checkpoint)."""
        for d in self.run_dir.iterdir():
            if not d.is_dir() or d.name.startswith("checkpoint") or d.name in schema.ANALYSIS_TABLES:
                continue   # checkpoints and replays are not records of the training past the checkpoint
            keep_below = next_part.get(d.name, 0)
            for part in d.glob("part-*.parquet"):
                if int(part.stem.split("-")[1]) >= keep_below:
                    part.unlink()
            self._next_part[d.name] = keep_below
        self._buffers = {}

    # -- end states -----------------------------------------------------------------------------
    def finish(self, **fields: Any) -> None:
        self.flush()
        self.manifest.update(fields)
        self.manifest["status"] = self.manifest.get("final_status", schema.STATUS_COMPLETE)
        self.manifest.pop("final_status", None)
        self.manifest["ended_at"] = _now()
        self.write_manifest()

    def fail(self, error: BaseException | str) -> None:
        """Mark the run failed; keeps every flushed part and flushes what is buffered."""
        try:
            self.flush()
        finally:
            self.manifest["status"] = schema.STATUS_FAILED
            self.manifest["error"] = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
            self.manifest["ended_at"] = _now()
            self.write_manifest()


class FollowerWriter:
    """What a rank other than 0 holds in a run of several processes (torchrun): rank 0's RunWriter
    owns the folder, so rows logged here are dropped (the recipe gathers per-sample rows to rank 0
    before logging them) and manifest updates stay in memory. `fail` is the exception: a rank that
    fails writes its error beside the manifest (failed_rank<N>.json) and marks the run failed, so
    the folder says which rank broke and why even when rank 0 is killed while waiting for it."""

    def __init__(self, run_dir: str | Path, rank: int):
        self.run_dir = Path(run_dir)
        self.rank = rank
        p = self.run_dir / schema.MANIFEST
        self.manifest: dict[str, Any] = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        self.run_id = self.manifest.get("run_id", self.run_dir.name)

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)

    def log(self, table: str, rows) -> None:
        return None

    def write_samples(self, rows) -> None:
        return None

    def write_table(self, name: str, rows) -> None:
        return None

    def flush(self) -> list[Path]:
        return []

    def next_parts(self) -> dict[str, int]:
        return {}

    def truncate_parts(self, next_part: dict[str, int]) -> None:
        return None

    def finish(self, **fields: Any) -> None:
        return None

    def fail(self, error: BaseException | str) -> None:
        msg = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        note = {"rank": self.rank, "error": msg, "host": socket.gethostname(), "pid": os.getpid(), "at": _now()}
        write_json_atomic(self.run_dir / f"failed_rank{self.rank}.json", note)
        p = self.run_dir / schema.MANIFEST
        try:
            m = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return
        if m.get("status") == schema.STATUS_RUNNING:
            m.update(status=schema.STATUS_FAILED, error=f"rank {self.rank}: {msg}", failed_rank=self.rank,
                     ended_at=_now(), updated_at=_now())
            write_json_atomic(p, m)


def other_ranks_failures(run_dir: str | Path) -> list[dict]:
    """The failed_rank<N>.json notes other ranks left (FollowerWriter.fail), by rank."""
    out = []
    for p in sorted(Path(run_dir).glob("failed_rank*.json")):
        try:
            out.append(json.loads(p.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError):
            continue
    return sorted(out, key=lambda n: n.get("rank", 0))
