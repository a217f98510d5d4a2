"""Workflows (chain, group, chord, callbacks): ids, plans, descriptions, results.

The user API is in mesh/canvas.py; what the nodes do is mesh/node/workflows.py;
docs/workflows.md tells the whole story.
"""
