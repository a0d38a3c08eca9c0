"""Holds the built container init executable, `sandkit-init` (made by setup.py, not in git)."""
