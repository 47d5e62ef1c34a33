"""Spray planning: boom geometry, valve timing, travel speed, the spray scheduler and its as-applied log."""
