"""Published accuracy tables: parsing timm's results shape, and the tables that ship with dnnprof.

Three kinds of published figure give the analyses accuracy (and parameter counts) for models not
measured here, each labelled with where it comes from:

- torchvision's per-weights metadata (``acc@1``, ``num_params``, ``_ops``): read into the
  catalogue by the worker (``tv-metadata``);
- the tables below, copies in the package (never downloaded at run time) that every worker imports
  into the store once per package version (``python -m workers.catalogue``);
- tables a user imports (``POST /v1/results/published/{source}``).

Refresh timm's copy with ``python -m dnnprof.published --refresh`` (needs the internet; then
commit ``dnnprof/data``; ``--data-dir`` for another copy): it fetches the table, checks that it
parses, and relabels it with the month, so workers import the new copy at their next start. A
table that cannot be fetched or does not parse is left as it was (exit 1, saying why).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dnnprof.contract import PublishedResult

DATA = Path(__file__).parent / "data"


MANIFEST = DATA / "published_tables.json"


@dataclass(frozen=True)
class ShippedTable:
    source: str  # the label its rows carry ("published:<source>" in the analyses)
    file: str  # under dnnprof/data
    origin: str  # where the figures were published
    url: str | None = None  # where ``--refresh`` fetches a newer copy, if anywhere

    @property
    def path(self) -> Path:
        return DATA / self.file


def shipped_tables(manifest: Path = MANIFEST) -> tuple[ShippedTable, ...]:
    return tuple(ShippedTable(**entry) for entry in json.loads(manifest.read_text()))


SHIPPED_TABLES: tuple[ShippedTable, ...] = shipped_tables()


#: Rows one import may hold: timm's largest results table has ~1,300; each unknown name costs a
#: fuzzy match against the catalogue, so an unbounded import is a CPU and memory amplifier.
MAX_IMPORT_ROWS = 5000


def _float(row: dict[str, str], key: str) -> float | None:
    value = (row.get(key) or "").strip().replace(",", "")  # timm writes "1,014.45"
    if not value:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} must be a finite number, got {value[:20]!r}")
    return number


def is_shipped(source: str) -> bool:
    """A table shipped with dnnprof: read-only over the API (``--refresh`` or a release renews it)."""
    return any(table.source == source for table in SHIPPED_TABLES)


def lookalike_of_shipped(source: str) -> str | None:
    """The shipped table a new source name would pass for (the same but for case or trailing
    '.', '_', '-': ``TIMM-RESULTS-2026-08``, ``timm-results-2026-08.``), or None."""
    folded = source.casefold().rstrip("._-")
    return next((t.source for t in SHIPPED_TABLES if t.source.casefold().rstrip("._-") == folded), None)


def parse_results_csv(text: str, source: str, *, imported_at: float = 0.0) -> list[PublishedResult]:
    """Rows in the shape of timm's results tables: model, top1, top5, img_size, param_count, ...
    Raises ValueError naming the line that is wrong."""
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    if not {"model", "top1"} <= columns:
        raise ValueError(
            "the CSV needs a header with at least 'model' and 'top1' "
            f"(timm's results table shape: model,img_size,top1,top5,param_count,...); got {sorted(columns)}"
        )
    out: list[PublishedResult] = []
    line = 1  # the header's
    try:
        for line, row in enumerate(reader, start=2):
            if len(out) >= MAX_IMPORT_ROWS:
                raise ValueError(f"more than {MAX_IMPORT_ROWS} rows: split the table into several sources")
            out.append(_result(row, line, source, imported_at))
    except csv.Error as exc:  # a field past csv's limit (128 KiB), a NUL byte, ...
        # The row after the last one read (csv's line_num lags behind a field it refused).
        where = max(reader.line_num, line + 1)
        raise ValueError(f"line {where}: not a readable CSV row ({exc})") from exc
    if not out:
        raise ValueError("the CSV has a header and no rows: nothing to import")
    return out


def _result(row: dict[str, str], line: int, source: str, imported_at: float) -> PublishedResult:
    """One row as a result; ValueError naming the line where it is wrong."""
    try:
        model = (row.get("model") or "").strip()
        top1 = _float(row, "top1")
        if not model or top1 is None or not 0 <= top1 <= 100:
            raise ValueError("needs a model name and a top1 in 0..100")
        top5 = _float(row, "top5")
        if top5 is not None and not 0 <= top5 <= 100:
            raise ValueError("top5 must be in 0..100")
        size = _float(row, "img_size")
        return PublishedResult(
            model=model[:200],
            resolved=None,
            source=source,
            top1=top1,
            top5=top5,
            img_size=int(size) if size is not None else None,
            param_count_m=_float(row, "param_count"),
            crop_pct=_float(row, "crop_pct"),
            interpolation=(row.get("interpolation") or None),
            imported_at=imported_at,
        )
    except ValueError as exc:
        raise ValueError(f"line {line}: {exc}") from exc


def resolve_rows(results: list[PublishedResult], resolve: Callable[[str], str]) -> list[str]:
    """Set each row's catalogue name; returns the names that do not resolve. ``resolve`` raises
    LookupError for an unknown name (``Catalogue.resolve(...).qualified``)."""
    unresolved = []
    for result in results:
        try:
            result.resolved = resolve(result.model)
        except LookupError:
            unresolved.append(result.model)
    return unresolved


def shipped_version() -> str:
    """Changes when a shipped table's contents (or the list of them) change."""
    digest = hashlib.sha256()
    for table in SHIPPED_TABLES:
        digest.update(table.source.encode() + b"\0" + table.path.read_bytes())
    return digest.hexdigest()[:16]


def load_shipped(table: ShippedTable, *, imported_at: float = 0.0) -> list[PublishedResult]:
    return parse_results_csv(table.path.read_text(encoding="utf-8"), table.source, imported_at=imported_at)


def refresh(data_dir: Path = DATA, today: datetime.date | None = None) -> list[ShippedTable]:
    """Fetch each table of ``data_dir``'s manifest that has a URL, check that it parses, write it
    and relabel it with this month (a broken table writes nothing)."""
    import urllib.request

    month = (today or datetime.date.today()).strftime("%Y-%m")
    manifest = data_dir / MANIFEST.name
    tables = []
    for table in shipped_tables(manifest):
        if table.url:
            with urllib.request.urlopen(table.url, timeout=60) as response:
                text = response.read().decode("utf-8")
            rows = parse_results_csv(text, table.source)
            (data_dir / table.file).write_text(text, encoding="utf-8")
            stem = table.source.rsplit("-", 2)[0]
            origin = f"{table.origin.rsplit(',', 1)[0]}, {month}"
            table = dataclasses.replace(table, source=f"{stem}-{month}", origin=origin)
            print(f"{table.file}: {len(rows)} rows, now labelled {table.source}")
        tables.append(table)
    manifest.write_text(json.dumps([dataclasses.asdict(t) for t in tables], indent=2) + "\n")
    return tables


def main(argv: list[str] | None = None) -> int:
    """``python -m dnnprof.published --refresh [--data-dir DIR]``: exit 1 saying why where a
    table cannot be fetched or does not parse (nothing written for it)."""
    import argparse
    import urllib.error

    parser = argparse.ArgumentParser(prog="python -m dnnprof.published", description=refresh.__doc__)
    parser.add_argument("--refresh", action="store_true", required=True, help="fetch the tables with a URL")
    parser.add_argument(
        "--data-dir", type=Path, default=DATA, help="the folder of the manifest and tables (the package's)"
    )
    args = parser.parse_args(argv)
    try:
        refresh(args.data_dir)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"dnnprof.published: not refreshed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
