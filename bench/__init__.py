"""Benchmarks of headwater (``make bench``); results in BENCHMARKS.md. Never run as tests."""
