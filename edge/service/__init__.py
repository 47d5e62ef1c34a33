"""Running unattended: systemd notifications, the run records (frame log, saved frames), the [service] section."""
