"""One module per external protocol, used by both directions (sources read, restore writes)."""
