from mesh import Mesh

application = Mesh("compat_meshpkg", mdns=False)


@application.task
def hello(name: str) -> str:
    return f"hello {name}"
