"""The pieces of a run that train.py strings together: pre-flight checks of the command
line, instantiation with clear errors, resume, launch guards and the summary."""
