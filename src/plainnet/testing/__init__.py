"""Test harness shipped with plainnet, kept out of the product modules: the pytest
plugin (lab fixtures that always tear down), starters for the real servers labs and
tests run against (etcd, kube-apiserver with kube-controller-manager), and an
in-memory pod address store. The lab uses the server starters for ``lab up``."""
