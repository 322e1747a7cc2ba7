"""The code's shape, as issue 40 measures it: the longest functions, the most arguments, where
``os.environ`` is read outside ``dnnprof/config.py``, and how deep the job's private call chain goes.
Pure ``ast``: nothing is imported or run. ``python -m bench.code_shape [--ref REV]`` prints the
figures of the working tree, or of a git revision (read with ``git show``)."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

PACKAGES = ("dnnprof", "service", "workers")
ROOT = Path(__file__).resolve().parent.parent


def sources(ref: str | None) -> dict[str, str]:
    """path -> text of every module of the three packages, in the tree or at ``ref``."""
    if ref is None:
        files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
        return {str(p.relative_to(ROOT)): p.read_text() for p in files}
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", ref, *PACKAGES], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    return {
        n: subprocess.run(["git", "show", f"{ref}:{n}"], cwd=ROOT, capture_output=True, text=True).stdout
        for n in names
        if n.endswith(".py")
    }


def functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def arguments(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")])


def environ_reads(tree: ast.AST) -> list[int]:
    """Lines that read ``os.environ`` / ``os.getenv`` (writes to it too: they hand a choice over)."""
    lines = []
    for node in ast.walk(tree):
        named = isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
        if named and isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
    return sorted(set(lines))


def shape(ref: str | None) -> dict:
    longest, most_args, env = [], [], []
    for path, text in sorted(sources(ref).items()):
        tree = ast.parse(text)
        for fn in functions(tree):
            where = f"{path}:{fn.lineno} {fn.name}"
            longest.append((fn.end_lineno - fn.lineno + 1, where))
            most_args.append((arguments(fn), where))
        if path != "dnnprof/config.py":
            env += [f"{path}:{line}" for line in environ_reads(tree)]
    return {
        "ref": ref or "working tree",
        "longest_functions": sorted(longest, reverse=True)[:5],
        "most_arguments": sorted(most_args, reverse=True)[:5],
        "environ_outside_config": env,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.code_shape")
    parser.add_argument("--ref", default=None, help="a git revision (default: the working tree)")
    print(json.dumps(shape(parser.parse_args().ref), indent=1))


if __name__ == "__main__":
    main()
