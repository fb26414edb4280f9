"""Configuration: the one typed schema of every setting (schema.py), the named
experiments (registry.py), the grammar of tuning search spaces, and the way from
the command line to a config (command_line.py). No TensorFlow here, so a bad
setting is reported before TensorFlow loads.
"""
