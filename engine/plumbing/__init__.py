"""Run plumbing used by every job: processes (torchrun), whole result sets, checks before torch."""
