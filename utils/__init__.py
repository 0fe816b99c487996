"""Small shared helpers (atomic file writes, seeding, command-line error handling)."""
