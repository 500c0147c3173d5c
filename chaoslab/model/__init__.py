"""Typed experiment models, the file loaders, and validation with field paths."""
