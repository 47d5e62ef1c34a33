"""The run loop (read -> process -> actuate -> record, stall check, fail-safe) and its frame processors."""
