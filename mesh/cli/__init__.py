"""The command-line programs, ``meshnode`` and ``meshctl`` (click)."""
