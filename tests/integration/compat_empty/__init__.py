"""A package whose app registers no tasks (its tasks module is never imported)."""
