"""The kopf shell: watch runs and stage jobs, call the pure reconcile, apply its actions.

handlers (kopf handlers and one reconcile pass's I/O), kube_client (the few API calls),
workqueue (per-run serialisation and backoff), metrics (Prometheus).
"""
