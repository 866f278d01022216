"""Raw MIMIC-IV tables -> per-patient timelines, stored as Parquet shards by subject_id.

Two passes, both streaming in DuckDB with a memory limit, so the cost in memory depends on the shard
size, not on the cohort size:

1. **stage**: each event type's query (``events.py``) is run once over its CSV and written as Parquet
   partitioned by shard (``subject_id % num_shards``).
2. **shard**: per shard, records are grouped into events (one table at one timestamp), ordered, numbered
   and written to ``shard-NNNNN.parquet``.

Every output is written to a temporary name and renamed, so a killed build leaves only finished pieces.
Re-running resumes: staged tables and finished shards are kept, partial ones rebuilt. When the inputs,
the event definitions or the sharding changed, the old timelines are replaced (with a warning); a
non-empty directory that holds no timeline build is never touched.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
from tqdm.auto import tqdm

from ehrr1.data.events import DEMOGRAPHIC_FIELDS, DEMOGRAPHICS, EVENT_RANK, EVENT_SOURCES, EventSource
from ehrr1.data.reader import MimicReader
from ehrr1.utils import atomic_write_json, digest, file_fingerprint, read_json, replace_dir

log = logging.getLogger(__name__)

BUILDER_VERSION = 1
MANIFEST = "manifest.json"
BUILD_STATE = "build.json"


@dataclass
class TimelineBuildSettings:
    patients_per_shard: int = 2000
    memory_limit: str = "4GB"
    threads: int = 0  # 0: DuckDB's default (all cores)
    keep_staging: bool = False


class TimelineBuildError(RuntimeError):
    """The output directory holds something other than a timeline build."""


def shard_path(root: Path, shard: int) -> Path:
    return root / f"shard-{shard:05d}.parquet"


def _quote(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _connect(settings: TimelineBuildSettings, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {_quote(settings.memory_limit)}")
    con.execute(f"SET temp_directory = {_quote(spill_dir)}")
    con.execute("SET preserve_insertion_order = false")
    if settings.threads > 0:
        con.execute(f"SET threads = {int(settings.threads)}")
    return con


def _group_events(source_dir: Path, event_type: str, fields: tuple[str, ...]) -> str:
    packed = ", ".join(f"{f} := {f}" for f in fields)
    order = ", ".join(fields)
    return (
        f"SELECT subject_id, time, '{event_type}' AS event_type, {EVENT_RANK[event_type]} AS type_rank, "
        f"min(hadm_id) AS hadm_id, min(stay_id) AS stay_id, count(*)::INTEGER AS n_records, "
        f"to_json(list(struct_pack({packed}) ORDER BY {order})) AS records "
        f"FROM read_parquet({_quote(source_dir / '*.parquet')}) WHERE time IS NOT NULL GROUP BY subject_id, time"
    )


class TimelineBuilder:
    def __init__(self, reader: MimicReader, out_dir: str | Path, settings: TimelineBuildSettings | None = None):
        self.reader = reader
        self.out = Path(out_dir)
        self.settings = settings or TimelineBuildSettings()
        self.staging = self.out / "_staging"
        self.sources = [s for s in EVENT_SOURCES if all(reader.has(t) for t in s.tables)]
        self.skipped = [s.event_type for s in EVENT_SOURCES if s not in self.sources]

    # ---- bookkeeping ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        return digest(
            {
                "builder": BUILDER_VERSION,
                "inputs": file_fingerprint(self.reader.paths.values()),
                "events": [(s.event_type, s.query, s.fields) for s in self.sources],
                "patients_per_shard": self.settings.patients_per_shard,
            }
        )

    def is_complete(self) -> bool:
        manifest = self.out / MANIFEST
        return manifest.exists() and read_json(manifest).get("fingerprint") == self.fingerprint()

    def _claim_output(self) -> None:
        """Start or resume a build in ``self.out``: rebuild when inputs changed, never touch foreign files."""
        state_path = self.out / BUILD_STATE
        fingerprint = self.fingerprint()
        if self.out.exists() and any(self.out.iterdir()):
            if not state_path.exists():
                raise TimelineBuildError(
                    f"{self.out} is not empty and holds no timeline build ({BUILD_STATE} missing): choose another "
                    "directory (timelines.dir) or empty it"
                )
            if read_json(state_path).get("fingerprint") != fingerprint:
                log.warning("inputs or settings of the timelines in %s changed: rebuilding them", self.out)
                shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        for leftover in self.out.rglob("*.tmp"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        atomic_write_json(state_path, {"fingerprint": fingerprint})

    # ---- pass 1: stage each event type partitioned by shard ----------------------------------------
    def _stage(self, con: duckdb.DuckDBPyConnection, name: str, query: str, num_shards: int) -> int:
        final = self.staging / name
        marker = self.staging / f"{name}.done.json"
        if marker.exists() and final.exists():
            return read_json(marker)["rows_without_time"]
        tmp = self.staging / f"{name}.tmp"
        con.execute(
            f"COPY (SELECT *, subject_id % {num_shards} AS shard FROM ({query}) WHERE subject_id IS NOT NULL) "
            f"TO {_quote(tmp)} (FORMAT parquet, PARTITION_BY (shard), OVERWRITE_OR_IGNORE)"
        )
        if not tmp.exists():  # no rows at all
            tmp.mkdir(parents=True)
        replace_dir(tmp, final)
        untimed = 0
        if name != DEMOGRAPHICS and any(final.iterdir()):
            untimed = con.execute(
                f"SELECT count(*) FROM read_parquet({_quote(final / '*' / '*.parquet')}) WHERE time IS NULL"
            ).fetchone()[0]
        atomic_write_json(marker, {"rows_without_time": untimed})
        return untimed

    # ---- pass 2: group, order and number events per shard --------------------------------------------
    def _build_shard(self, con: duckdb.DuckDBPyConnection, shard: int) -> None:
        final = shard_path(self.out, shard)
        if final.exists():
            return
        parts = []
        for source in self.sources:
            directory = self.staging / source.event_type / f"shard={shard}"
            if directory.exists():
                parts.append(_group_events(directory, source.event_type, source.fields))
        patients = self.staging / DEMOGRAPHICS / f"shard={shard}"
        tmp = final.with_name(final.name + ".tmp")
        if not parts or not patients.exists():
            con.execute(
                "COPY (SELECT NULL::BIGINT AS subject_id, NULL::INTEGER AS event_idx, NULL::TIMESTAMP AS time, "
                "NULL::VARCHAR AS event_type, NULL::BIGINT AS hadm_id, NULL::BIGINT AS stay_id, "
                f"NULL::INTEGER AS n_records, NULL::VARCHAR AS records LIMIT 0) TO {_quote(tmp)} (FORMAT parquet)"
            )
        else:
            demo = ", ".join(f"{f} := p.{f}" for f in DEMOGRAPHIC_FIELDS)
            con.execute(f"""
            COPY (
              WITH ev AS ({" UNION ALL ".join(parts)}),
              demo AS (
                SELECT p.subject_id, f.t0 AS time, '{DEMOGRAPHICS}' AS event_type, 0 AS type_rank,
                       NULL::BIGINT AS hadm_id, NULL::BIGINT AS stay_id, 1 AS n_records,
                       to_json([struct_pack({demo})]) AS records
                FROM read_parquet({_quote(patients / "*.parquet")}) p
                JOIN (SELECT subject_id, min(time) AS t0 FROM ev GROUP BY subject_id) f USING (subject_id)),
              allev AS (SELECT * FROM ev UNION ALL SELECT * FROM demo)
              SELECT subject_id,
                     (row_number() OVER (PARTITION BY subject_id ORDER BY time, type_rank) - 1)::INTEGER AS event_idx,
                     time, event_type, hadm_id, stay_id, n_records, records
              FROM allev ORDER BY subject_id, event_idx
            ) TO {_quote(tmp)} (FORMAT parquet, ROW_GROUP_SIZE 20000)""")
        tmp.replace(final)

    # ---- driver -----------------------------------------------------------------------------------
    def build(self, progress: bool = True) -> dict:
        if self.is_complete():
            log.info("timelines in %s are up to date", self.out)
            return read_json(self.out / MANIFEST)
        self._claim_output()
        started = time.time()
        con = _connect(self.settings, self.out / "_spill")
        self.reader.register(con)
        n_patients = con.execute("SELECT count(DISTINCT subject_id) FROM patients").fetchone()[0]
        num_shards = max(1, math.ceil(n_patients / self.settings.patients_per_shard))
        log.info("building timelines of %d patients in %d shard(s) -> %s", n_patients, num_shards, self.out)
        if self.skipped:
            log.warning("event types skipped (their tables are absent): %s", ", ".join(self.skipped))
        self.staging.mkdir(parents=True, exist_ok=True)
        untimed: dict[str, int] = {}
        stages: list[tuple[str, EventSource | None]] = [
            (DEMOGRAPHICS, None),
            *((s.event_type, s) for s in self.sources),
        ]
        for name, source in tqdm(stages, desc="stage tables", disable=not progress):
            query = self.reader.typed_select("patients") if source is None else source.query
            tables = ["patients"] if source is None else list(source.tables)
            try:
                untimed[name] = self._stage(con, name, query, num_shards)
            except duckdb.ConversionException as exc:
                raise self.reader.explain_failure(tables, exc) from exc
            if untimed[name]:
                log.warning("%s: %d record(s) without a time were left out of the timelines", name, untimed[name])
        for shard in tqdm(range(num_shards), desc="build shards", disable=not progress):
            self._build_shard(con, shard)
        stats = self._statistics(con, num_shards)
        con.close()
        manifest = {
            "fingerprint": self.fingerprint(),
            "builder_version": BUILDER_VERSION,
            "num_shards": num_shards,
            "shard_rule": "subject_id % num_shards",
            "n_patients": stats.pop("n_patients"),
            "event_types": [DEMOGRAPHICS, *(s.event_type for s in self.sources)],
            "skipped_event_types": self.skipped,
            "missing_modules": self.reader.missing_modules,
            "records_without_time": {k: v for k, v in untimed.items() if v},
            "settings": asdict(self.settings),
            "build_seconds": round(time.time() - started, 2),
            **stats,
        }
        atomic_write_json(self.out / MANIFEST, manifest)
        if not self.settings.keep_staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.out / "_spill", ignore_errors=True)
        return manifest

    def _statistics(self, con: duckdb.DuckDBPyConnection, num_shards: int) -> dict:
        files = ", ".join(_quote(shard_path(self.out, s)) for s in range(num_shards))
        rows = con.execute(
            f"SELECT event_type, count(*), sum(n_records), count(DISTINCT subject_id) FROM read_parquet([{files}]) "
            "GROUP BY event_type ORDER BY event_type"
        ).fetchall()
        per_type = {r[0]: {"events": r[1], "records": int(r[2]), "patients": r[3]} for r in rows}
        return {
            "n_patients": per_type.get(DEMOGRAPHICS, {}).get("patients", 0),
            "n_events": sum(v["events"] for v in per_type.values()),
            "n_records": sum(v["records"] for v in per_type.values()),
            "per_event_type": per_type,
        }


def build_timelines(
    reader: MimicReader, out_dir: str | Path, settings: TimelineBuildSettings | None = None, progress: bool = True
) -> dict:
    """Build (or resume, or reuse) the timelines of ``reader``'s tables in ``out_dir``; return the manifest."""
    return TimelineBuilder(reader, out_dir, settings).build(progress=progress)
