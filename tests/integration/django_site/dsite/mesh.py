import os

from mesh import Mesh

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dsite.settings")

app = Mesh("dsite")
app.autodiscover_tasks()
