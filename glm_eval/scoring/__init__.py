"""Turning outputs into verdicts: answer extraction and equivalence, the code sandbox, LongBench's metrics,
pass@k and majority vote."""
