"""Tools that ship with the package but are no stage of a run: edge-bench, edge-replay. No stage imports them."""
