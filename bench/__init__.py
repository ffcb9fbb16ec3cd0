"""Benchmark and reliability scripts; the shared helpers (`common`, `synthetic`, `server`) are importable too."""
