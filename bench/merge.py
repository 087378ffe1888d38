"""``python -m bench merge DIR... --out DIR``: results directories (other machines, cluster shards) as one.

Every source contributes the records its own report shows (:func:`bench.layout.select_plan`); records are
grouped by the machine that measured them (:func:`bench.env.machine_id` of the record's environment: CPU
model, logical CPUs and memory; nodes of one kind count as one machine).  Where two sources hold the same
task and round from the same machine, the later one (``started_utc``) is kept.

One machine: the records land in ``OUT/raw/`` as if one run had measured them, and ``OUT/run.json`` holds
one run whose plan is the union of the sources' plans.  Several machines: each gets its own results
directory ``OUT/machines/<machine id>/`` (so the per-round ratios never compare two machines), and the
report (:func:`bench.report.write_report`) writes each machine's report there and, at the top, the
machines and a table of every cell's step time on each.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bench import env, layout
from bench.layout import ResultsDir

MACHINES = "machines"
"""The folder of per-machine results directories in a merge of several machines."""


def machine_of(record: dict) -> str:
    return env.machine_id(record.get("environment") or {})


def merge(sources: list[Path], out: Path) -> dict[str, int]:
    """Merge ``sources`` into ``out`` (which must hold no records yet); returns the records kept per machine."""

    target = ResultsDir(out)
    if any(target.raw.glob("r*/*.json")) or (target.root / MACHINES).exists():
        raise ValueError(f"{out} already holds results; merge into a new directory")
    records: dict[str, dict[tuple[int, str], dict]] = {}
    runs: dict[str, list[dict]] = {}
    for source in sources:
        results = ResultsDir(source)
        source_runs = results.runs()
        found, _ = results.records()
        for record in layout.select_plan(found, source_runs):
            machine = machine_of(record)
            key = (record["round"], record["task"]["id"])
            kept = records.setdefault(machine, {}).get(key)
            if kept is None or record.get("started_utc", "") > kept.get("started_utc", ""):
                records[machine][key] = record
            runs.setdefault(machine, [])
            runs[machine] += [dict(r, source=str(source)) for r in source_runs if r not in runs[machine]]
    if not records:
        raise ValueError(f"no records in {', '.join(map(str, sources))}")
    for machine, kept in records.items():
        folder = target if len(records) == 1 else ResultsDir(target.root / MACHINES / machine)
        for record in kept.values():
            folder.write_record(record)
        folder.add_run(_merged_run(machine, list(kept.values()), runs[machine], sources))
    return {machine: len(kept) for machine, kept in records.items()}


def _merged_run(machine: str, records: list[dict], runs: list[dict], sources: list[Path]) -> dict:
    """One run standing for the merged ones: the union of what they planned, the latest record's environment."""
    latest = max(records, key=lambda r: r.get("started_utc", ""))
    last_run = runs[-1] if runs else {}
    profiles = list(dict.fromkeys(str(r.get("profile")) for r in runs))
    now = datetime.now(UTC)
    return {"run_id": f"merge-{now:%Y%m%dT%H%M%S}-{machine}", "profile": " + ".join(profiles),
            "profile_description": f"merged from {', '.join(map(str, sources))}",
            "threads": last_run.get("threads"), "device": last_run.get("device"), "only": None,
            "unavailable": {k: v for r in runs for k, v in (r.get("unavailable") or {}).items()},
            "plan": {"rounds": sorted({r["round"] for r in records}),
                     "tasks": sorted({r["task"]["id"] for r in records})},
            "started_utc": now.strftime("%Y-%m-%d %H:%M:%S"), "environment": latest.get("environment") or {},
            "merged_runs": [r.get("run_id") for r in runs], "interrupted": False,
            "wall_s": sum(float(r.get("wall_s") or 0.0) for r in runs)}
