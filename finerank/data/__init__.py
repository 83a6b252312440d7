"""Data work on records: the one Candidates type, inspect, split."""
