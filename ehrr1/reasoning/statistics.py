"""Co-occurrence of (target concept, history concept) per task, over the training split only, in DuckDB.

For task T with N training samples: count(a) = samples whose targets hold a, count(b) = samples whose
history holds b, cooc = samples holding both; lift = cooc · N / (count(a) · count(b)). Pairs with
cooc >= min_support (``support_on="history"``, the reference's: count(b) >= min_support) and lift >
min_lift are kept, the top_k by lift (then support) per target concept (``top_k=None``: all of them, for
a per-sample cut later).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ehrr1.utils import atomic_output

COLUMNS = ("task", "target", "history", "cooc", "n_target", "n_history", "n", "lift")


def cooccurrence(
    concepts: str | Path | list[str],
    out: str | Path,
    min_support: int,
    min_lift: float,
    top_k: int | None,
    split: str = "train",
    memory_limit: str = "2GB",
    support_on: str = "pair",
) -> int:
    """Write the kept pairs of ``split`` to ``out`` (Parquet) from concept Parquet files; returns their count.

    ``concepts``: files (or a glob) with columns sample, task, split, role ('history' | 'target'), concept.
    """
    files = [str(p) for p in concepts] if isinstance(concepts, list) else [str(concepts)]
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{memory_limit}'")
    sources = "[" + ", ".join(_literal(f) for f in files) + "]"
    con.execute(
        "CREATE TEMP TABLE mentions AS SELECT DISTINCT sample, task, role, concept "
        f"FROM read_parquet({sources}) WHERE split = {_literal(split)}"
    )
    with atomic_output(out) as tmp:
        rank = "row_number() OVER (PARTITION BY task, target ORDER BY lift DESC, cooc DESC, history)"
        best = "" if top_k is None else f"QUALIFY {rank} <= {int(top_k)}"
        con.execute(
            f"""
            COPY (
              WITH n AS (SELECT task, count(DISTINCT sample) AS n FROM mentions GROUP BY task),
              targets AS (SELECT sample, task, concept FROM mentions WHERE role = 'target'),
              history AS (SELECT sample, task, concept FROM mentions WHERE role = 'history'),
              target_counts AS (SELECT task, concept, count(*) AS c FROM targets GROUP BY ALL),
              history_counts AS (SELECT task, concept, count(*) AS c FROM history GROUP BY ALL),
              pairs AS (
                SELECT t.task, t.concept AS target, h.concept AS history, count(*) AS cooc
                FROM targets t JOIN history h USING (sample, task)
                GROUP BY ALL HAVING count(*) >= {int(min_support) if support_on == "pair" else 1}
              ),
              scored AS (
                SELECT p.task, p.target, p.history, p.cooc, tc.c AS n_target, hc.c AS n_history, n.n,
                       p.cooc * n.n / (tc.c * hc.c) AS lift
                FROM pairs p
                JOIN n USING (task)
                JOIN target_counts tc ON tc.task = p.task AND tc.concept = p.target
                JOIN history_counts hc ON hc.task = p.task AND hc.concept = p.history
              )
              SELECT {", ".join(COLUMNS)} FROM scored
              WHERE lift > {float(min_lift)}{"" if support_on == "pair" else f" AND n_history >= {int(min_support)}"}
              {best}
              ORDER BY task, target, lift DESC, cooc DESC, history
            ) TO {_literal(str(tmp))} (FORMAT parquet)
            """
        )
    return con.execute("SELECT count(*) FROM read_parquet(?)", [str(out)]).fetchall()[0][0]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
