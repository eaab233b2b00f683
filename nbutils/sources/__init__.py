"""Where models and data come from: what kind of name a param holds (kinds), the hub (hub), the
AlpacaEval leaderboard's published outputs and judgments (published)."""
