"""Import every command module so its commands register on the app."""

import importlib

for _name in ("encoding", "diagnosing", "retrieval", "evaluation", "training", "exporting",
              "scaling", "monitoring"):
    try:
        importlib.import_module(f"vecdoctor.cli.{_name}")
    except ModuleNotFoundError as exc:  # a command group not written yet
        if exc.name != f"vecdoctor.cli.{_name}":
            raise
