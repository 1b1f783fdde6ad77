"""Data package: the files of this folder, found with importlib.resources (apiusage.runbooks)."""
