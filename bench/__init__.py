"""`make bench`: every benchmark of the live mesh side by side, into docs/benchmarks.md."""
