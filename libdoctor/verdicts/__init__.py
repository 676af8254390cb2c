"""Answers kept under what they consulted: ``recorder`` (what a run consults) and ``store`` (the key, the kept
answers, and replaying one)."""
