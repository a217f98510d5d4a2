"""A package with no mesh app at all."""
