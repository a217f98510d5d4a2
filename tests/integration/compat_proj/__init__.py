"""A project laid out as Celery's "Next steps" tutorial lays one out: the app in
proj/celery.py, its tasks in proj/tasks.py (found through include=). For the -A tests."""
