"""Metrics as the anchors compute them, each checked in tests against an independent computation."""
