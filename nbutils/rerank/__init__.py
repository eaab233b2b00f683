"""Stage 02: rankers (PairRM, reward models, functions), scoring, pair selection, the Snorkel-schema dataset."""
