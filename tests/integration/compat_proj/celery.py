from mesh import Mesh

app = Mesh("compat_proj", broker="amqp://", backend="rpc://", include=["compat_proj.tasks"],
           mdns=False)

app.conf.update(result_expires=3600)
