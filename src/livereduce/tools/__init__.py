"""Command-line tools installed with livereduce that are not the daemon (fake data sources for testing)."""
