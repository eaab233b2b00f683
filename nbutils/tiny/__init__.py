"""The toy world of the CPU presets: a prompt corpus, a tiny Mistral policy, a tiny PairRM, their build cache."""
