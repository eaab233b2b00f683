"""Stage 05: answer length across iterations, and its figures."""
