"""Building a run from the config, and the subcommands that use the same parts (checks, valve lag)."""
