"""Data package holding ``manifest.toml``, the list of named models and their files.

It is a package only so that the manifest installs with the project and can be read with
``importlib.resources``; it contains no code.
"""
