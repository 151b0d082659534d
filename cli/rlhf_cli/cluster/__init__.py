"""`rlhf status` and `rlhf logs` (also `kubectl rlhf ...`): a run on a cluster, from a laptop.

They read with the `kubernetes` client and the user's kubeconfig (or the pod's service
account), and never write.
"""
