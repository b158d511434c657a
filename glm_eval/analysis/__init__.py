"""Reading finished runs: the results grid, paired comparison of checkpoints, the HTML report. Imports neither
torch nor the engine."""
