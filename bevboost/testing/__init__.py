"""Small CPU-only models and datasets for tests, examples and benchmarks."""
