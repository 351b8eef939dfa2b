"""The local node agent: development tooling that runs pods as processes on this host.

Production clusters use the kubelet; this agent exists so that ``make cluster`` and the tests
can run the project's real workloads (trainer Jobs, vLLM, small test servers)
on a laptop or CI machine without a container runtime. It registers a Node, keeps its Lease,
and runs each pod bound to it: init containers then containers as process groups, with the
pod's env, volumes as per-pod directories, HTTP/TCP/exec probes, restart policies, termination
messages, and a pod IP of its own that the host can reach. See docs/local-cluster.md.
"""
