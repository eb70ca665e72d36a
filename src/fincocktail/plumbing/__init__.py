"""Plumbing for every layer: file I/O and YAML, paths, secret redaction, warning filters, provenance, CPU threads."""
