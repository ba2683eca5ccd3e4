"""config.yaml, parsed once into frozen dataclasses (file.py), with the checks every section
uses (checks.py) and the auth and redis sections (auth.py)."""
