"""Sphinx configuration of the deepaas_like documentation."""

project = "deepaas_like"
author = "deepaas_like developers"
extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
