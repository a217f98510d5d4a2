"""The node side, the daemon behind ``meshnode``: ``mesh.node.node.Node`` and its
components (docs/components.md). Nothing is imported here, so that ``import mesh``
(which needs ``mesh.node.component``) stays light in clients and children."""
