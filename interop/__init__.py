"""Adapters between personasim's store and other projects' data formats.

An adapter reads a format into a store (through the store layer and the session runner, like a
run) and writes a store's run back out in that format; analysis and rl then work on it as on any
run. Nothing below this package imports it.
"""
