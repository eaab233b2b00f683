"""Stage 04: every model answers the eval set; judges, win rates, LC by GLM, the leaderboard;
the judge's calibration against GPT-4-turbo."""
