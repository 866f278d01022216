"""``conf/data/`` and what turns its tables into timelines and markdown (``timelines.*``, ``markdown.*``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING, DictConfig, OmegaConf

from ehrr1.config.checks import checked, path_name


class MarkdownStyle(str, Enum):
    reference = "reference"  # the EHR-R1 reference's text, byte for byte
    clean = "clean"  # ehrr1's own readable format


class EventGrouping(str, Enum):
    runs = "runs"  # the reference's events: consecutive rows of one table
    timestamp = "timestamp"  # the rows of one table at one timestamp


@dataclass
class TimelineBuildSettings:
    patients_per_shard: int = checked(2000, ge=1)  # memory per shard is bounded by this, not by the cohort size
    memory_limit: str = "4GB"  # DuckDB's memory limit; it spills to disk beyond it
    threads: int = checked(0, ge=0)  # 0: DuckDB's default (all cores)
    keep_staging: bool = False  # keep the staged Parquet tables after the build
    grouping: EventGrouping = EventGrouping.runs
    # your d_ccs_diagnoses.csv, d_ccs_procedures.csv, d_atc_prescriptions.csv; None: the licence-free defaults
    mapping_dir: str | None = None


@dataclass
class SyntheticCohortSettings:
    n_patients: int = checked(2000, ge=1)
    seed: int = 0


@dataclass
class ModulesConfig:
    """Directories of the MIMIC-IV modules; ``ed`` and ``note`` are separate releases and optional."""

    hosp: str = MISSING
    icu: str = MISSING
    ed: str | None = MISSING  # null: no MIMIC-IV-ED
    note: str | None = MISSING  # null: no MIMIC-IV-Note


class OnDuplicates(str, Enum):
    """Rows repeating a primary key (hadm_id of admissions, stay_id of icustays / edstays, subject_id of patients)."""

    error = "error"  # stop, naming the file and lines
    drop = "drop"  # keep the first row of each key (counted in the build summary)
    keep = "keep"  # use them as they are (counted): every record joined to them is repeated


class EmptyTables(str, Enum):
    """A required table whose file has a header and no rows (patients and admissions: always an error)."""

    error = "error"
    warn = "warn"  # its events are absent (a small synthetic cohort may have no procedures)


class OnImplausibleRows(str, Enum):
    """Rows that cannot be true (``data.sanity.*``): an end before its start, an event long after death, ..."""

    error = "error"  # stop, naming the file, line, column, value and the setting that changes it
    drop = "drop"  # leave them out of the timelines (counted in the manifest, warned with their lines)
    keep = "keep"  # use them as they are (counted in the manifest, warned with their lines)


@dataclass
class DataSanity:
    """What the timeline build does with each family of rows that cannot be true (docs/data-sanity.md)."""

    end_before_start: OnImplausibleRows = OnImplausibleRows.drop  # dischtime < admittime, outtime < intime, ...
    after_death: OnImplausibleRows = OnImplausibleRows.keep  # an event later than death + the tolerance
    death_tolerance_hours: int = checked(24, ge=0)  # from the date of death (dod, read as 00:00) or deathtime
    age_out_of_range: OnImplausibleRows = OnImplausibleRows.error  # patients.anchor_age < 0 or > max_age
    max_age: int = checked(120, ge=0)
    repeated_rows: OnImplausibleRows = OnImplausibleRows.keep  # event rows identical in every column
    timestamp_offset: OnImplausibleRows = OnImplausibleRows.error  # '2150-01-01 10:00:00+02:00', '...Z'
    long_text: OnImplausibleRows = OnImplausibleRows.error  # a text value over max_text_chars characters
    max_text_chars: int = checked(1_000_000, ge=1)


@dataclass
class DataConfig:
    name: str = path_name()  # names the derived artefacts (timelines, ...) of this data source
    root: str = MISSING
    modules: ModulesConfig = field(default_factory=ModulesConfig)
    synthetic: SyntheticCohortSettings | None = None  # set: generate the cohort at ``root`` first
    on_duplicates: OnDuplicates = OnDuplicates.error
    empty_tables: EmptyTables = EmptyTables.error
    sanity: DataSanity = field(default_factory=DataSanity)

    @staticmethod
    def problems(node: DictConfig, at: str) -> list[str]:
        if OmegaConf.is_missing(node, "root"):
            return [f"{at}.root is not set: {at}={node.name} reads its tables from {at}.root=<the folder holding "
                    "hosp/ and icu/>"]  # fmt: skip
        return []


@dataclass
class TimelinesConfig(TimelineBuildSettings):
    dir: str = MISSING


@dataclass
class MarkdownConfig:
    style: MarkdownStyle = MarkdownStyle.reference  # reference: the EHR-R1 reference's text; clean: ehrr1's own
