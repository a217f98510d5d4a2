# Load the mesh app whenever Django starts, so that @shared_task uses it.
from .mesh import app as mesh_app

__all__ = ("mesh_app",)
