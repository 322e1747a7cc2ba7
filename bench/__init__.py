"""Benchmarks: figures for docs/benchmarks.md, measured against independent references in the same
run. Never run as tests (timings are not correctness)."""
