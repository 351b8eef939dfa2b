"""Development tooling: a local Kubernetes control plane and a local node agent.

Nothing here runs in production. ``python -m rft_devcluster up`` starts etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, kwok (fake GPU nodes) and the local node agent
(pods as local processes); :mod:`rft_devcluster.pytest_plugin` gives tests the same cluster.
See docs/local-cluster.md. The package root stays import-light on purpose.
"""
