"""sPyNNaker machine configurations shipped with neurodeploy (see README.md beside this file)."""
