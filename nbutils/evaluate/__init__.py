"""Stage 04: every model answers the eval set; judges, win rates, LC and the leaderboard."""
