"""Benchmarks of dsd on private hosts (network namespaces); each prints a markdown table.

Run one with `python -m bench.NAME`, all with `python -m bench` (see bench/run_all.py).
"""
