"""A small Django site for tests/integration/test_e2e_django.py (not an example: the
example project is examples/django_project)."""
