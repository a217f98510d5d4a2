"""Security: the mesh's keys, CurveZMQ on every socket, and who may send what.

* ``keys.py``     the key directory (``meshctl keys``) and the ``KeyRing`` read from it
* ``curve.py``    ``Security``: the one place a socket is made secure
* ``guard.py``    the node's ZAP ``Guard`` (pyzmq's authenticator thread; only with keys)
* ``gate.py``     the allow-list of what each role (client, admin, node) may send a node
* ``exposure.py`` without keys, a node stays on loopback unless ``--insecure``
* ``text.py``     peer-supplied text made safe for logs

docs/security.md has the threat model, the steps to run a mesh across a network you
do not trust, and the rotation of keys. (Nothing is imported here: membership and
the wire code import ``text`` without pulling in ZeroMQ's authenticator.)
"""
