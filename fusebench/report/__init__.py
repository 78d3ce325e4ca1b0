"""Reports: the results store (reported and reproduced numbers as one tidy frame), the paper's tables,
reported-vs-reproduced comparisons, figures and the leaderboard."""
