"""Are two runs' results numerically identical? (refactors must not change results)

    .venv/bin/python benchmarks/compare_runs.py BEFORE/metrics.json AFTER/metrics.json \
        [--out benchmarks/results/compare_runs.md] [--rtol 0]

Compares every number and string of two ``report/metrics.json`` files, except what measures the
machine rather than the method: wall/CPU times, throughput, peak memory (``*elapsed_s``,
``*seconds``, ``samples_per_s``, ``cpu_s``, ``max_rss_mb``, the ``timings`` section) and the
package ``versions`` (git commit). The resolved ``config`` (and its ``config_hash``) is compared
too but listed apart, never failing the comparison (a refactor may add an option whose default
keeps the old behaviour), as are keys that only one side's ``timing`` records carry (the record
of a run's settings). Writes a Markdown report and exits 1 when any result differs.

Typical use: run the tiny config (tests/configs/tiny.yaml) on CPU from the commit before a
refactor and from the commit after it, each into its own folder, then compare.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterator

#: Keys (last path component) that measure the machine, not the method.
MACHINE_KEYS = ("elapsed_s", "seconds", "samples_per_s", "cpu_s", "max_rss_mb")
#: Top-level sections left out of the comparison.
SKIPPED_SECTIONS = ("timings", "versions")


def flatten(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, leaf value) of every leaf of a JSON document."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from flatten(value, f"{prefix}[{i}]")
    else:
        yield prefix, doc


def is_machine_key(path: str) -> bool:
    """Whether ``path`` is a timing/memory/version entry (not compared)."""
    top = path.split(".", 1)[0].split("[", 1)[0]
    last = path.rsplit(".", 1)[-1].split("[", 1)[0]
    return top in SKIPPED_SECTIONS or any(last == k or last.endswith("_" + k) for k in MACHINE_KEYS)


def same(a: Any, b: Any, rtol: float) -> bool:
    """Equal values; numbers within ``rtol`` (0: bit-identical), NaN equal to NaN."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        if math.isnan(a) and math.isnan(b):
            return True
        return a == b if rtol == 0 else math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)
    return a == b


def compare(before: dict[str, Any], after: dict[str, Any], rtol: float = 0.0) -> dict[str, list]:
    """The differences of two metrics documents.

    Returns:
        ``{"differ": [(path, before, after)], "only_before": [path], "only_after": [path],
        "config_differ": [...], "config_only_before": [...], "config_only_after": [...],
        "compared": [n]}``.
    """
    a = {p: v for p, v in flatten(before) if not is_machine_key(p)}
    b = {p: v for p, v in flatten(after) if not is_machine_key(p)}
    out: dict[str, list] = {"differ": [], "only_before": [], "only_after": [], "config_differ": [],
                            "config_only_before": [], "config_only_after": []}
    for path in sorted(set(a) | set(b)):
        is_config = path.startswith("config.") or path == "config_hash"
        where = "config_only" if is_config or ".timing." in path else "only"
        if path not in b:
            out[f"{where}_before"].append(path)
        elif path not in a:
            out[f"{where}_after"].append(path)
        elif not same(a[path], b[path], rtol):
            out["config_differ" if is_config else "differ"].append((path, a[path], b[path]))
    out["compared"] = [len(set(a) & set(b))]
    return out


def report(result: dict[str, list], before: Path, after: Path, rtol: float) -> str:
    """The comparison as Markdown."""
    identical = not (result["differ"] or result["only_before"] or result["only_after"])
    lines = [
        "# Two runs compared",
        "",
        f"- before: `{before}`",
        f"- after: `{after}`",
        f"- tolerance: {'bit-identical' if rtol == 0 else f'relative {rtol}'}; times, memory "
        "and versions left out",
        f"- values compared: {result['compared'][0]}",
        f"- verdict: **{'identical' if identical else 'DIFFERENT'}**",
        "",
    ]
    if result["differ"]:
        lines += ["| value | before | after |", "|---|---|---|"]
        lines += [f"| `{p}` | {x!r} | {y!r} |" for p, x, y in result["differ"][:200]]
        lines.append("")
    if result["config_differ"]:
        lines += ["Config values that differ (not results):", ""]
        lines += [f"- `{p}`: {x!r} → {y!r}" for p, x, y in result["config_differ"]] + [""]
    for key, title in [("only_before", "Results only before"), ("only_after", "Results only after"),
                       ("config_only_before", "Config and record keys only before"),
                       ("config_only_after", "Config and record keys only after (new options, "
                                             "new fields of the run records)")]:
        if result[key]:
            lines += [f"{title}:", ""] + [f"- `{p}`" for p in result[key]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rtol", type=float, default=0.0, help="relative tolerance (0: exact)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    docs = []
    for path in (args.before, args.after):
        try:
            docs.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            parser.error(f"cannot read {path}: {exc}")
    result = compare(docs[0], docs[1], args.rtol)
    text = report(result, args.before, args.after, args.rtol)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(args.out)
    print(text)
    return 1 if (result["differ"] or result["only_before"] or result["only_after"]) else 0


if __name__ == "__main__":
    sys.exit(main())
