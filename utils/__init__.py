"""Small shared helpers: atomic file writes and JSON reading, the command line, logging, seeding, overlays."""
