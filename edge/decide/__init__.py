"""Deciding: weed scores -> whole-frame decisions (threshold, N-of-M debounce, hold) and per-lane decisions."""
