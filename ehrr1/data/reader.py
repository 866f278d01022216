"""Lazy, typed access to a MIMIC-IV directory through DuckDB.

Each table becomes a DuckDB view that reads only the columns ehrr1 needs (see ``schema.py``) straight
from ``<module>/<table>.csv(.gz)``; nothing is loaded into pandas. Problems with the input are raised
as :class:`MimicSchemaError` naming the file, column, line and offending value.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import duckdb

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


class MimicSchemaError(UserError, ValueError):
    """The MIMIC-IV input does not have the layout, columns or value types ehrr1 expects."""


def _csv_scan(path: Path) -> str:
    quoted = str(path).replace("'", "''")
    return f"read_csv('{quoted}', all_varchar=true, header=true, delim=',', quote='\"', escape='\"')"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
    ):
        if on_duplicates not in DUPLICATE_POLICIES or empty_tables not in EMPTY_POLICIES:
            raise ValueError(f"on_duplicates={on_duplicates}, empty_tables={empty_tables}: unknown policy")
        self.modules = {name: Path(path) for name, path in modules.items()}
        self.sample_rows = sample_rows
        self.on_duplicates, self.empty_tables = on_duplicates, empty_tables
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
    def _query(self, sql: str, path: Path) -> list[tuple]:
        try:
            return self._con.execute(sql).fetchall()
        except duckdb.Error as exc:
            raise MimicSchemaError(f"file {path} could not be read as CSV: {str(exc).splitlines()[0]}") from exc

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
        repeat a primary key when ``on_duplicates=drop`` found some)."""
        scan = _csv_scan(self.paths[table])
        if not self.duplicates.get(table) or self.on_duplicates != "drop":
            return scan
        keys = ", ".join(_ident(c) for c in PRIMARY_KEYS[table])
        return (
            f"(SELECT * EXCLUDE (__line) FROM (SELECT * FROM (SELECT *, row_number() OVER () AS __line FROM {scan}) "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY __line) = 1 ORDER BY __line))"
        )

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
        that required tables have rows and keyed tables no repeated key."""
        for table in self.paths:
            if validate:
                self.validate(table, limit=self.sample_rows)
                self.check_rows(table)
                if table in PRIMARY_KEYS:
                    self.duplicates[table] = self.check_duplicates(table)
            con.execute(f"CREATE OR REPLACE VIEW {_ident(table)} AS {self.typed_select(table)}")

    def explain_failure(self, tables: list[str], exc: Exception) -> Exception:
        """Turn a DuckDB conversion error raised mid-build into a MimicSchemaError by scanning fully."""
        for table in tables:
            if table in self.paths:
                try:
                    self.validate(table, limit=None)
                except MimicSchemaError as err:
                    return err
        return exc
