"""Shared test set-up. The lab fixtures (``lab``, ``lab_factory``, ``lab_name``) come from
plainnet's own pytest plugin, :mod:`plainnet.lab.pytest_plugin`."""

pytest_plugins = ["pytester"]
