"""Manifest builders, one module per object: pvc, configmap, pod (the pieces every stage pod
has), meta (names, labels, owner), render (all of a run's objects in creation order); the stage
jobs themselves are the launchers' (launchers/). Pure: no I/O, no kopf, no torch."""
