from mesh import Mesh

app = Mesh("compat_empty", mdns=False)
