"""``dnnprof profile | ls | show | upload``: the command-line client of a running service.

Talks to ``DNNPROF_URL`` (default http://127.0.0.1:8000) with ``DNNPROF_API_KEY`` as ``X-API-Key``
when set. ``profile --wait`` follows the job batch size by batch size (a progress bar on a terminal,
a line per step otherwise) and prints the result as a table; ``--json`` prints the API's JSON for
scripts. An error the API answers exits 1 with its message; a bad argument exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dnnprof.contract import PRECISIONS, RUNTIMES

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "cancelled")
#: ``dnnprof upload`` sends the file in pieces of this size as it reads it.
UPLOAD_CHUNK = 1 << 20


class ApiError(Exception):
    """What the API said when it refused (its ``detail``, and field errors where it gave them)."""


def batch_sizes(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; anything else is refused with the reason (argparse exits 2)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: batch sizes are positive integers separated by commas, e.g. 1,2,4"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every batch size must be 1 or more, e.g. 1,2,4")
    return sizes


class Client:
    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 30) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=url or DEFAULT_URL, headers=headers, timeout=timeout)
        self._seen: dict[str, tuple[str, dict]] = {}  # profile id -> (ETag, body) last read

    @classmethod
    def from_env(cls) -> Client:
        return cls(os.environ.get("DNNPROF_URL"), os.environ.get("DNNPROF_API_KEY"))

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._body(self._request(method, path, **kwargs))

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach the service at {self.http.base_url}: {exc}") from exc

    @staticmethod
    def _body(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.text  # says what was wrong
            except ValueError:
                detail = response.text
            raise ApiError(f"{response.status_code}: {detail}")
        return response.json()

    def submit(self, body: dict) -> dict:
        return self._call("POST", "/v1/profiles", json=body)

    def get(self, profile_id: str) -> dict:
        """The profile; a poll of one that did not change is a 304 with no body (its ETag)."""
        etag, known = self._seen.get(profile_id, (None, None))
        response = self._request(
            "GET", f"/v1/profiles/{profile_id}", headers={"If-None-Match": etag} if etag else {}
        )
        if response.status_code == 304 and known is not None:
            return known
        body = self._body(response)
        if response.headers.get("etag"):
            self._seen[profile_id] = (response.headers["etag"], body)
        return body

    def layers(self, profile_id: str, batch_size: int | None = None, depth: int | None = None) -> dict:
        """The profile's layer profile (``layers: true``), its tree collapsed to ``depth``."""
        params = {k: v for k, v in (("batch_size", batch_size), ("depth", depth)) if v is not None}
        return self._call("GET", f"/v1/profiles/{profile_id}/layers", params=params)

    def list(self, **params: Any) -> list[dict]:
        return self._call("GET", "/v1/profiles", params={k: v for k, v in params.items() if v is not None})

    def upload(self, path: Path, name: str) -> dict:
        """Send an ONNX file as it is read (streamed, never whole in memory); its entry."""
        with open(path, "rb") as fh:
            return self._call(
                "POST",
                "/v1/models",
                params={"name": name},
                content=iter(lambda: fh.read(UPLOAD_CHUNK), b""),
                headers={"Content-Type": "application/onnx"},
                timeout=httpx.Timeout(self.http.timeout.connect, read=600, write=600),
            )


def console(*, stderr: bool = False, quiet: bool = False) -> Console:
    """A terminal's own width; piped output one wide enough that tables stay whole."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, quiet=quiet, width=None if stream.isatty() else 160)


def follow(client: Client, profile_id: str, console: Console, poll_s: float = 0.5) -> dict:
    """Poll a job until it ends, showing its progress."""
    live = console.is_terminal
    last = None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
    )
    with progress:
        task = progress.add_task("queued", total=None)
        while True:
            record = client.get(profile_id)
            step = describe(record)
            p = record.get("progress") or {}
            progress.update(
                task,
                description=step,
                completed=p.get("batches_done", 0),
                total=p.get("batches_total") or None,
            )
            if not live and step != last:
                console.print(step, highlight=False)
            last = step
            if record["status"] in TERMINAL:
                return record
            time.sleep(poll_s)


def describe(record: dict) -> str:
    p = record.get("progress") or {}
    if record["status"] != "running" or not p:
        return record["status"]
    where = f"batch size {p['batch_size']}" if p.get("batch_size") else p.get("stage", "running")
    process = f", process {p['process']}/{p['processes']}" if p.get("processes") else ""
    return f"running: {where} ({p.get('batches_done', 0)}/{p.get('batches_total', 0)} cells{process})"


def result_table(record: dict) -> Table:
    result = record["result"]
    fp = result["fingerprint"]
    gflops = f"{result['flops'] / 1e9:.2f} GFLOPs" if result.get("flops") is not None else "FLOPs not counted"
    title = (
        f"{record['settings']['model']} on {fp.get('device_target') or fp['device_class']} "
        f"({fp.get('device_name')}): {result['params'] / 1e6:.2f} M params, {gflops}"
    )
    table = Table(title=title)
    columns = (
        "batch",
        "status",
        "ms/image",
        "median",
        "95% CI of the mean",
        "images/s",
        "memory MB",
        "noisy",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for b in result["batches"]:
        lat, mem = b.get("latency") or {}, b.get("memory") or {}
        table.add_row(
            str(b["batch_size"]),
            b["status"],
            f"{lat['mean_ms']:.3f}" if lat else "",
            f"{lat['median_ms']:.3f}" if lat else "",
            f"[{lat['ci95_low_ms']:.3f}, {lat['ci95_high_ms']:.3f}]" if lat else "",
            f"{lat['images_per_s']:.1f}" if lat else "",
            f"{mem['total_bytes'] / 1e6:.0f}" if mem.get("total_bytes") else "",
            "yes" if lat.get("noisy") else "",
        )
    return table


def layers_table(profile: dict, most: int = 15) -> Table:
    """The layers that took the most time, with their FLOPs beside (the profiled pass's figures)."""
    timed = profile.get("timed_ms_per_image")
    title = (
        f"{profile['runtime']}, batch size {profile['batch_size']}: profiled forward "
        f"{profile['forward_ms_per_image']:.3f} ms/image"
        + (f" (timed {timed:.3f})" if timed else "")
        + f", unattributed {profile['unattributed_ms_per_image']:.3f}"
    )
    table = Table(title=title, caption=profile.get("note"))
    for column in ("layer", "type", "op type", "ms/image", "share", "MFLOPs", "GFLOP/s", "runtime nodes"):
        table.add_column(
            column, justify="left" if column in ("layer", "type", "op type", "runtime nodes") else "right"
        )
    ranked = sorted(profile["layers"], key=lambda layer: -layer["ms_per_image"])[:most]
    for layer in ranked:
        rate = layer.get("flops_per_s")
        table.add_row(
            layer["path"] or "(model)",
            layer["type"],
            layer.get("op_type", ""),
            f"{layer['ms_per_image']:.3f}",
            f"{layer['share']:.1%}",
            f"{layer.get('flops', 0) / 1e6:.1f}",
            f"{rate / 1e9:.1f}" if rate else "",
            ", ".join(layer.get("nodes", [])[:2]),
        )
    return table


def show_layers(client: Client, profile_id: str, args: argparse.Namespace, out: Console) -> int:
    answer = client.layers(profile_id, getattr(args, "layers_batch_size", None), getattr(args, "depth", None))
    if args.json:
        print(json.dumps(answer))
    elif answer.get("error"):
        out.print(
            f"no layer profile at batch size {answer['batch_size']}: {answer['error']}", highlight=False
        )
    else:
        out.print(layers_table(answer))
    return 0


def profile(args: argparse.Namespace) -> int:
    client, out = Client.from_env(), console()
    body: dict[str, Any] = {"model": args.model}
    for field in ("device", "batch_sizes", "runs", "repeats", "precision", "runtime"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.force:
        body["force"] = True
    if args.layers:
        body["layers"] = True
    submitted = client.submit(body)
    if not args.wait:
        if args.json:
            print(json.dumps(submitted))
        else:
            out.print(
                f"{submitted['id']}: {submitted['status']} ({submitted.get('location', '')})", highlight=False
            )
        return 0
    record = follow(client, submitted["id"], console(stderr=True, quiet=args.json))
    code = show_record(record, args.json, out)
    if args.layers and record["status"] == "succeeded" and not args.json:
        return show_layers(client, record["id"], args, out)
    return code


def show_record(record: dict, as_json: bool, out: Console) -> int:
    if as_json:
        print(json.dumps(record))
    elif record.get("result"):
        out.print(result_table(record))
    else:
        out.print(f"{record['id']}: {record['status']}", highlight=False)
    if record["status"] in ("failed", "cancelled"):
        print(f"dnnprof: the job {record['status']}: {record.get('error') or ''}", file=sys.stderr)
        return 1
    return 0


def show(args: argparse.Namespace) -> int:
    client = Client.from_env()
    if args.layers:
        return show_layers(client, args.id, args, console())
    return show_record(client.get(args.id), args.json, console())


def ls(args: argparse.Namespace) -> int:
    records = Client.from_env().list(
        model=args.model, device=args.device, status=args.status, limit=args.limit
    )
    if args.json:
        print(json.dumps(records))
        return 0
    table = Table()
    for column in ("id", "model", "target", "status", "batch sizes", "created"):
        table.add_column(column)
    for r in records:
        fp = (r.get("result") or {}).get("fingerprint") or {}
        table.add_row(
            r["id"],
            r["settings"]["model"],
            fp.get("device_target") or r["settings"].get("target") or r["settings"]["device"],
            r["status"],
            ",".join(str(b) for b in r["settings"]["batch_sizes"]),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])),
        )
    console().print(table)
    return 0


def readable_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path


def upload(args: argparse.Namespace) -> int:
    entry = Client.from_env().upload(args.file, args.name)
    if args.json:
        print(json.dumps(entry))
        return 0
    out = console()
    flops = f"{entry['flops'] / 1e9:.3f} GFLOPs" if entry["flops"] is not None else "FLOPs not counted"
    shape, kind = entry["input"]["shape"], entry["input"]["type"]
    out.print(
        f"{entry['name']}: {entry['params']:,} parameters, {flops} per image (1 multiply-add = 2), "
        f"input {shape} {kind}, "
        f"{entry['num_classes']} classes, opset {entry['opset']}, sha256 {entry['sha256'][:12]}…; "
        f"profile it with: dnnprof profile {entry['name']} --runtime onnxruntime --wait",
        highlight=False,
    )
    if entry.get("flops_note"):
        out.print(f"FLOPs {entry['flops_note']}", highlight=False)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("upload", help="upload an ONNX file to profile (as upload:NAME)")
    p.add_argument("file", type=readable_file, help="the ONNX file (every tensor inside it)")
    p.add_argument("--name", required=True, help="its name: upload:NAME (letters, digits, _ and -)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=upload)

    p = sub.add_parser("profile", help="ask the service for a profile (and --wait for it)")
    p.add_argument("model", help="a model name: resnet50, 'SE-ResNeXt-50 (32x4d)', timm:convnext_tiny, ...")
    p.add_argument("--device", help="a class (cpu, cuda, jetson) or a device target")
    p.add_argument("--batch-sizes", type=batch_sizes, help="comma-separated, e.g. 1,2,4 (default 1..64)")
    p.add_argument("--runs", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--precision", choices=PRECISIONS)
    p.add_argument(
        "--runtime", choices=RUNTIMES, help="what runs the model (default eager; GET /v1/devices lists them)"
    )
    p.add_argument("--force", action="store_true", help="measure again even if an equal profile is stored")
    p.add_argument(
        "--layers",
        action="store_true",
        help="a per-layer profile after the timed runs (smallest batch size); with --wait, its top layers",
    )
    p.add_argument("--wait", action="store_true", help="follow the job and print its result")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p.set_defaults(func=profile)

    p = sub.add_parser("ls", help="stored profiles, newest first")
    p.add_argument("--model")
    p.add_argument("--device")
    p.add_argument("--status", choices=("queued", "running", *TERMINAL))
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=ls)

    p = sub.add_parser("show", help="one profile and its result")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--layers", action="store_true", help="its layer profile: the layers that took the most time"
    )
    p.add_argument("--depth", type=int, help="with --layers: the module tree collapsed to this depth")
    p.add_argument(
        "--batch-size",
        dest="layers_batch_size",
        type=int,
        help="with --layers: which batch size (default smallest)",
    )
    p.set_defaults(func=show)


def run(args: argparse.Namespace) -> int:
    """A client command, with the API's refusals as exit code 1 and their message."""
    try:
        return args.func(args)
    except ApiError as exc:
        print(f"dnnprof: {exc}", file=sys.stderr)
        return 1
