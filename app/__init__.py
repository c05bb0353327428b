"""Inspect: the GUI-free inspection core and the dashboard."""
