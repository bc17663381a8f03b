"""Emulated networks for tests and benchmarks: a fault-injecting proxy and netns links."""
