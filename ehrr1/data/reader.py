"""Lazy, typed access to a MIMIC-IV directory through DuckDB.

Each table becomes a DuckDB view that reads only the columns ehrr1 needs (see ``schema.py``) straight
from ``<module>/<table>.csv(.gz)``; nothing is loaded into pandas. Problems with the input are raised
as :class:`MimicSchemaError` naming the file, column, line and offending value.

Rows that parse but cannot be true (an end before its start, an event long after death, an impossible age,
a row repeated whole, a timestamp with a UTC offset, an over-long text) are counted per table in one
aggregate pass (plus one grouped pass for repeated rows) and, by ``data.sanity.*``, refused, left out or
kept; see ``docs/data-sanity.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path

import duckdb

from ehrr1.config.data import DataSanity, OnImplausibleRows
from ehrr1.data.events import SOURCES
from ehrr1.data.schema import DUCKDB_TYPES, MODULES, OPTIONAL_MODULES, TABLES, TableSchema
from ehrr1.errors import UserError

log = logging.getLogger(__name__)

_EXPECTED_FORMAT = {
    "int": "an integer",
    "float": "a number",
    "timestamp": "a timestamp YYYY-MM-DD HH:MM:SS",
    "date": "a date YYYY-MM-DD",
}
# Value domains checked on top of the types: a wrong value here silently corrupts labels downstream.
_DOMAINS = {
    ("patients", "gender"): ("M", "F"),
    ("d_icd_diagnoses", "icd_version"): (9, 10),
    ("d_icd_procedures", "icd_version"): (9, 10),
    ("diagnoses_icd", "icd_version"): (9, 10),
    ("procedures_icd", "icd_version"): (9, 10),
    ("diagnosis", "icd_version"): (9, 10),
}
# Identifier columns that may never be empty.
_KEYS = ("subject_id", "itemid", "note_id")
_RELEASES = {"ed": "MIMIC-IV-ED", "note": "MIMIC-IV-Note"}
# Tables with one row per key that the others join on: a repeated key repeats everything joined to it.
PRIMARY_KEYS = {
    "patients": ("subject_id",),
    "admissions": ("hadm_id",),
    "icustays": ("stay_id",),
    "edstays": ("stay_id",),
}
# Tables without which no task has a sample: empty, they are an error whatever data.empty_tables says.
ESSENTIAL = ("patients", "admissions")
DUPLICATE_POLICIES = ("error", "drop", "keep")
EMPTY_POLICIES = ("error", "warn")
# Families of rows that cannot be true, each with its own data.sanity.<family> policy (error / drop / keep).
SANITY_FAMILIES = ("end_before_start", "after_death", "age_out_of_range", "repeated_rows", "timestamp_offset",
                   "long_text")  # fmt: skip
# (start, end) column pairs: a row whose end is before its start (where the schema has both columns)
SPANS = (("admittime", "dischtime"), ("intime", "outtime"), ("starttime", "stoptime"), ("starttime", "endtime"))
# a time of day followed by Z or +hh[:mm] / -hh[:mm]: an offset MIMIC-IV's naive local times never have
_OFFSET = r"[0-9]:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?\s*([zZ]|[+-][0-9]{2}(:?[0-9]{2})?)\s*$"
FIRST_LINES = 5  # line numbers a warning, an error and the manifest name per table and family
_DEATHS = "__ehrr1_deaths"  # temp table: each patient's earliest known death (dod or an admission's deathtime)


class MimicSchemaError(UserError, ValueError):
    """The MIMIC-IV input does not have the layout, columns or value types ehrr1 expects."""


def _csv_scan(path: Path) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', all_varchar=true, header=true, delim=',', quote='\"', escape='\"')"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _as_id(col: str) -> str:
    return f"TRY_CAST(TRY_CAST(trim({col}) AS DOUBLE) AS BIGINT)"


def _time(column: str) -> str:
    """A raw text cell of row ``t`` as a timestamp; NULL where it is missing or not one."""
    return f"TRY_CAST(t.{_ident(column)} AS TIMESTAMP)"


def _row_hash(columns: list[str], alias: str = "") -> str:
    """SQL for a 128-bit hash of a whole row (a missing cell differs from an empty one)."""
    cells = ", ".join(f"coalesce({alias}{_ident(c)}, chr(0))" for c in columns)
    return f"md5_number(concat_ws(chr(31), {cells}))"


def duckdb_reason(exc: BaseException) -> str:
    """DuckDB's own reason for an error, on one line: the lines that say what is wrong, without the quoted
    input line, the reader's option dump, its "Possible Solution" advice (options ehrr1 sets) and the SQL."""
    kept: list[str] = []
    for line in str(exc).splitlines():
        line = line.strip()
        if not line:
            if kept:
                break  # the first paragraph holds the reason; settings, advice and SQL follow
            continue
        if line.startswith(("Original Line:", "Possible Solution:", "LINE ")) or set(line) <= {"^", " "}:
            continue
        kept.append(line if len(line) <= 300 else line[:300] + "...")
    return ": ".join(kept) or type(exc).__name__


@dataclass(frozen=True)
class _Check:
    """One way a row of a table cannot be true: a SQL condition on the raw text row ``t`` (and ``d.__death``,
    the patient's death, where ``death``), and what the message says of the first such row."""

    family: str
    column: str
    condition: str
    problem: str  # formatted with value= (the cell, or ``value``'s SQL) and detail= (``detail``'s SQL)
    columns: tuple[str, ...]  # the file's columns it reads
    value: str = ""  # SQL for the value shown; default the column's cell
    detail: str = "NULL"
    death: bool = False


@dataclass
class SanityFinding:
    """Rows of one table in one family: how many, the first few line numbers, and the first one explained."""

    rows: int
    lines: list[int]
    example: str  # "column 'x', line N: <what is wrong>"


class MimicReader:
    """Locates MIMIC-IV tables under per-module directories and exposes them as typed DuckDB views.

    ``modules`` maps module name (hosp, icu, ed, note) to its directory. A missing optional module is
    reported once and its tables are skipped; anything else missing is an error. Validation runs on the
    reader's own DuckDB connection with default settings, so "first rows" and line numbers follow the file.
    """

    def __init__(
        self,
        modules: Mapping[str, str | Path],
        sample_rows: int = 10_000,
        on_duplicates: str = "error",
        empty_tables: str = "error",
        sanity: DataSanity | None = None,
    ):
        if on_duplicates not in DUPLICATE_POLICIES or empty_tables not in EMPTY_POLICIES:
            raise ValueError(f"on_duplicates={on_duplicates}, empty_tables={empty_tables}: unknown policy")
        self.modules = {name: Path(path) for name, path in modules.items()}
        self.sample_rows = sample_rows
        self.on_duplicates, self.empty_tables = on_duplicates, empty_tables
        self.sanity = sanity or DataSanity()
        # family -> error / drop / keep (a composed config holds enums, a stored one or a caller names)
        self.policies = {f: OnImplausibleRows(getattr(self.sanity, f)).value for f in SANITY_FAMILIES}
        self.findings: dict[str, dict[str, SanityFinding]] = {f: {} for f in SANITY_FAMILIES}  # found by register
        self._drops: dict[str, list[_Check]] = {}  # table -> checks whose rows raw_scan leaves out
        self._drop_repeated: set[str] = set()  # tables whose repeated rows raw_scan leaves out
        self.duplicates: dict[str, int] = {}  # table -> rows repeating a primary key (found by register)
        self.empty: list[str] = []  # required tables with a header and no rows (empty_tables=warn)
        self.missing_modules: list[str] = []
        self.paths: dict[str, Path] = {}
        self._con = duckdb.connect()
        self._headers: dict[Path, list[str]] = {}
        self._locate_all()

    # ---- locating files -------------------------------------------------------------------------
    def _locate_all(self) -> None:
        for module in MODULES:
            directory = self.modules.get(module)
            if directory is None or not directory.is_dir():
                where = f"{directory}" if directory is not None else "not configured"
                if module in OPTIONAL_MODULES:
                    self.missing_modules.append(module)
                    log.warning(
                        "MIMIC-IV module '%s' not found (%s): its event types are skipped. Set data.modules.%s "
                        "to the '%s' folder of the separately released %s to include them.",
                        *(module, where, module, module, _RELEASES[module]),
                    )
                    continue
                expected = ", ".join(f"{t.name}.csv.gz" for t in TABLES.values() if t.module == module)
                raise MimicSchemaError(
                    f"MIMIC-IV module '{module}' not found: {where} is not a directory "
                    f"(config key data.modules.{module}); expected the '{module}/' folder of MIMIC-IV "
                    f"v2.2 or v3.x holding {expected}"
                )
            for table in TABLES.values():
                if table.module == module:
                    path = self._find_file(directory, table)
                    if path is not None:
                        self.paths[table.name] = path

    @staticmethod
    def _find_file(directory: Path, table: TableSchema) -> Path | None:
        candidates = [directory / f"{table.name}.csv.gz", directory / f"{table.name}.csv"]
        present = [p for p in candidates if p.is_file()]
        if len(present) > 1:
            raise MimicSchemaError(
                f"table '{table.name}': both {present[0]} and {present[1]} exist; keep one of them so the "
                "input is unambiguous"
            )
        if present:
            return present[0]
        if table.optional:
            log.info("optional table %s not found in %s: skipped", table.name, directory)
            return None
        raise MimicSchemaError(
            f"MIMIC-IV table '{table.name}' not found: expected {candidates[0]} (or {candidates[1].name}) "
            f"in module '{table.module}'"
        )

    def has(self, table: str) -> bool:
        return table in self.paths

    @property
    def tables(self) -> list[str]:
        return list(self.paths)

    # ---- validation -----------------------------------------------------------------------------
    def _query(self, sql: str, path: Path, con: duckdb.DuckDBPyConnection | None = None) -> list[tuple]:
        try:
            return (con or self._con).execute(sql).fetchall()
        except duckdb.Error as exc:
            raise MimicSchemaError(f"file {path} could not be read as CSV: {duckdb_reason(exc)}") from exc

    def header(self, table: str) -> list[str]:
        """The file's column names (read once per file)."""
        path = self.paths[table]
        if path not in self._headers:
            if path.stat().st_size == 0:
                raise MimicSchemaError(
                    f"file {path} is empty: expected a CSV header line with columns {', '.join(TABLES[table].columns)}"
                )
            self._headers[path] = [row[0] for row in self._query(f"DESCRIBE SELECT * FROM {_csv_scan(path)}", path)]
        return list(self._headers[path])

    def validate(self, table: str, limit: int | None = None) -> None:
        """Check columns, types, keys and domains of ``table`` on its first ``limit`` rows (all if None)."""
        schema, path = TABLES[table], self.paths[table]
        found = self.header(table)
        missing = [c for c in schema.columns if c not in found]
        if missing:
            raise MimicSchemaError(
                f"file {path}: missing column(s) {', '.join(repr(c) for c in missing)} "
                f"(table '{table}' needs {', '.join(schema.columns)}; the file has {', '.join(found)})"
            )
        columns = ", ".join(_ident(c) for c in schema.columns)
        rows = f"(SELECT {columns} FROM {_csv_scan(path)} LIMIT {limit})" if limit else _csv_scan(path)
        numbered = f"SELECT {columns}, row_number() OVER () + 1 AS __line FROM {rows}"
        if limit:  # read the sample once, check every column on it
            self._query(f"CREATE OR REPLACE TEMP TABLE __sample AS {numbered}", path)
            numbered = "SELECT * FROM __sample"
        for column, kind in schema.columns.items():
            col = _ident(column)
            checks = []
            if column in _KEYS:
                checks.append((f"{col} IS NULL", f"an empty {column} (every row needs one)"))
            if kind != "str":
                checks.append(
                    (
                        f"{col} IS NOT NULL AND TRY_CAST({col} AS {DUCKDB_TYPES[kind]}) IS NULL",
                        f"{{value!r}} is not {_EXPECTED_FORMAT[kind]}",
                    )
                )
            allowed = _DOMAINS.get((table, column))
            if allowed:
                values = ", ".join(repr(str(v)) for v in allowed)
                checks.append(
                    (
                        f"{col} IS NOT NULL AND {col} NOT IN ({values})",
                        f"{{value!r}} is not one of {', '.join(map(str, allowed))}",
                    )
                )
            for condition, problem in checks:
                hit = self._query(f"SELECT {col}, __line FROM ({numbered}) WHERE {condition} LIMIT 1", path)
                if hit:
                    value, line = hit[0]
                    raise MimicSchemaError(
                        f"file {path}, column '{column}', line {line}: {problem.format(value=value)}"
                    )

    def check_rows(self, table: str) -> None:
        """A required table needs rows: a header alone would silently empty its event type."""
        path = self.paths[table]
        if TABLES[table].optional or self._query(f"SELECT 1 FROM {_csv_scan(path)} LIMIT 1", path):
            return
        if table in ESSENTIAL or self.empty_tables == "error":
            allowed = "" if table in ESSENTIAL else " (data.empty_tables=warn accepts it, leaving its events out)"
            raise MimicSchemaError(f"file {path} has a header but no rows: table '{table}' is required{allowed}")
        log.warning("file %s has a header but no rows: table '%s' contributes no events", path, table)
        self.empty.append(table)

    def check_duplicates(self, table: str) -> int:
        """Rows that repeat a primary key of ``table`` (a repeated key doubles every record joined to it):
        an error naming the lines (``on_duplicates=error``), else counted and dropped or kept."""
        path, key = self.paths[table], PRIMARY_KEYS[table]
        columns = self.header(table)
        row = "md5(concat_ws(chr(31), " + ", ".join(f"coalesce({_ident(c)}, chr(0))" for c in columns) + "))"
        keys = ", ".join(_ident(c) for c in key)
        repeated = self._query(
            f"SELECT {keys}, list(__line ORDER BY __line), count(DISTINCT __row) FROM (SELECT {keys}, {row} AS __row, "
            f"row_number() OVER () + 1 AS __line FROM {_csv_scan(path)}) GROUP BY {keys} HAVING count(*) > 1 "
            "ORDER BY min(__line)",
            path,
        )
        extra = sum(len(r[len(key)]) - 1 for r in repeated)
        if not extra:
            return 0
        *value, lines, versions = repeated[0]
        example = (
            f"{', '.join(f'{c} {v}' for c, v in zip(key, value, strict=True))} on lines "
            f"{', '.join(map(str, lines[:5]))}" + (" (the same row repeated)" if versions == 1 else " (rows differ)")
        )
        what = f"file {path}: {extra} row(s) repeat a {'/'.join(key)} of table '{table}', e.g. {example}"
        if self.on_duplicates == "error":
            raise MimicSchemaError(
                f"{what}; each would count every record joined to it again. Fix the file, or set "
                "data.on_duplicates=drop (keep the first row of each key) or data.on_duplicates=keep"
            )
        log.warning("%s: %s (data.on_duplicates=%s)", what, "dropped" if self.on_duplicates == "drop" else "kept",
                    self.on_duplicates)  # fmt: skip
        return extra

    # ---- views ----------------------------------------------------------------------------------
    def raw_scan(self, table: str) -> str:
        """SQL scan of the table's file with every column as text, in file order (without the rows that
        repeat a primary key when ``on_duplicates=drop`` found some, nor those a ``data.sanity.*=drop``
        family found)."""
        scan = _csv_scan(self.paths[table])
        checks = self._drops.get(table, [])
        partition = None
        if self.duplicates.get(table) and self.on_duplicates == "drop":
            partition = ", ".join(f"t.{_ident(c)}" for c in PRIMARY_KEYS[table])
        elif table in self._drop_repeated:
            partition = _row_hash(self.header(table), "t.")
        if not checks and partition is None:
            return scan
        where = " AND ".join(f"NOT coalesce(({c.condition}), false)" for c in checks) or "true"
        death = any(c.death for c in checks)
        if partition is None and not death:  # a filter keeps the file's order (preserve_insertion_order): no sort
            return f"(SELECT * FROM {scan} t WHERE {where})"
        rows = f"(SELECT *, row_number() OVER () AS __line FROM {scan}) t"
        if death:
            rows += f" LEFT JOIN ({self._deaths_sql()}) d ON d.__subject_id = {_as_id('t.subject_id')}"
        qualify = f" QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY t.__line) = 1" if partition else ""
        return f"(SELECT * EXCLUDE (__line) FROM (SELECT t.* FROM {rows} WHERE {where}{qualify}) ORDER BY __line)"

    def typed_select(self, table: str) -> str:
        """SQL for the table with exactly the schema's columns, cast to their types."""
        schema = TABLES[table]
        casts = ", ".join(
            f"{_ident(c)}" if t == "str" else f"CAST({_ident(c)} AS {DUCKDB_TYPES[t]}) AS {_ident(c)}"
            for c, t in schema.columns.items()
        )
        return f"SELECT {casts} FROM {self.raw_scan(table)}"

    def register(self, con: duckdb.DuckDBPyConnection, validate: bool = True) -> None:
        """Create one typed view per available table in ``con``; validate a sample of each first, and check
        that required tables have rows, keyed tables no repeated key and no row is one that cannot be true
        (``data.sanity``: these scans run on ``con``, under its memory limit)."""
        self.findings = {f: {} for f in SANITY_FAMILIES}
        self._drops, self._drop_repeated = {}, set()
        deaths = False
        for table in self.paths:
            if validate:
                self.validate(table, limit=self.sample_rows)
                self.check_rows(table)
                if table in PRIMARY_KEYS:
                    self.duplicates[table] = self.check_duplicates(table)
                if not deaths and any(c.death for c in self._checks(table)):
                    self._query(f"CREATE OR REPLACE TEMP TABLE {_DEATHS} AS {self._deaths_sql()}", self.paths[table],
                                con)  # fmt: skip
                    deaths = True
                self.check_sanity(table, con)
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table)} AS {self.typed_select(table)}")

    # ---- rows that cannot be true (data.sanity) ----------------------------------------------------------
    def sanity_settings(self) -> dict:
        """The data.sanity settings as plain values (what the timeline build's fingerprint holds)."""
        return {k: v.value if isinstance(v, Enum) else v for k, v in asdict(self.sanity).items()}

    def sanity_report(self) -> dict:
        """Per family: its policy (and limit), the rows found per table and their first line numbers."""
        limits = {
            "after_death": {"tolerance_hours": self.sanity.death_tolerance_hours},
            "age_out_of_range": {"max_age": self.sanity.max_age},
            "long_text": {"max_text_chars": self.sanity.max_text_chars},
        }
        return {
            family: {
                "policy": self.policies[family],
                **limits.get(family, {}),
                "rows": {t: f.rows for t, f in self.findings[family].items()},
                "first_lines": {t: f.lines for t, f in self.findings[family].items()},
            }
            for family in SANITY_FAMILIES
        }

    def _deaths_sql(self) -> str:
        """Each patient's earliest known death: patients.dod (a date, read as 00:00) or an admission's deathtime."""
        parts = [f"SELECT {_as_id('subject_id')} AS s, TRY_CAST(dod AS TIMESTAMP) AS w FROM "
                 f"{_csv_scan(self.paths['patients'])}"]  # fmt: skip
        if self.has("admissions"):
            scan = _csv_scan(self.paths["admissions"])
            parts.append(f"SELECT {_as_id('subject_id')}, TRY_CAST(deathtime AS TIMESTAMP) FROM {scan}")
        return (
            f"SELECT s AS __subject_id, min(w) AS __death FROM ({' UNION ALL '.join(parts)}) "
            "WHERE s IS NOT NULL AND w IS NOT NULL GROUP BY s"
        )

    def _checks(self, table: str) -> list[_Check]:
        """The row checks of ``table`` (those of data.sanity's families but repeated rows), on its own columns."""
        sanity, header = self.sanity, set(self.header(table))
        columns = {c: kind for c, kind in TABLES[table].columns.items() if c in header}
        found: list[_Check] = []
        for start, end in SPANS:
            if start in columns and end in columns:
                problem = f"{{value!r}} is before its {start} {{detail!r}}"
                condition = f"{_time(end)} < {_time(start)}"
                found.append(
                    _Check("end_before_start", end, condition, problem, (start, end), detail=f"t.{_ident(start)}")
                )
        tolerance = f"INTERVAL {int(sanity.death_tolerance_hours)} HOUR"
        source = SOURCES.get(table)
        if source is not None and source.time in columns and "subject_id" in columns and "patients" in self.paths:
            when, value = _time(source.time), f"t.{_ident(source.time)}"
            used: tuple[str, ...] = (source.time,)
            if table == "microbiologyevents" and "chartdate" in columns:  # the build's time: charttime, else date
                when, value = f"COALESCE({when}, {_time('chartdate')})", "COALESCE(t.charttime, t.chartdate)"
                used = (source.time, "chartdate")
            problem = (
                f"{{value!r}} is more than {sanity.death_tolerance_hours} h after the patient's death ({{detail}})"
            )
            found.append(
                _Check("after_death", source.time, f"{when} > d.__death + {tolerance}", problem,
                       (*used, "subject_id"), value=value, detail="CAST(d.__death AS VARCHAR)", death=True)
            )  # fmt: skip
        if table == "admissions" and {"dischtime", "deathtime"} <= header:
            problem = f"{{value!r}} is more than {sanity.death_tolerance_hours} h after its deathtime {{detail!r}}"
            condition = f"{_time('dischtime')} > {_time('deathtime')} + {tolerance}"
            found.append(
                _Check("after_death", "dischtime", condition, problem, ("dischtime", "deathtime"), detail="t.deathtime")
            )
        if table == "patients" and "anchor_age" in columns:
            age = "TRY_CAST(t.anchor_age AS DOUBLE)"
            condition = f"NOT isnan({age}) AND ({age} < 0 OR {age} > {int(sanity.max_age)})"
            problem = f"{{value!r}} is not an age from 0 to {sanity.max_age}"
            found.append(_Check("age_out_of_range", "anchor_age", condition, problem, ("anchor_age",)))
        offset = _OFFSET.replace("'", "''")
        for column, kind in columns.items():
            col = f"t.{_ident(column)}"
            if kind in ("timestamp", "date"):
                problem = (
                    "{value!r} carries a UTC offset; ehrr1 orders MIMIC-IV's naive local times and cannot place it "
                    "among them"
                )
                found.append(
                    _Check("timestamp_offset", column, f"regexp_matches({col}, '{offset}')", problem, (column,))
                )
            elif kind == "str":
                limit = int(sanity.max_text_chars)
                problem = (
                    f"a value of {{detail}} characters ({{value!r}}...) is over data.sanity.max_text_chars={limit}"
                )
                condition = f"strlen({col}) > {limit} AND length({col}) > {limit}"  # bytes first: cheap
                found.append(
                    _Check("long_text", column, condition, problem, (column,), value=f"left({col}, 40)",
                           detail=f"length({col})")
                )  # fmt: skip
        return found

    def _describe(self, family: str) -> str:
        s = self.sanity
        return {
            "end_before_start": "end before they start",
            "after_death": f"are dated more than {s.death_tolerance_hours} h after the patient's death",
            "age_out_of_range": f"have an anchor_age outside 0 to {s.max_age}",
            "repeated_rows": "repeat an earlier row in every column",
            "timestamp_offset": "hold a timestamp with a UTC offset",
            "long_text": f"hold a text value over {s.max_text_chars} characters",
        }[family]

    def check_sanity(self, table: str, con: duckdb.DuckDBPyConnection) -> None:
        """Count the rows of ``table`` that cannot be true, per family, in one aggregate pass over the columns
        the checks read (and, for a table of event rows without a key, one pass grouping whole rows by a hash).
        Per ``data.sanity.<family>``: an error naming the first row, else warned and left out (drop) or kept."""
        path, checks = self.paths[table], self._checks(table)
        header = self.header(table)
        needed = {c for check in checks for c in check.columns}
        projected = ", ".join(_ident(c) for c in header if c in needed) or "1"
        join = (
            f" LEFT JOIN {_DEATHS} d ON d.__subject_id = {_as_id('t.subject_id')}"
            if any(c.death for c in checks)
            else ""
        )
        families = [f for f in SANITY_FAMILIES if any(c.family == f for c in checks)]
        either = {f: " OR ".join(f"({c.condition})" for c in checks if c.family == f) for f in families}
        # one pass over the columns the checks read, counting per family (and reading the whole file once)
        counts = [f"count(*) FILTER (WHERE {either[f]})" for f in families]
        result = self._query(
            f"SELECT count(*), {', '.join(counts) or '0'} FROM (SELECT {projected} FROM {_csv_scan(path)}) t{join}",
            path,
            con,
        )[0]
        hit = [f for f, n in zip(families, result[1:], strict=False) if n]
        found: dict[str, SanityFinding] = {}
        if hit:  # a second pass, only where something was found: the lines, and the first row explained
            rows = f"(SELECT {projected}, row_number() OVER () + 1 AS __line FROM {_csv_scan(path)}) t{join}"
            named = [c for c in checks if c.family in hit]
            parts = [f"min(__line, {FIRST_LINES}) FILTER (WHERE {either[f]})" for f in hit]
            for c in named:
                value = c.value or f"t.{_ident(c.column)}"
                parts += [
                    f"min(__line) FILTER (WHERE {c.condition})",
                    f"arg_min({value}, __line) FILTER (WHERE {c.condition})",
                    f"arg_min(CAST({c.detail} AS VARCHAR), __line) FILTER (WHERE {c.condition})",
                ]
            detail = self._query(f"SELECT {', '.join(parts)} FROM {rows}", path, con)[0]
            explained = [(c, *detail[len(hit) + 3 * j : len(hit) + 3 * j + 3]) for j, c in enumerate(named)]
            for i, family in enumerate(hit):
                check, line, value, shown = min(
                    (e for e in explained if e[0].family == family and e[1] is not None), key=lambda e: e[1]
                )
                example = f"column '{check.column}', line {line}: {check.problem.format(value=value, detail=shown)}"
                found[family] = SanityFinding(result[1 + families.index(family)], sorted(detail[i]), example)
                if self.policies[family] == "drop":
                    self._drops.setdefault(table, []).extend(c for c in checks if c.family == family)
        if table in SOURCES and table not in PRIMARY_KEYS:
            repeated = self._repeated_rows(table, con)
            if repeated is not None:
                found["repeated_rows"] = repeated
                if self.policies["repeated_rows"] == "drop":
                    self._drop_repeated.add(table)
        for family in SANITY_FAMILIES:  # warn of all before refusing one
            if family in found and self.policies[family] != "error":
                self._report(table, family, found[family])
        for family in SANITY_FAMILIES:
            if family in found and self.policies[family] == "error":
                self._report(table, family, found[family])

    def _repeated_rows(self, table: str, con: duckdb.DuckDBPyConnection) -> SanityFinding | None:
        """Rows identical in every column to an earlier row: one pass grouping by a 128-bit hash of the whole row
        (the groups spill to disk under the connection's memory limit; no row reaches Python), and only where
        some repeat, a second one joining the repeated hashes for the first lines."""
        path, row = self.paths[table], _row_hash(self.header(table))
        rows = f"(SELECT {row} AS __h, row_number() OVER () + 1 AS __line FROM {_csv_scan(path)})"
        self._query(
            f"CREATE OR REPLACE TEMP TABLE __ehrr1_repeated AS SELECT __h, count(*) AS n, min(__line) AS first "
            f"FROM {rows} GROUP BY __h HAVING count(*) > 1",
            path,
            con,
        )
        try:
            total = con.execute("SELECT sum(n - 1) FROM __ehrr1_repeated").fetchall()[0][0]
            if not total:
                return None
            lines, first, line = self._query(
                f"SELECT min(t.__line, {FIRST_LINES}), arg_min(r.first, t.__line), min(t.__line) FROM {rows} t "
                "JOIN __ehrr1_repeated r ON t.__h = r.__h WHERE t.__line > r.first",
                path,
                con,
            )[0]
        finally:
            con.execute("DROP TABLE IF EXISTS __ehrr1_repeated")
        return SanityFinding(int(total), sorted(lines), f"line {line}: the row repeats line {first} in every column")

    def _report(self, table: str, family: str, finding: SanityFinding) -> None:
        """Record ``finding``; warn of it, or raise it under data.sanity.<family>=error."""
        self.findings[family][table] = finding
        path, policy = self.paths[table], self.policies[family]
        lines = ", ".join(map(str, finding.lines)) + (", ..." if finding.rows > len(finding.lines) else "")
        what = f"{finding.rows} row(s) of table '{table}' {self._describe(family)} (lines {lines})"
        if policy == "error":
            more = {
                "after_death": ", or widen data.sanity.death_tolerance_hours",
                "age_out_of_range": ", or raise data.sanity.max_age",
                "long_text": ", or raise data.sanity.max_text_chars",
            }.get(family, "")
            raise MimicSchemaError(
                f"file {path}, {finding.example}; {what}. Fix the file, or set data.sanity.{family}=drop (leave "
                f"them out of the timelines) or data.sanity.{family}=keep (use them as they are){more}"
            )
        action = "left out of the timelines" if policy == "drop" else "kept"
        log.warning("file %s: %s, e.g. %s: %s (data.sanity.%s=%s)", path, what, finding.example, action, family, policy)

    def explain_failure(self, tables: list[str], exc: Exception) -> Exception:
        """Turn a DuckDB conversion error raised mid-build into a MimicSchemaError by scanning fully."""
        for table in tables:
            if table in self.paths:
                try:
                    self.validate(table, limit=None)
                except MimicSchemaError as err:
                    return err
        return exc
