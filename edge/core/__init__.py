"""The building blocks every stage shares: errors with exit codes, clocks, frames, timings."""
