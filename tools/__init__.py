"""Tools around the method: synthetic test and demo data."""
