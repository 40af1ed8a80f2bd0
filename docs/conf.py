"""Sphinx configuration for socksd's documentation."""

project = "socksd"
author = "the socksd authors"
copyright = "2026, the socksd authors"
extensions: list[str] = []
master_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
nitpicky = False
