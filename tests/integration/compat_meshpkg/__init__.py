"""A package whose app lives in its mesh.py (found by -A compat_meshpkg)."""
